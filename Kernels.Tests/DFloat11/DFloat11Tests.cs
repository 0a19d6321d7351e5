using FsCheck;
using FsCheck.Fluent;
using Kernels.Cpu;
using Kernels.Cpu.DFloat11;
using Kernels.Quant.DFloat11;
using Kernels.Quant.DFloat11.Reference;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.DFloat11;

public class DFloat11Tests
{
    internal static BFloat16[] Gaussian(Random rng, int count, double sigma = 0.02)
    {
        var a = new BFloat16[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            a[i] = (BFloat16)(float)(sigma * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return a;
    }

    internal static BFloat16[] RandomBits(Random rng, int count)
    {
        var a = new BFloat16[count];
        for (int i = 0; i < count; i++) a[i] = BFloat16.FromBits((ushort)rng.Next(65536));
        return a;
    }

    /// <summary>Decodes with every decoder (reference, fast on each supported ISA with 1 and 2 threads) and asserts equality.</summary>
    internal static void AssertAllDecodersExact(DFloat11Tensor t, BFloat16[] expected, string what)
    {
        var r = DFloat11Reference.Decode(t);
        AssertBits(expected, r, $"reference {what}");
        foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
            foreach (int threads in new[] { 1, 2 })
            {
                var d = new BFloat16[expected.Length];
                d.AsSpan().Fill(BFloat16.FromBits(0xDEAD));
                DFloat11Decoder.Decompress(t, d, new KernelOptions { Isa = isa, MaxDegreeOfParallelism = threads });
                AssertBits(expected, d, $"{isa} threads={threads} {what}");
            }
    }

    internal static void AssertBits(BFloat16[] expected, BFloat16[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (expected[i].Bits != actual[i].Bits)
                Assert.Fail($"{what}: element {i} of {expected.Length} is 0x{actual[i].Bits:X4}, expected 0x{expected[i].Bits:X4}");
    }

    [Fact]
    public void Decode_AllBf16Patterns_RoundTrip()
    {
        var all = new BFloat16[65536];
        for (int i = 0; i < all.Length; i++) all[i] = BFloat16.FromBits((ushort)i);
        var t = DFloat11Encoder.Encode(all);
        Assert.True(t.UsesEscape);
        AssertAllDecodersExact(t, all, "all 65536 patterns");
        // Shuffled too, so escapes land at every offset inside windows and blocks.
        var shuffled = (BFloat16[])all.Clone();
        new Random(42).Shuffle(shuffled);
        AssertAllDecodersExact(DFloat11Encoder.Encode(shuffled), shuffled, "shuffled patterns");
    }

    [Fact]
    public void Decode_TinyVectorFromDFloat11_MatchesExpectedExponents()
    {
        // §3.7 of the reference notes: DFloat11's own get_luts/encode output (with its EOF code 11111 and fill-forward).
        var luts = new byte[512];
        luts.AsSpan(0x00, 0x80).Fill(126);
        luts.AsSpan(0x80, 0x40).Fill(125);
        luts.AsSpan(0xC0, 0x20).Fill(127);
        luts.AsSpan(0xE0, 0x10).Fill(124);
        luts.AsSpan(0xF0, 0x10).Fill(128);
        luts[256 + 124] = 4; luts[256 + 125] = 2; luts[256 + 126] = 1; luts[256 + 127] = 3; luts[256 + 128] = 5;
        int[] exps = [126, 125, 127, 126, 124, 128, 126, 126];
        var sm = exps.Select((_, i) => (byte)(i * 37)).ToArray();
        var t = DFloat11Tensor.Create(new TensorShape(8), luts, [0b01011001, 0b11011110, 0b00111110], sm, [0u, 8u], new byte[320]);
        var expected = exps.Select((e, i) => BFloat16.FromBits(DFloat11Format.Combine(sm[i], e))).ToArray();
        AssertAllDecodersExact(t, expected, "DFloat11 tiny vector");

        // Our writer with the same code: the same LUT bytes, the same 18 data bits, no EOF (zero pad), gap 0, positions [0, 8].
        var lengths = new byte[256];
        lengths[124] = 4; lengths[125] = 2; lengths[126] = 1; lengths[127] = 3; lengths[128] = 5;
        var code = HuffmanCode.FromLengths(lengths);
        Assert.Equal(luts, code.BuildLuts());
        var ours = DFloat11Encoder.Encode(expected, new TensorShape(8), code, code.BuildLuts());
        Assert.Equal(new byte[] { 0b01011001, 0b11011110, 0 }, ours.EncodedExponents.ToArray());
        Assert.Equal(new uint[] { 0, 8 }, ours.OutputPositions.ToArray());
        Assert.Equal(0, ours.Gap(0));
    }

    public sealed record Case(int Count, int Kind, int Seed)
    {
        public override string ToString() => $"n={Count} kind={Kind} seed={Seed}";
    }

    private static BFloat16[] Make(Case c)
    {
        var rng = new Random(c.Seed);
        return c.Kind switch
        {
            0 => Gaussian(rng, c.Count),
            1 => RandomBits(rng, c.Count),
            2 => Gaussian(rng, c.Count).Select((v, i) => i % 97 == 5 ? BFloat16.FromBits((ushort)(0x7F80 | rng.Next(65536) & 0x807F)) : v).ToArray(),
            3 => Enumerable.Repeat(BFloat16.FromBits((ushort)rng.Next(65536)), c.Count).ToArray(),
            _ => Gaussian(rng, c.Count, 1e-30), // tiny values: long codes and sub-tables
        };
    }

    [Fact]
    public void Decode_RandomTensors_AllDecodersExact()
    {
        var arb = (from n in Gen.OneOf(Gen.Elements(0, 1, 2, 3, 11, 12, 13, 64, 4095, 4096, 4097), Gen.Choose(0, 40_000))
                   from kind in Gen.Choose(0, 4)
                   from seed in Gen.Choose(0, int.MaxValue)
                   select new Case(n, kind, seed)).ToArbitrary();
        Prop.ForAll(arb, c =>
        {
            var v = Make(c);
            var t = DFloat11Encoder.Encode(v);
            Assert.True(t.Code.MaxLength <= DFloat11Format.EncoderMaxCodeLength, c.ToString());
            AssertAllDecodersExact(t, v, c.ToString());
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(60));
    }

    [Fact]
    public void Decode_LargeGaussian_ExactAndCompresses()
    {
        var v = Gaussian(new Random(42), 1 << 20);
        var t = DFloat11Encoder.Encode(v);
        AssertAllDecodersExact(t, v, "1M gaussian");
        double entropy = DFloat11Encoder.Entropy(DFloat11Encoder.ExponentHistogram(v));
        Assert.InRange(entropy, 2.0, 3.2);
        Assert.True(t.CompressionRatio < 0.68, $"ratio {t.CompressionRatio:P2}");
        Assert.False(t.UsesEscape);
    }

    [Fact]
    public void Encode_PathologicalHistogram_TightensLengthLimitAndRoundTrips()
    {
        // One dominant exponent plus every other exponent once: the 24-bit-limited code needs > 16 sub-tables.
        var v = new List<BFloat16>();
        for (int e = 0; e < 256; e++) v.Add(BFloat16.FromBits((ushort)(e << 7 | 3)));
        for (int i = 0; i < 200_000; i++) v.Add(BFloat16.FromBits((ushort)(120 << 7 | (i & 0x7F))));
        var a = v.ToArray();
        var t = DFloat11Encoder.Encode(a);
        Assert.True(t.Luts.Length <= DFloat11Format.MaxLutRows * 256);
        AssertAllDecodersExact(t, a, "pathological");
    }

    [Fact]
    public void HuffmanCode_IsCompleteAndLengthLimited()
    {
        var rng = new Random(42);
        for (int trial = 0; trial < 50; trial++)
        {
            var f = new long[256];
            int used = rng.Next(1, 240);
            for (int i = 0; i < used; i++) f[rng.Next(240)] = (long)Math.Pow(2, rng.NextDouble() * 40);
            int limit = rng.Next(8, 25);
            var code = HuffmanCode.FromFrequencies(f, limit);
            double kraft = 0;
            for (int s = 0; s < 256; s++)
                if (code.Lengths[s] > 0) kraft += Math.ScaleB(1.0, -code.Lengths[s]);
            Assert.Equal(1.0, kraft, 12);
            Assert.True(code.MaxLength <= limit);
            for (int s = 0; s < 256; s++) Assert.True(f[s] == 0 || code.Lengths[s] > 0);
        }
    }

    [Fact]
    public void DecompressRange_MatchesSlices()
    {
        var v = Gaussian(new Random(7), 50_000);
        var t = DFloat11Encoder.Encode(v);
        var rng = new Random(1);
        for (int i = 0; i < 40; i++)
        {
            int start = rng.Next(v.Length), len = rng.Next(v.Length - start + 1);
            var d = new BFloat16[len];
            DFloat11Decoder.DecompressRange(t, start, d);
            AssertBits(v.AsSpan(start, len).ToArray(), d, $"range [{start}, +{len})");
        }
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Gemm_Fused_EachIsa_MatchesReference(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        var rng = new Random(42);
        foreach (var (m, k, n) in new[] { (1, 1, 1), (7, 33, 1), (64, 4096, 1), (37, 1031, 3), (300, 257, 2), (5, 0, 1), (0, 8, 1) })
        {
            var w = Gaussian(rng, m * k);
            var t = DFloat11Encoder.Encode(w, new TensorShape(m, k));
            float[] x = Inputs.Floats(rng, n * k, 1f);
            float[] expected = new float[n * m], actual = new float[n * m];
            double[] mag = new double[n * m];
            DenseReference.Gemm(w, x, expected, m, k, n);
            DenseReference.AbsGemm(w.Select(b => (float)b).ToArray(), x, mag, m, k, n);
            DFloat11Decoder.Gemm(t, x, actual, m, k, n, new KernelOptions { Isa = isa });
            var r = ResultComparer.Compare(expected, actual, mag, ResultComparer.DotTolerance(k), ResultComparer.DotUnderflow(k));
            Assert.True(r.Passed, $"{isa} m={m} k={k} n={n}: {r}");
        }
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public unsafe void Merge_EachIsa_EveryLength_MatchesFormula(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        var rng = new Random(42);
        for (int count = 0; count <= 4 * 64 + 3; count++)
        {
            var exps = new byte[count + 1];
            var sm = new byte[count + 1];
            rng.NextBytes(exps);
            rng.NextBytes(sm);
            var dst = new ushort[count + 1];
            dst[count] = 0xBEEF; // sentinel: nothing past count is written
            fixed (byte* e = exps)
            fixed (byte* s = sm)
            fixed (ushort* d = dst)
                DFloat11Decoder.Merge(isa, e, s, d, count);
            for (int i = 0; i < count; i++) Assert.Equal(DFloat11Format.Combine(sm[i], exps[i]), dst[i]);
            Assert.Equal(0xBEEF, dst[count]);
        }
    }

    [Fact]
    public void CpuBackend_DecompressAndGemm_MatchReference()
    {
        using var cpu = new CpuBackend();
        var v = Gaussian(new Random(5), 12 * 40);
        var t = DFloat11Encoder.Encode(v, new TensorShape(12, 40));
        using var w = cpu.Upload(t);
        using var d = cpu.Allocate<BFloat16>(12, 40);
        cpu.Decompress(w, d);
        AssertBits(v, d.ToArray(), "CpuBackend.Decompress");
        using var wrong = cpu.Allocate<BFloat16>(12, 41);
        Assert.Contains("480", Assert.Throws<ArgumentException>(() => cpu.Decompress(w, wrong)).Message);
        using var x = cpu.Allocate<float>(1, 41);
        using var y = cpu.Allocate<float>(1, 12);
        Assert.Throws<ArgumentException>(() => cpu.Gemm(w, x, y));
        using var other = new CpuBackend();
        Assert.Throws<ArgumentException>(() => other.Decompress(w, d));
        w.Dispose();
        Assert.Throws<ObjectDisposedException>(() => cpu.Decompress(w, d));
    }

    [Fact]
    public void Decompress_WrongDestination_Throws()
    {
        var t = DFloat11Encoder.Encode(Gaussian(new Random(1), 100));
        var e = Assert.Throws<ArgumentException>(() => DFloat11Decoder.Decompress(t, new BFloat16[99]));
        Assert.Contains("99", e.Message);
        Assert.Contains("100", e.Message);
        Assert.Throws<ArgumentException>(() => DFloat11Reference.Decode(t, new BFloat16[101]));
        Assert.Throws<ArgumentOutOfRangeException>(() => DFloat11Decoder.DecompressRange(t, 50, new BFloat16[51]));
        Assert.Throws<ArgumentException>(() => DFloat11Decoder.Gemm(t, new float[10], new float[9], 10, 10, 1));
    }
}
