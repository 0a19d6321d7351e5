using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace Kernels.Quant.Lut;

/// <summary>Writes and reads <see cref="LutWeights"/> to and from a stream (versioned, checksummed, little-endian).</summary>
/// <remarks>
/// <code>
/// offset  size  field
///  0      4     magic "KLUT"
///  4      2     version (1)
///  6      1     kind (0 asymmetric, 1 symmetric, 2 ternary)
///  7      1     bits (1..4)
///  8      2     group size (32, 64, 128)
/// 10      2     tile rows (64)
/// 12      4     m
/// 16      4     k
/// 20      …     planes (PlaneBytesFor(m, k) bytes), scales (bf16 × ScaleCountFor), offsets (bf16 × ScaleCountFor)
///  end    4     CRC-32 (IEEE) of every preceding byte
/// </code>
/// A bad header, a truncated stream or a checksum mismatch throws <see cref="InvalidDataException"/> naming the offset.
/// </remarks>
public static class LutSerializer
{
    /// <summary>The current format version.</summary>
    public const ushort Version = 1;

    private const int HeaderBytes = 20;
    private static ReadOnlySpan<byte> Magic => "KLUT"u8;

    /// <summary>Writes <paramref name="weights"/> to <paramref name="stream"/>.</summary>
    /// <param name="weights">The packed weights.</param>
    /// <param name="stream">A writable stream.</param>
    public static void Write(LutWeights weights, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> h = stackalloc byte[HeaderBytes];
        Magic.CopyTo(h);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], Version);
        h[6] = (byte)weights.Format.Kind;
        h[7] = (byte)weights.Format.Bits;
        BinaryPrimitives.WriteUInt16LittleEndian(h[8..], (ushort)weights.Format.GroupSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[10..], LutWeights.TileRows);
        BinaryPrimitives.WriteInt32LittleEndian(h[12..], weights.M);
        BinaryPrimitives.WriteInt32LittleEndian(h[16..], weights.K);
        var crc = new Crc32();
        WriteChunk(stream, h, crc);
        WriteChunk(stream, weights.Planes, crc);
        WriteChunk(stream, MemoryMarshal.AsBytes(weights.Scales.AsSpan()), crc);
        WriteChunk(stream, MemoryMarshal.AsBytes(weights.Offsets.AsSpan()), crc);
        Span<byte> tail = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(tail, crc.GetCurrentHashAsUInt32());
        stream.Write(tail);
    }

    /// <summary>Reads packed weights written by <see cref="Write"/>.</summary>
    /// <param name="stream">A readable stream positioned at the magic.</param>
    /// <returns>The weights.</returns>
    /// <exception cref="InvalidDataException">Bad magic, unsupported version or fields, truncation, or a checksum mismatch.</exception>
    public static LutWeights Read(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> h = stackalloc byte[HeaderBytes];
        ReadExactly(stream, h, 0);
        if (!h[..4].SequenceEqual(Magic)) throw new InvalidDataException("LUT weights: bad magic at offset 0 (expected \"KLUT\").");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(h[4..]);
        if (version != Version) throw new InvalidDataException($"LUT weights: unsupported version {version} at offset 4 (this reader supports {Version}).");
        int kind = h[6], bits = h[7];
        int groupSize = BinaryPrimitives.ReadUInt16LittleEndian(h[8..]);
        int tileRows = BinaryPrimitives.ReadUInt16LittleEndian(h[10..]);
        int m = BinaryPrimitives.ReadInt32LittleEndian(h[12..]);
        int k = BinaryPrimitives.ReadInt32LittleEndian(h[16..]);
        if (kind > (int)LutQuantKind.Ternary) throw new InvalidDataException($"LUT weights: unknown kind {kind} at offset 6.");
        LutFormat format;
        try
        {
            format = new LutFormat((LutQuantKind)kind, bits, groupSize);
        }
        catch (NotSupportedException e)
        {
            throw new InvalidDataException($"LUT weights: invalid format fields at offsets 6–9: {e.Message}", e);
        }
        if (tileRows != LutWeights.TileRows) throw new InvalidDataException($"LUT weights: tile rows {tileRows} at offset 10; expected {LutWeights.TileRows}.");
        if (m < 0 || k < 0 || k % groupSize != 0) throw new InvalidDataException($"LUT weights: invalid shape m = {m}, k = {k} at offset 12 (k must be a non-negative multiple of {groupSize}).");
        long planeBytes = LutWeights.PlaneBytesFor(format, m, k), scaleCount = LutWeights.ScaleCountFor(format, m, k);
        if (planeBytes > Array.MaxLength || scaleCount > Array.MaxLength / 2)
            throw new InvalidDataException($"LUT weights: shape m = {m}, k = {k} at offset 12 is too large for one array.");
        if (stream.CanSeek && stream.Length - stream.Position < planeBytes + 4 * scaleCount + 4)
            throw new InvalidDataException($"LUT weights: stream truncated: {stream.Length - stream.Position + HeaderBytes} bytes from offset 0, {HeaderBytes + planeBytes + 4 * scaleCount + 4} required.");
        var hash = new Crc32();
        hash.Append(h);
        // A non-seekable stream cannot be checked for length up front, so its arrays grow with the bytes that actually
        // arrive: a 20-byte header claiming gigabytes costs at most a few MB before the truncation is detected.
        byte[] planes = ReadArray(stream, planeBytes, HeaderBytes);
        hash.Append(planes);
        BFloat16[] scales = ReadBf16(stream, scaleCount, HeaderBytes + planeBytes);
        hash.Append(MemoryMarshal.AsBytes(scales.AsSpan()));
        BFloat16[] offsets = ReadBf16(stream, scaleCount, HeaderBytes + planeBytes + 2 * scaleCount);
        hash.Append(MemoryMarshal.AsBytes(offsets.AsSpan()));
        uint crc = hash.GetCurrentHashAsUInt32();
        Span<byte> tail = stackalloc byte[4];
        long tailOffset = HeaderBytes + planeBytes + 4 * scaleCount;
        ReadExactly(stream, tail, tailOffset);
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(tail);
        if (stored != crc) throw new InvalidDataException($"LUT weights: checksum mismatch at offset {tailOffset} (stored 0x{stored:X8}, computed 0x{crc:X8}); the data is corrupt.");
        return new LutWeights(format, m, k, planes, scales, offsets);
    }

    private static void WriteChunk(Stream stream, ReadOnlySpan<byte> data, Crc32 crc)
    {
        stream.Write(data);
        crc.Append(data);
    }

    private const int GrowthChunk = 1 << 20;

    private static BFloat16[] ReadBf16(Stream stream, long count, long offset)
    {
        if (stream.CanSeek || 2 * count <= GrowthChunk)
        {
            var values = new BFloat16[count];
            ReadExactly(stream, MemoryMarshal.AsBytes(values.AsSpan()), offset);
            return values;
        }
        return MemoryMarshal.Cast<byte, BFloat16>(ReadArray(stream, 2 * count, offset)).ToArray();
    }

    // Reads exactly `length` bytes; on a non-seekable stream the buffer doubles as data arrives instead of being
    // allocated at the size the header claims.
    private static byte[] ReadArray(Stream stream, long length, long offset)
    {
        if (stream.CanSeek || length <= GrowthChunk)
        {
            var all = new byte[length];
            ReadExactly(stream, all, offset);
            return all;
        }
        var buffer = new byte[GrowthChunk];
        long done = 0;
        while (done < length)
        {
            if (done == buffer.Length)
            {
                var bigger = new byte[Math.Min(length, 2L * buffer.Length)];
                buffer.CopyTo(bigger, 0);
                buffer = bigger;
            }
            ReadExactly(stream, buffer.AsSpan((int)done, (int)Math.Min(buffer.Length - done, GrowthChunk)), offset + done);
            done += Math.Min(buffer.Length - done, GrowthChunk);
        }
        return buffer;
    }

    private static void ReadExactly(Stream stream, Span<byte> buffer, long offset)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int r = stream.Read(buffer[done..]);
            if (r == 0) throw new InvalidDataException($"LUT weights: stream truncated at offset {offset + done}; {buffer.Length - done} more bytes expected.");
            done += r;
        }
    }
}
