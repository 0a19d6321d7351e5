using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace Kernels.Quant.DFloat11;

/// <summary>A named, ordered collection of <see cref="DFloat11Tensor"/>s with a versioned binary form.</summary>
/// <remarks>
/// <para>Byte layout (all integers little-endian), version 2:</para>
/// <code>
/// 0   8  magic "KDF11\0\0\0"
/// 8   2  version (2)
/// 10  2  reserved (0)
/// 12  4  tensor count T
/// then T records:
///     2        name length L (1..1024), L bytes UTF-8 name (unique)
///     1        rank R (0..8), 4·R dimension lengths (int32 ≥ 0)
///     2        threads per block (512), 2 bytes per thread (8)
///     4        LUT bytes (P+1)·256
///     4        encoded exponent bytes B
///     LUT bytes, B stream bytes, n sign/mantissa bytes,
///     4·(nBlocks+1) output positions, 320·nBlocks gap bytes     (nBlocks = ceil(B/4096))
///     4        CRC-32 (IEEE) of the record's bytes above, from its name length on
/// </code>
/// <para>DFloat11's format itself has no checksum, and a corrupted stream can decode, within every check the decoders make,
/// to the declared number of wrong values; the record checksum turns any such corruption into an
/// <see cref="InvalidDataException"/>. Version 1 (the same records without the checksum) is still read.</para>
/// <para>Each tensor has its own code (DFloat11 shares one per module group; per tensor costs ≤ 4.6 KB of LUTs). Reading
/// checks every size against the bytes that remain before allocating, then validates each tensor
/// (<see cref="DFloat11Tensor.Create"/>); any inconsistency is an <see cref="InvalidDataException"/> naming the offset.</para>
/// </remarks>
public sealed class DFloat11Container
{
    /// <summary>The format version written (version 1, without record checksums, is also read).</summary>
    public const ushort Version = 2;

    private static ReadOnlySpan<byte> Magic => "KDF11\0\0\0"u8;

    private readonly List<KeyValuePair<string, DFloat11Tensor>> _tensors;
    private readonly Dictionary<string, DFloat11Tensor> _byName;

    /// <summary>Creates a container from named tensors (order kept).</summary>
    /// <param name="tensors">The tensors; names unique and non-empty.</param>
    /// <exception cref="ArgumentException">A duplicate or empty name.</exception>
    public DFloat11Container(IEnumerable<KeyValuePair<string, DFloat11Tensor>> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        _tensors = tensors.ToList();
        _byName = new Dictionary<string, DFloat11Tensor>(StringComparer.Ordinal);
        foreach (var (name, t) in _tensors)
        {
            ArgumentNullException.ThrowIfNull(t);
            if (string.IsNullOrEmpty(name) || Encoding.UTF8.GetByteCount(name) > 1024)
                ThrowHelper.Argument(nameof(tensors), "tensor names must be 1..1024 UTF-8 bytes.");
            if (!_byName.TryAdd(name, t)) ThrowHelper.Argument(nameof(tensors), $"duplicate tensor name '{name}'.");
        }
    }

    /// <summary>Number of tensors.</summary>
    public int Count => _tensors.Count;

    /// <summary>Tensor names in order.</summary>
    public IEnumerable<string> Names => _tensors.Select(kv => kv.Key);

    /// <summary>The tensors in order.</summary>
    public IReadOnlyList<KeyValuePair<string, DFloat11Tensor>> Tensors => _tensors;

    /// <summary>The tensor named <paramref name="name"/>.</summary>
    /// <param name="name">Its name.</param>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public DFloat11Tensor this[string name] => _byName[name];

    /// <summary>Sum of the tensors' compressed sizes.</summary>
    public long CompressedBytes => _tensors.Sum(kv => kv.Value.CompressedBytes);

    /// <summary>Sum of the tensors' bf16 sizes.</summary>
    public long OriginalBytes => _tensors.Sum(kv => 2L * kv.Value.ElementCount);

    /// <summary>Compresses every tensor of a safetensors collection.</summary>
    /// <param name="tensors">bf16 tensors (e.g. from <see cref="SafeTensorsFile.Read"/>).</param>
    /// <returns>The container.</returns>
    public static DFloat11Container Compress(IEnumerable<SafeTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return new DFloat11Container(tensors.Select(t => KeyValuePair.Create(t.Name, DFloat11Encoder.Encode(t.Values, t.Shape))));
    }

    /// <summary>Writes the container (version <see cref="Version"/>).</summary>
    /// <param name="destination">The output stream.</param>
    public void WriteTo(Stream destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        Span<byte> head = stackalloc byte[16];
        Magic.CopyTo(head);
        BinaryPrimitives.WriteUInt16LittleEndian(head.Slice(8), Version);
        BinaryPrimitives.WriteUInt16LittleEndian(head.Slice(10), 0);
        BinaryPrimitives.WriteInt32LittleEndian(head.Slice(12), _tensors.Count);
        destination.Write(head);
        Span<byte> u32 = stackalloc byte[4];
        var crc = new Crc32();
        void Put(ReadOnlySpan<byte> bytes)
        {
            destination.Write(bytes);
            crc.Append(bytes);
        }
        foreach (var (name, t) in _tensors)
        {
            crc.Reset();
            byte[] nameBytes = Encoding.UTF8.GetBytes(name);
            BinaryPrimitives.WriteUInt16LittleEndian(u32, (ushort)nameBytes.Length);
            Put(u32[..2]);
            Put(nameBytes);
            u32[0] = (byte)t.Shape.Rank;
            Put(u32[..1]);
            foreach (int d in t.Shape.Lengths)
            {
                BinaryPrimitives.WriteInt32LittleEndian(u32, d);
                Put(u32);
            }
            BinaryPrimitives.WriteUInt16LittleEndian(u32, DFloat11Format.ThreadsPerBlock);
            BinaryPrimitives.WriteUInt16LittleEndian(u32.Slice(2), DFloat11Format.BytesPerThread);
            Put(u32);
            BinaryPrimitives.WriteInt32LittleEndian(u32, t.Luts.Length);
            Put(u32);
            BinaryPrimitives.WriteInt32LittleEndian(u32, t.EncodedByteCount);
            Put(u32);
            Put(t.Luts);
            Put(t.EncodedExponents);
            Put(t.SignMantissa);
            foreach (uint p in t.OutputPositions)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(u32, p);
                Put(u32);
            }
            Put(t.Gaps);
            BinaryPrimitives.WriteUInt32LittleEndian(u32, crc.GetCurrentHashAsUInt32());
            destination.Write(u32);
        }
    }

    /// <summary>The serialized container.</summary>
    /// <returns>The bytes.</returns>
    public byte[] ToArray()
    {
        var ms = new MemoryStream();
        WriteTo(ms);
        return ms.ToArray();
    }

    /// <summary>Parses and validates a serialized container.</summary>
    /// <param name="data">The bytes.</param>
    /// <returns>The container.</returns>
    /// <exception cref="InvalidDataException">Bad magic or version, truncation, a record whose checksum does not match its
    /// bytes (version 2), inconsistent sizes, invalid LUTs or positions, duplicate names or trailing bytes; the message names
    /// the byte offset.</exception>
    public static DFloat11Container Read(ReadOnlySpan<byte> data)
    {
        var r = new Reader(data);
        if (!r.Bytes(8, "magic").SequenceEqual(Magic)) throw new InvalidDataException("not a DFloat11 container: bad magic at offset 0.");
        ushort version = r.U16("version");
        if (version is not (1 or Version)) throw new InvalidDataException($"container version {version} at offset 8 is not supported (expected 1 or {Version}).");
        int reserved = r.U16("reserved");
        if (reserved != 0) throw new InvalidDataException($"reserved field {reserved} at offset 10 is not 0.");
        bool checksums = version >= 2;
        int count = r.I32("tensor count");
        // Each record needs at least 15 bytes (19 with its checksum), so a count above that bound is corrupt (and never allocated).
        if (count < 0 || (long)count * (checksums ? 19 : 15) > r.Remaining) throw new InvalidDataException($"tensor count {count} at offset 12 does not fit the {r.Remaining} remaining bytes.");
        var tensors = new List<KeyValuePair<string, DFloat11Tensor>>(count);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < count; i++)
        {
            long at = r.Offset;
            int nameLen = r.U16("name length");
            if (nameLen is 0 or > 1024) throw new InvalidDataException($"tensor {i} at offset {at}: name length {nameLen} outside 1..1024.");
            string name;
            try
            {
                name = new UTF8Encoding(false, true).GetString(r.Bytes(nameLen, "name"));
            }
            catch (DecoderFallbackException e)
            {
                throw new InvalidDataException($"tensor {i} at offset {at}: name is not valid UTF-8.", e);
            }
            if (!names.Add(name)) throw new InvalidDataException($"tensor {i} at offset {at}: duplicate name '{name}'.");
            int rank = r.U8("rank");
            if (rank > 8) throw new InvalidDataException($"tensor '{name}' at offset {r.Offset - 1}: rank {rank} > 8.");
            var dims = new int[rank];
            long elements = 1;
            for (int d = 0; d < rank; d++)
            {
                dims[d] = r.I32("dimension");
                if (dims[d] < 0) throw new InvalidDataException($"tensor '{name}' at offset {r.Offset - 4}: negative dimension {dims[d]}.");
                elements *= dims[d];
                if (elements > int.MaxValue) throw new InvalidDataException($"tensor '{name}': more than {int.MaxValue} elements.");
            }
            int tpb = r.U16("threads per block"), bpt = r.U16("bytes per thread");
            if (tpb != DFloat11Format.ThreadsPerBlock || bpt != DFloat11Format.BytesPerThread)
                throw new InvalidDataException($"tensor '{name}' at offset {r.Offset - 4}: threads/block {tpb}, bytes/thread {bpt}; only 512 and 8 are supported.");
            int lutBytes = r.I32("LUT size");
            int encodedBytes = r.I32("stream size");
            if (lutBytes < 0 || encodedBytes < 0) throw new InvalidDataException($"tensor '{name}' at offset {r.Offset - 8}: negative sizes.");
            int nBlocks = DFloat11Format.BlockCount(encodedBytes);
            long need = (long)lutBytes + encodedBytes + elements + 4L * (nBlocks + 1) + (long)nBlocks * DFloat11Format.GapBytesPerBlock + (checksums ? 4 : 0);
            if (need > r.Remaining) throw new InvalidDataException($"tensor '{name}' at offset {r.Offset}: needs {need} bytes, {r.Remaining} remain (truncated).");
            ReadOnlySpan<byte> luts = r.Bytes(lutBytes, "LUTs");
            ReadOnlySpan<byte> stream = r.Bytes(encodedBytes, "stream");
            ReadOnlySpan<byte> sm = r.Bytes((int)elements, "sign/mantissa");
            long posAt = r.Offset;
            uint[] positions = DFloat11Tensor.PositionsFromBytes(r.Bytes(4 * (nBlocks + 1), "output positions"));
            ReadOnlySpan<byte> gaps = r.Bytes(nBlocks * DFloat11Format.GapBytesPerBlock, "gaps");
            if (checksums)
            {
                uint computed = Crc32.HashToUInt32(r.Since((int)at));
                long crcAt = r.Offset;
                uint stored = (uint)r.I32("checksum");
                if (stored != computed)
                    throw new InvalidDataException($"tensor '{name}' (record at offset {at}): the checksum at offset {crcAt} is 0x{stored:X8}, the record's bytes give 0x{computed:X8}; the data is corrupt.");
            }
            try
            {
                tensors.Add(KeyValuePair.Create(name, DFloat11Tensor.Create(new TensorShape(dims), luts, stream, sm, positions, gaps)));
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"tensor '{name}' (record at offset {at}, positions at {posAt}): {e.Message}", e);
            }
        }
        if (r.Remaining != 0) throw new InvalidDataException($"{r.Remaining} trailing bytes after the last tensor at offset {r.Offset}.");
        return new DFloat11Container(tensors);
    }

    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;

        public int Offset { get; private set; }

        public readonly long Remaining => _data.Length - Offset;

        public ReadOnlySpan<byte> Bytes(int count, string what)
        {
            if (count < 0 || count > _data.Length - Offset)
                throw new InvalidDataException($"truncated: {what} needs {count} bytes at offset {Offset}; {_data.Length - Offset} remain.");
            var s = _data.Slice(Offset, count);
            Offset += count;
            return s;
        }

        /// <summary>The bytes from <paramref name="start"/> to the current offset.</summary>
        public readonly ReadOnlySpan<byte> Since(int start) => _data[start..Offset];

        public int U8(string what) => Bytes(1, what)[0];

        public ushort U16(string what) => BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2, what));

        public int I32(string what) => BinaryPrimitives.ReadInt32LittleEndian(Bytes(4, what));
    }
}
