using System.Buffers.Binary;
using System.IO.Hashing;

namespace Kernels.Quant.Fpx;

/// <summary>Versioned binary serialization of <see cref="FpxWeights"/> and <see cref="Int6Weights"/>.</summary>
/// <remarks>
/// <para>Little-endian layout (version 3):</para>
/// <code>
/// offset size  field
///  0      4    magic "KFPX"
///  4      2    version = 3
///  6      1    kind: 1 = FP6 e3m2, 2 = FP5 e2m2, 3 = INT6
///  7      1    reserved = 0
///  8      4    rows (m)
/// 12      4    columns (k)
/// 16      4    group size (0 for FP6/FP5, 64 or 128 for INT6)
/// 20      8    CRC-64 (ECMA-182, <see cref="Crc64"/>) of header bytes 0..19, then the payload
/// 28      …    payload: scales (fp32 × rows·groups), high plane, 4-bit plane (lengths implied by the header)
/// </code>
/// <para>Versions 1 and 2 are still read. Version 2 (2026-12-02) held an FNV-1a 64-bit hash of the same bytes, computed a
/// byte at a time (0.6–0.9 GB/s on one core, scratch program); the CRC is vectorized (10–13 GB/s) and detects every error burst up to 64 bits. Version 1
/// (before 2026-12-02) hashed the payload alone, so a corrupted column count that kept the payload size (columns are padded
/// to blocks of 64) read back as a wider matrix. Any inconsistency (bad magic,
/// unknown version or kind, negative or oversized dimensions, truncated or trailing bytes, hash mismatch, non-finite or
/// negative scale, INT6 code 0) throws <see cref="InvalidDataException"/> naming the offset.</para>
/// </remarks>
public static class FpxSerializer
{
    /// <summary>The current format version.</summary>
    public const ushort Version = 3;

    /// <summary>Header bytes.</summary>
    public const int HeaderBytes = 28;

    private static ReadOnlySpan<byte> Magic => "KFPX"u8;

    /// <summary>Serializes FP6/FP5 weights.</summary>
    /// <param name="weights">The weights.</param>
    /// <returns>The bytes.</returns>
    public static byte[] Serialize(FpxWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        return Write((byte)weights.Format, weights.Rows, weights.Columns, 0, weights.Scales, weights.HighBits, weights.LowBits);
    }

    /// <summary>Serializes INT6 weights.</summary>
    /// <param name="weights">The weights.</param>
    /// <returns>The bytes.</returns>
    public static byte[] Serialize(Int6Weights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        return Write(3, weights.Rows, weights.Columns, weights.GroupSize, weights.Scales, weights.HighBits, weights.LowBits);
    }

    /// <summary>Reads FP6/FP5 weights.</summary>
    /// <param name="data">Serialized bytes.</param>
    /// <returns>The weights.</returns>
    /// <exception cref="InvalidDataException">The data is truncated, corrupt or holds INT6 weights.</exception>
    public static FpxWeights DeserializeFpx(ReadOnlySpan<byte> data)
    {
        var (kind, rows, cols, _, scales, high, low) = Read(data);
        if (kind == 3) throw new InvalidDataException("The data holds INT6 weights; use DeserializeInt6.");
        return FpxWeights.FromPlanes((FpxFormat)kind, rows, cols, high, low, scales);
    }

    /// <summary>Reads INT6 weights.</summary>
    /// <param name="data">Serialized bytes.</param>
    /// <returns>The weights.</returns>
    /// <exception cref="InvalidDataException">The data is truncated, corrupt or holds FP6/FP5 weights.</exception>
    public static Int6Weights DeserializeInt6(ReadOnlySpan<byte> data)
    {
        var (kind, rows, cols, group, scales, high, low) = Read(data);
        if (kind != 3) throw new InvalidDataException($"The data holds {(FpxFormat)kind} weights; use DeserializeFpx.");
        // u = 0 (q = −32) never occurs: it would break the symmetric range and the vpmaddubsw bound.
        for (int i = 0; i < low.Length; i++)
        {
            int blk = i / FpxPacking.Lo4BlockBytes, j = i % FpxPacking.Lo4BlockBytes;
            for (int half = 0; half < 2; half++)
            {
                int code = CodeInBlock(high, low, blk, j + 32 * half);
                if (code == 0)
                    throw new InvalidDataException($"INT6 code 0 (q = −32) in block {blk}, code {j + 32 * half} (payload offset {HeaderBytes + 4L * scales.Length + high.Length + i}); valid codes are 1..63.");
            }
        }
        return Int6Weights.FromPlanes(rows, cols, group, high, low, scales);
    }

    private static int CodeInBlock(byte[] high, byte[] low, int blk, int i) =>
        ((low[blk * 32 + (i & 31)] >> (4 * (i >> 5))) & 15) | (((high[blk * 16 + (i & 15)] >> (2 * (i >> 4))) & 3) << 4);

    private static byte[] Write(byte kind, int rows, int cols, int group, ReadOnlySpan<float> scales, ReadOnlySpan<byte> high, ReadOnlySpan<byte> low)
    {
        long payload = 4L * scales.Length + high.Length + low.Length;
        var buffer = new byte[HeaderBytes + payload];
        Magic.CopyTo(buffer);
        BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(4), Version);
        buffer[6] = kind;
        BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(8), rows);
        BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(12), cols);
        BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(16), group);
        Span<byte> p = buffer.AsSpan(HeaderBytes);
        for (int i = 0; i < scales.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(p.Slice(4 * i), scales[i]);
        high.CopyTo(p.Slice(4 * scales.Length));
        low.CopyTo(p.Slice(4 * scales.Length + high.Length));
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(20), Checksum(buffer.AsSpan(0, 20), p));
        return buffer;
    }

    private static (int Kind, int Rows, int Cols, int Group, float[] Scales, byte[] High, byte[] Low) Read(ReadOnlySpan<byte> data)
    {
        if (data.Length < HeaderBytes) throw new InvalidDataException($"Truncated header: {data.Length} bytes, {HeaderBytes} required.");
        if (!data[..4].SequenceEqual(Magic)) throw new InvalidDataException("Bad magic at offset 0: expected \"KFPX\".");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(data[4..]);
        if (version is < 1 or > Version) throw new InvalidDataException($"Unsupported version {version} at offset 4; this reader understands versions 1 to {Version}.");
        int kind = data[6];
        if (kind is < 1 or > 3) throw new InvalidDataException($"Unknown kind {kind} at offset 6; expected 1 (FP6), 2 (FP5) or 3 (INT6).");
        if (data[7] != 0) throw new InvalidDataException($"Reserved byte at offset 7 is {data[7]}; expected 0.");
        int rows = BinaryPrimitives.ReadInt32LittleEndian(data[8..]);
        int cols = BinaryPrimitives.ReadInt32LittleEndian(data[12..]);
        int group = BinaryPrimitives.ReadInt32LittleEndian(data[16..]);
        if (rows < 0) throw new InvalidDataException($"Negative row count {rows} at offset 8.");
        if (cols < 0 || cols > FpxPacking.MaxColumns) throw new InvalidDataException($"Column count {cols} at offset 12 is outside 0..{FpxPacking.MaxColumns}.");
        if (kind == 3 ? group is not (64 or 128) : group != 0)
            throw new InvalidDataException($"Group size {group} at offset 16 is invalid for kind {kind}.");
        int bits = kind == 2 ? 5 : 6;
        long blocks = (long)rows * (FpxPacking.PaddedColumns(cols) / FpxPacking.BlockCodes);
        long scaleCount = kind == 3 ? (long)rows * (((long)cols + group - 1) / group) : rows;
        long highBytes = blocks * FpxPacking.HighBlockBytes(bits), lowBytes = blocks * FpxPacking.Lo4BlockBytes;
        long payload = 4 * scaleCount + highBytes + lowBytes;
        if (payload > int.MaxValue - HeaderBytes) throw new InvalidDataException($"Dimensions {rows}x{cols} at offset 8 imply {payload} payload bytes, more than supported.");
        if (data.Length != HeaderBytes + payload)
            throw new InvalidDataException($"{(data.Length < HeaderBytes + payload ? "Truncated" : "Trailing")} data: {data.Length} bytes, expected {HeaderBytes + payload} for {rows}x{cols} (payload from offset {HeaderBytes}).");
        ReadOnlySpan<byte> p = data[HeaderBytes..];
        ulong hash = BinaryPrimitives.ReadUInt64LittleEndian(data[20..]);
        ulong expected = version switch
        {
            1 => Fnv1a(p),
            2 => Fnv1a(p, Fnv1a(data[..20])),
            _ => Checksum(data[..20], p),
        };
        if (hash != expected)
            throw new InvalidDataException($"{(version == 3 ? "Checksum" : "Hash")} mismatch (header offset 20): the {(version == 1 ? "payload" : "header or payload")} is corrupt.");
        var scales = new float[scaleCount];
        for (int i = 0; i < scales.Length; i++)
        {
            float s = BinaryPrimitives.ReadSingleLittleEndian(p.Slice(4 * i));
            if (!float.IsFinite(s) || s < 0) throw new InvalidDataException($"Scale {i} at offset {HeaderBytes + 4 * i} is {s}; scales must be finite and ≥ 0.");
            scales[i] = s;
        }
        byte[] high = p.Slice((int)(4 * scaleCount), (int)highBytes).ToArray();
        byte[] low = p.Slice((int)(4 * scaleCount + highBytes), (int)lowBytes).ToArray();
        return (kind, rows, cols, group, scales, high, low);
    }

    /// <summary>The version-3 checksum: CRC-64 of the first 20 header bytes, then the payload.</summary>
    private static ulong Checksum(ReadOnlySpan<byte> header, ReadOnlySpan<byte> payload)
    {
        var crc = new Crc64();
        crc.Append(header);
        crc.Append(payload);
        return crc.GetCurrentHashAsUInt64();
    }

    private const ulong FnvOffsetBasis = 14695981039346656037UL;

    /// <summary>FNV-1a 64 of <paramref name="data"/>, continuing from <paramref name="h"/> (the offset basis to start): the hash
    /// of versions 1 and 2.</summary>
    private static ulong Fnv1a(ReadOnlySpan<byte> data, ulong h = FnvOffsetBasis)
    {
        foreach (byte b in data)
        {
            h ^= b;
            h *= 1099511628211UL;
        }
        return h;
    }
}
