using Kernels.Cpu;
using Kernels.Cpu.DFloat11;
using Kernels.Quant.DFloat11;
using Kernels.Quant.DFloat11.Reference;
using Kernels.Tests.TestUtilities;
using System.Text;

namespace Kernels.Tests.DFloat11;

public class DFloat11ContainerTests
{
    private static List<SafeTensor> Collection(int seed)
    {
        var rng = new Random(seed);
        return
        [
            new SafeTensor("model.layers.0.mlp.up_proj.weight", new TensorShape(64, 130), DFloat11Tests.Gaussian(rng, 64 * 130)),
            new SafeTensor("model.layers.0.input_layernorm.weight", new TensorShape(130), DFloat11Tests.Gaussian(rng, 130, 1.0)),
            new SafeTensor("scalar", new TensorShape(), [BFloat16.FromBits(0x7FC1)]),
            new SafeTensor("empty", new TensorShape(0, 5), []),
            new SafeTensor("odd bits", new TensorShape(3, 3000), DFloat11Tests.RandomBits(rng, 9000)),
        ];
    }

    [Fact]
    public void SafeTensor_ValuesMustMatchTheShape()
    {
        var e = Assert.Throws<ArgumentException>(() => new SafeTensor("w", new TensorShape(3, 4), new BFloat16[11]));
        Assert.Contains("11 elements", e.Message);
        Assert.Contains("12", e.Message);
        Assert.Throws<ArgumentNullException>(() => new SafeTensor(null!, new TensorShape(1), new BFloat16[1]));
    }

    [Fact]
    public void Container_RoundTrip_BitExact()
    {
        var tensors = Collection(42);
        var c = DFloat11Container.Compress(tensors);
        byte[] bytes = c.ToArray();
        var back = DFloat11Container.Read(bytes);
        Assert.Equal(tensors.Select(t => t.Name), back.Names);
        foreach (var t in tensors)
        {
            var d = back[t.Name];
            Assert.Equal(t.Shape, d.Shape);
            DFloat11Tests.AssertAllDecodersExact(d, t.Values, t.Name);
        }
        Assert.Equal(bytes, back.ToArray()); // deterministic re-serialization
    }

    [Fact]
    public void SafeTensors_RoundTripThroughContainer()
    {
        var tensors = Collection(7);
        var ms = new MemoryStream();
        SafeTensorsFile.Write(ms, tensors);
        byte[] file = ms.ToArray();
        Assert.Equal(0, (file.Length - tensors.Sum(t => 2 * t.Values.Length)) % 8);
        var read = SafeTensorsFile.Read(file);
        Assert.Equal(tensors.Count, read.Count);
        var container = DFloat11Container.Read(DFloat11Container.Compress(read).ToArray());
        var restored = container.Tensors.Select(kv => new SafeTensor(kv.Key, kv.Value.Shape, DFloat11Reference.Decode(kv.Value))).ToList();
        var ms2 = new MemoryStream();
        SafeTensorsFile.Write(ms2, restored);
        Assert.Equal(file, ms2.ToArray());
    }

    [Fact]
    public void SafeTensors_BadInputs_Throw()
    {
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read([1, 2, 3]));
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read([255, 0, 0, 0, 0, 0, 0, 0, (byte)'{']));
        byte[] Header(string json)
        {
            var j = System.Text.Encoding.UTF8.GetBytes(json);
            var f = new byte[8 + j.Length + 4];
            BitConverter.TryWriteBytes(f, (ulong)j.Length);
            j.CopyTo(f, 8);
            return f;
        }
        var e = Assert.Throws<NotSupportedException>(() => SafeTensorsFile.Read(Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")));
        Assert.Contains("F32", e.Message);
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(Header("{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]}}")));
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(Header("{\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]")));
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(Header("[1,2]")));
    }

    [Fact]
    public void Read_Truncated_ThrowsWithOffset()
    {
        byte[] bytes = DFloat11Container.Compress(Collection(1)).ToArray();
        foreach (int cut in new[] { 0, 3, 8, 15, 16, 20, 100, bytes.Length / 2, bytes.Length - 1 })
        {
            var e = Assert.Throws<InvalidDataException>(() => DFloat11Container.Read(bytes.AsSpan(0, cut)));
            Assert.Contains("offset", e.Message);
        }
        var extra = bytes.Concat(new byte[] { 0 }).ToArray();
        Assert.Contains("trailing", Assert.Throws<InvalidDataException>(() => DFloat11Container.Read(extra)).Message);
    }

    [Fact]
    public void Create_InconsistentParts_Throw()
    {
        var t = DFloat11Encoder.Encode(DFloat11Tests.Gaussian(new Random(3), 20_000));
        var shape = t.Shape;
        byte[] luts = t.Luts.ToArray(), enc = t.EncodedExponents.ToArray(), sm = t.SignMantissa.ToArray(), gaps = t.Gaps.ToArray();
        uint[] pos = t.OutputPositions.ToArray();
        Assert.Throws<InvalidDataException>(() => DFloat11Tensor.Create(new TensorShape(19_999), luts, enc, sm, pos, gaps));
        Assert.Throws<InvalidDataException>(() => DFloat11Tensor.Create(shape, luts, enc.AsSpan(0, enc.Length - 4096).ToArray(), sm, pos, gaps));
        Assert.Throws<InvalidDataException>(() => DFloat11Tensor.Create(shape, luts, enc, sm, pos, gaps.AsSpan(1).ToArray()));
        Assert.Throws<InvalidDataException>(() => DFloat11Tensor.Create(shape, luts.AsSpan(0, 300).ToArray(), enc, sm, pos, gaps));
        var badPos = (uint[])pos.Clone();
        badPos[1] = badPos[2] + 1;
        Assert.Contains("block", Assert.Throws<InvalidDataException>(() => DFloat11Tensor.Create(shape, luts, enc, sm, badPos, gaps)).Message);
        var badLut = (byte[])luts.Clone();
        badLut[0] = 241; // pointer to a row that does not exist / loops
        Assert.Throws<InvalidDataException>(() => DFloat11Tensor.Create(shape, badLut, enc, sm, pos, gaps));
    }

    /// <summary>
    /// Thousands of random mutations of a container without record checksums (version 1: bit flips, byte overwrites,
    /// truncation, inserted and deleted bytes): each must either throw InvalidDataException or decode to the declared size,
    /// on every decoder. This is what the decoders meet when a corrupted stream gets past the container, or when a caller
    /// builds a tensor from parts (<see cref="DFloat11Tensor.Create"/>).
    /// </summary>
    [Fact]
    public void Read_RandomCorruptionWithoutChecksums_ThrowsInvalidDataOrDecodes()
    {
        var rng = new Random(42);
        byte[] clean = ToVersion1(DFloat11Container.Compress(CorruptionSource(rng)).ToArray());
        var isas = IsaMatrix.All.Where(CpuIsa.IsSupported).ToArray();
        int rejected = 0, decoded = 0;
        for (int trial = 0; trial < 3000; trial++)
        {
            byte[] bad = Mutate(rng, clean);
            DFloat11Container c;
            try
            {
                c = DFloat11Container.Read(bad);
            }
            catch (InvalidDataException)
            {
                rejected++;
                continue;
            }
            foreach (var (_, t) in c.Tensors)
            {
                var isa = isas[trial % isas.Length];
                Try(() => Assert.Equal(t.ElementCount, DFloat11Reference.Decode(t).Length));
                Try(() => DFloat11Decoder.Decompress(t, new BFloat16[t.ElementCount], new KernelOptions { Isa = isa, MaxDegreeOfParallelism = 1 + trial % 2 }));
                if (t.ElementCount > 10) Try(() => DFloat11Decoder.Gemm(t, new float[t.ElementCount / 10], new float[10], 10, t.ElementCount / 10, 1, new KernelOptions { Isa = isa }));
            }
            decoded++;
        }
        Assert.True(rejected > 100 && decoded > 100, $"rejected {rejected}, decoded {decoded}");

        static void Try(Action a)
        {
            try
            {
                a();
            }
            catch (InvalidDataException)
            {
            }
        }
    }

    /// <summary>The same mutations of a current (version 2) container: every one that changes a byte is rejected, either by
    /// the structure checks or by a record checksum, so corruption never reaches a decoder.</summary>
    [Fact]
    public void Read_RandomCorruption_AlwaysThrows()
    {
        var rng = new Random(43);
        byte[] clean = DFloat11Container.Compress(CorruptionSource(rng)).ToArray();
        int byChecksum = 0, changed = 0;
        for (int trial = 0; trial < 3000; trial++)
        {
            byte[] bad = Mutate(rng, clean);
            if (bad.AsSpan().SequenceEqual(clean)) continue; // an overwrite with the same bytes
            changed++;
            var e = Assert.Throws<InvalidDataException>(() => DFloat11Container.Read(bad));
            Assert.Contains("offset", e.Message);
            if (e.Message.Contains("checksum")) byChecksum++;
        }
        Assert.True(byChecksum > changed / 4, $"{byChecksum} of {changed} mutations were caught by a checksum");
    }

    [Fact]
    public void Read_OneFlippedMantissaBit_NamesTheChecksumAndOffsets()
    {
        // A flipped sign/mantissa bit passes every structural check (without the checksum it decodes to one wrong value).
        var tensors = Collection(5);
        byte[] bytes = DFloat11Container.Compress(tensors).ToArray();
        byte[] v1 = ToVersion1(bytes);
        var first = DFloat11Container.Read(bytes).Tensors[0].Value;
        int smAt = 16 + 2 + Encoding.UTF8.GetByteCount(tensors[0].Name) + 1 + 4 * first.Shape.Rank + 4 + 8 + first.Luts.Length + first.EncodedByteCount + 3; // the first record's fourth sign/mantissa byte (same offset in both versions)
        v1[smAt] ^= 0x10;
        var wrong = DFloat11Reference.Decode(DFloat11Container.Read(v1).Tensors[0].Value);
        Assert.NotEqual(tensors[0].Values, wrong);
        bytes[smAt] ^= 0x10;
        var e = Assert.Throws<InvalidDataException>(() => DFloat11Container.Read(bytes));
        Assert.Contains("checksum", e.Message);
        Assert.Contains($"'{tensors[0].Name}' (record at offset 16)", e.Message);
    }

    [Fact]
    public void Read_Version1_StillReads()
    {
        var tensors = Collection(9);
        byte[] v2 = DFloat11Container.Compress(tensors).ToArray();
        byte[] v1 = ToVersion1(v2);
        Assert.Equal(v2.Length - 4 * tensors.Count, v1.Length);
        var back = DFloat11Container.Read(v1);
        foreach (var t in tensors) DFloat11Tests.AssertAllDecodersExact(back[t.Name], t.Values, t.Name);
        Assert.Equal(v2, back.ToArray()); // written back as version 2
        v2[10] = 1;
        Assert.Contains("reserved", Assert.Throws<InvalidDataException>(() => DFloat11Container.Read(v2)).Message);
        v2[10] = 0;
        v2[8] = 3;
        Assert.Contains("version 3", Assert.Throws<InvalidDataException>(() => DFloat11Container.Read(v2)).Message);
    }

    private static List<SafeTensor> CorruptionSource(Random rng) =>
    [
        new("g", new TensorShape(2000), DFloat11Tests.Gaussian(rng, 2000)),
        new("bits", new TensorShape(9000), DFloat11Tests.RandomBits(rng, 9000)), // 3 blocks with escapes
    ];

    /// <summary>A version-2 container rewritten as version 1: the version field set to 1 and each record's checksum dropped.</summary>
    internal static byte[] ToVersion1(byte[] v2)
    {
        var o = new List<byte>(v2[..16]);
        o[8] = 1;
        int at = 16, count = BitConverter.ToInt32(v2, 12);
        for (int i = 0; i < count; i++)
        {
            int start = at;
            at += 2 + BitConverter.ToUInt16(v2, at);
            int rank = v2[at++];
            long elements = 1;
            for (int d = 0; d < rank; d++, at += 4) elements *= BitConverter.ToInt32(v2, at);
            at += 4;
            int luts = BitConverter.ToInt32(v2, at), encoded = BitConverter.ToInt32(v2, at + 4);
            int blocks = DFloat11Format.BlockCount(encoded);
            at += 8 + luts + encoded + (int)elements + 4 * (blocks + 1) + blocks * DFloat11Format.GapBytesPerBlock;
            o.AddRange(v2[start..at]);
            at += 4; // the checksum
        }
        Assert.Equal(v2.Length, at);
        return o.ToArray();
    }

    private static byte[] Mutate(Random rng, byte[] clean)
    {
        var b = (byte[])clean.Clone();
        switch (rng.Next(6))
        {
            case 0: // a few bit flips anywhere
                for (int i = rng.Next(1, 4); i > 0; i--) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8));
                return b;
            case 1: // a random byte in the first 2 KB (headers, LUTs)
                b[rng.Next(Math.Min(2048, b.Length))] = (byte)rng.Next(256);
                return b;
            case 2: // truncate
                return b.AsSpan(0, rng.Next(b.Length)).ToArray();
            case 3: // delete a byte
            {
                int at = rng.Next(b.Length);
                return b.Take(at).Concat(b.Skip(at + 1)).ToArray();
            }
            case 4: // insert a byte
            {
                int at = rng.Next(b.Length);
                return b.Take(at).Append((byte)rng.Next(256)).Concat(b.Skip(at)).ToArray();
            }
            default: // overwrite a run with random bytes
            {
                int at = rng.Next(b.Length), len = Math.Min(rng.Next(1, 64), b.Length - at);
                rng.NextBytes(b.AsSpan(at, len));
                return b;
            }
        }
    }
}
