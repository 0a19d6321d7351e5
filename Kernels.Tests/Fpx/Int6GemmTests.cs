using FsCheck;
using FsCheck.Fluent;
using Kernels.Cpu;
using Kernels.Cpu.Fpx;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Fpx;

public class Int6GemmTests
{
    public sealed record Case(int M, int K, int N, int Group, int Seed, bool Bf16X)
    {
        public override string ToString() => $"m={M} k={K} n={N} g={Group} seed={Seed} bf16x={Bf16X}";
    }

    private static Arbitrary<Case> Cases =>
        (from m in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 9), Gen.Choose(10, 30))
         from k in Gen.OneOf(Gen.Constant(0), Gen.Choose(1, 70), Gen.Elements(63, 64, 65, 128, 129, 300))
         from n in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 6), Gen.Elements(8, 9, 17))
         from g in Gen.Elements(64, 128)
         from seed in Gen.Choose(0, int.MaxValue)
         from bf in Gen.Elements(false, true)
         select new Case(m, k, n, g, seed, bf)).ToArbitrary();

    internal static Int6Weights RandomWeights(Random rng, int m, int k, int g)
    {
        float[] w = Inputs.Floats(rng, m * k, 0.05f);
        return Int6Weights.Quantize(w, m, k, g);
    }

    private static void CheckA16(Case c, IsaPath isa)
    {
        var rng = new Random(c.Seed);
        var w = RandomWeights(rng, c.M, c.K, c.Group);
        float[] x = Inputs.Floats(rng, c.N * c.K, 2f);
        var xb = x.Select(v => (BFloat16)v).ToArray();
        if (c.Bf16X) x = xb.Select(v => (float)v).ToArray();
        float[] e = new float[c.M * c.N], a = new float[c.M * c.N];
        double[] mag = new double[e.Length];
        FpxReference.GemmW6A16(w, x, e, c.N, mag);
        if (c.Bf16X) Int6Gemm.GemmW6A16(w, xb, a, c.N, new KernelOptions { Isa = isa });
        else Int6Gemm.GemmW6A16(w, x, a, c.N, new KernelOptions { Isa = isa });
        var r = ResultComparer.Compare(e, a, mag, ResultComparer.DotTolerance(c.K), ResultComparer.DotUnderflow(c.K));
        Assert.True(r.Passed, $"W6A16 {isa} {c}: {r}");
    }

    private static void CheckA8(Case c, IsaPath isa)
    {
        var rng = new Random(c.Seed);
        var w = RandomWeights(rng, c.M, c.K, c.Group);
        float[] x = Inputs.Floats(rng, c.N * c.K, 2f);
        var xq = new sbyte[x.Length];
        var xs = new float[c.N];
        FpxReference.QuantizeActivations(x, c.K, xq, xs);
        float[] e = new float[c.M * c.N], a = new float[c.M * c.N];
        double[] mag = new double[e.Length];
        FpxReference.GemmW6A8(w, xq, xs, e, mag);
        Int6Gemm.GemmW6A8(w, x, a, c.N, new KernelOptions { Isa = isa });
        var r = ResultComparer.Compare(e, a, OffsetMagnitudes(w, xq, xs), ResultComparer.DotTolerance(w.GroupsPerRow + 18));
        Assert.True(r.Passed, $"W6A8 {isa} {c}: {r}");
    }

    /// <summary>The scale of the CPU W6A8 kernels' rounding error, <c>xScale·Σ_g scale_g·Σ_c (|q| + 32)·|xq|</c>: their lanes
    /// hold the stored codes' products <c>(q + 32)·xq</c>, and the offset <c>32·Σ xq</c> leaves them only in the fp32 sum
    /// (see <see cref="Int6Gemm"/>), so a lane can be as large as that, not only <c>Σ|q·xq|</c>.</summary>
    private static double[] OffsetMagnitudes(Int6Weights w, sbyte[] xq, float[] xs)
    {
        int m = w.Rows, k = w.Columns, g = w.GroupSize, n = xs.Length;
        sbyte[] q = w.GetValues();
        var mag = new double[n * m];
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
            {
                double sum = 0;
                for (int c = 0; c < k; c++) sum += (double)w.Scales[r * w.GroupsPerRow + c / g] * (Math.Abs(q[r * k + c]) + Int6Weights.Offset) * Math.Abs(xq[j * k + c]);
                mag[j * m + r] = sum * xs[j];
            }
        return mag;
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void GemmW6A8_FewColumns_EachIsa_MatchesReference(IsaPath isa)
    {
        // Rows of few columns, where a small code beside a large one makes the stored codes' offset (q + 32) dominate the
        // lanes: until 2026-12-02 the bound was stated against Σ|q·xq| and this first case missed it by 1.38× (m = 7, k = 2,
        // n = 17); the kernels' stated bound is now against Σ(|q| + 32)·|xq| (OffsetMagnitudes).
        if (!CpuIsa.IsSupported(isa)) return;
        CheckA8(new Case(7, 2, 17, 64, 552797984, false), isa);
        var few = (from m in Gen.Choose(1, 9)
                   from k in Gen.Choose(1, 8)
                   from n in Gen.Choose(1, 20)
                   from g in Gen.Elements(64, 128)
                   from seed in Gen.Choose(0, int.MaxValue)
                   select new Case(m, k, n, g, seed, false)).ToArbitrary();
        Prop.ForAll(few, c => CheckA8(c, isa)).Check(Config.QuickThrowOnFailure.WithMaxTest(300));
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void GemmW6A16_EachIsa_MatchesReference(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(Cases, c => CheckA16(c, isa)).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void GemmW6A16_Avx512WithoutFusedSmallBatch_MatchesReference()
    {
        // n ≥ 2 on AVX-512 runs the fused 2-row × 8-token kernel; this runs the decoded-tile path (unpermuted activations) too.
        if (!CpuIsa.IsSupported(IsaPath.Avx512)) return;
        Switches.With(ref FpxGemm.EnableFused, false, () => Prop.ForAll(Cases, c => CheckA16(c, IsaPath.Avx512)).QuickCheckThrowOnFailure());
    }

    [Fact]
    public void GemmW6A16_FusedSmallBatch_OddRowsAndTokenRemainders_MatchReference()
    {
        // Two 8-token passes plus three single tokens, an odd last row, groups spanning two blocks; both activation types.
        CheckA16(new Case(33, 515, 19, 128, 41, false), IsaPath.Auto);
        CheckA16(new Case(7, 1024, 8, 64, 42, true), IsaPath.Auto);
        CheckA16(new Case(2, 128, 16, 128, 43, false), IsaPath.Auto);
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void GemmW6A8_EachIsa_MatchesReference(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(Cases, c => CheckA8(c, isa)).QuickCheckThrowOnFailure();
    }

    /// <summary>W6A8 with one to three tokens decodes each block's codes into registers and uses them at once (AVX-512;
    /// AVX2 for one token); four or more tokens decode a row into a byte scratch first. Both give the same integer dots in
    /// the same group order, so each token alone, and the tokens in twos and threes, give the batch's bits.</summary>
    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void GemmW6A8_FewTokens_SameBitsAsBatch(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(Cases, c =>
        {
            var rng = new Random(c.Seed);
            var w = RandomWeights(rng, c.M, c.K, c.Group);
            int n = Math.Max(c.N, 4);
            float[] x = Inputs.Floats(rng, n * c.K, 2f);
            var xq = new sbyte[x.Length];
            var xs = new float[n];
            FpxReference.QuantizeActivations(x, c.K, xq, xs);
            var options = new KernelOptions { Isa = isa };
            float[] batch = new float[n * c.M];
            Int6Gemm.GemmW6A8(w, xq, xs, batch, options);
            foreach (int size in new[] { 1, 2, 3 })
                for (int j0 = 0; j0 + size <= n; j0 += size)
                {
                    float[] part = new float[size * c.M];
                    Int6Gemm.GemmW6A8(w, xq.AsSpan(j0 * c.K, size * c.K), xs.AsSpan(j0, size), part, options);
                    for (int i = 0; i < part.Length; i++)
                        Assert.True(BitConverter.SingleToInt32Bits(part[i]) == BitConverter.SingleToInt32Bits(batch[j0 * c.M + i]),
                            $"{isa} {c}: tokens {j0}..{j0 + size - 1}, output {i}: {part[i]} vs {batch[j0 * c.M + i]}");
                }
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Gemm_SeveralColumnTiles_EachIsa_MatchesReference()
    {
        foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
        {
            CheckA16(new Case(7, 2 * FpxGemm.KTile + 100, 6, 128, 31, false), isa);
            CheckA8(new Case(7, 2 * FpxGemm.KTile + 100, 6, 64, 32, false), isa);
        }
    }

    [Fact]
    public void Gemm_LargeParallel_MatchesReference()
    {
        CheckA16(new Case(157, 1024, 1, 128, 3, false), IsaPath.Auto);
        CheckA16(new Case(45, 700, 10, 64, 4, false), IsaPath.Auto);
        CheckA8(new Case(157, 1024, 1, 128, 5, false), IsaPath.Auto);
        CheckA8(new Case(45, 700, 10, 64, 6, false), IsaPath.Auto);
    }

    // vpmaddubsw sums two products u·a with signed 16-bit saturation. With u = q + 32 ∈ [1, 63] and a ∈ [−128, 127] the worst pair is
    // 2·63·(−128) = −16128 (or 2·63·127 = 16002), well inside [−32768, 32767]. Every path must return the exact integer answer for
    // all-extreme inputs: if any pair saturated, the result would be off by at least 1·scale.
    [Theory]
    [InlineData(31, 127)]
    [InlineData(31, -128)]
    [InlineData(-31, 127)]
    [InlineData(-31, -128)]
    [InlineData(31, -127)]
    public void GemmW6A8_ExtremeValues_NeverSaturate(int q, int xv)
    {
        Assert.True(2 * (q + Int6Weights.Offset is > 0 ? 63 : 0) * 128 <= short.MaxValue);
        foreach (int g in new[] { 64, 128 })
        {
            int m = 3, k = 256, n = 5; // a four-token pass and a single token
            var values = Enumerable.Repeat((sbyte)q, m * k).ToArray();
            var w = Int6Weights.FromValues(values, Enumerable.Repeat(1f, m * (k / g)).ToArray(), m, k, g);
            var xq = Enumerable.Repeat((sbyte)xv, n * k).ToArray();
            float[] y = new float[m * n];
            foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
            {
                Int6Gemm.GemmW6A8(w, xq, Enumerable.Repeat(1f, n).ToArray(), y, new KernelOptions { Isa = isa });
                Assert.All(y, v => Assert.Equal((float)(q * xv * k), v)); // |q·x·k| ≤ 31·128·256 < 2^24: exact in fp32
            }
        }
    }

    [Fact]
    public void GemmW6A8_AlternatingExtremes_MatchExactIntegers()
    {
        // Mixed signs per pair (u = 63 with a = −128 next to u = 1 with a = 127) and random extremes, against exact integers.
        var rng = new Random(11);
        int m = 4, k = 384, n = 5;
        var values = Enumerable.Range(0, m * k).Select(i => (sbyte)(rng.Next(2) == 0 ? 31 : -31)).ToArray();
        var w = Int6Weights.FromValues(values, Enumerable.Repeat(1f, m * 3).ToArray(), m, k, 128);
        var xq = Enumerable.Range(0, n * k).Select(i => (sbyte)(rng.Next(2) == 0 ? -128 : 127)).ToArray();
        var expected = new float[m * n];
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
                expected[j * m + r] = Enumerable.Range(0, k).Sum(c => values[r * k + c] * xq[j * k + c]);
        var y = new float[m * n];
        foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
        {
            Int6Gemm.GemmW6A8(w, xq, Enumerable.Repeat(1f, n).ToArray(), y, new KernelOptions { Isa = isa });
            Assert.Equal(expected, y);
        }
    }

    [Fact]
    public void Quantize_GroupScalesAndRoundTrip()
    {
        var rng = new Random(42);
        int m = 3, k = 200;
        float[] w = Inputs.Floats(rng, m * k, 0.1f);
        for (int c = 64; c < 128; c++) w[k + c] = 0; // a zero group → scale 1
        var q = Int6Weights.Quantize(w, m, k, 64);
        Assert.Equal(4, q.GroupsPerRow);
        Assert.Equal(1f, q.Scales[1 * 4 + 1]);
        var deq = new float[m * k];
        FpxReference.Dequantize(q, deq);
        for (int r = 0; r < m; r++)
            for (int c = 0; c < k; c++)
            {
                float s = q.Scales[r * 4 + c / 64];
                Assert.True(Math.Abs(deq[r * k + c] - w[r * k + c]) <= s / 2 * 1.000001, $"r={r} c={c}");
                Assert.InRange(q.ValueAt(r, c), -31, 31);
            }
    }

    [Fact]
    public void Quantize_RejectsNonFiniteAndBadGroup()
    {
        var w = new float[2 * 64];
        w[64 + 3] = float.NaN;
        var ex = Assert.Throws<ArgumentException>(() => Int6Weights.Quantize(w, 2, 64, 64));
        Assert.Contains("[1, 3]", ex.Message);
        var nse = Assert.Throws<NotSupportedException>(() => Int6Weights.Quantize(new float[64], 1, 64, 32));
        Assert.Contains("64 or 128", nse.Message);
        Assert.Throws<ArgumentException>(() => Int6Weights.FromValues([(sbyte)-32], [1f], 1, 1, 64));
    }

    [Fact]
    public void GemmW6A8_RejectsNonFiniteActivations()
    {
        var w = RandomWeights(new Random(1), 2, 10, 64);
        var x = new float[10];
        x[7] = float.PositiveInfinity;
        var ex = Assert.Throws<ArgumentException>(() => Int6Gemm.GemmW6A8(w, x, new float[2], 1));
        Assert.Contains("[0, 7]", ex.Message);
    }

    [Fact]
    public void Gemm_ThrowsForWrongLengths()
    {
        var w = RandomWeights(new Random(1), 3, 10, 64);
        Assert.Contains("y has 2", Assert.Throws<ArgumentException>(() => Int6Gemm.GemmW6A16(w, new float[10], new float[2], 1)).Message);
        Assert.Equal("xq", Assert.Throws<ArgumentException>(() => Int6Gemm.GemmW6A8(w, new sbyte[9], [1f], new float[3])).ParamName);
    }
}
