using FsCheck;
using FsCheck.Fluent;
using Kernels.Cpu;
using Kernels.Cpu.Lut;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Lut;

public class LutGemmTests
{
    public sealed record LutCase(LutFormat Format, int M, int Groups, int N, int Seed, TernaryScaleScope Scope)
    {
        public int K => Groups * Format.GroupSize;

        public override string ToString() => $"{Format} m={M} k={K} n={N} seed={Seed} {Scope}";
    }

    internal static Gen<LutFormat> Formats =>
        from kind in Gen.Elements(LutQuantKind.Asymmetric, LutQuantKind.Symmetric, LutQuantKind.Ternary)
        from bits in Gen.Choose(1, 4)
        from gs in Gen.Elements(32, 64, 128)
        select kind == LutQuantKind.Ternary ? LutFormat.Ternary(gs) : new LutFormat(kind, bits, gs);

    // m = 1, odd m, m around the 64-row tile; k from one group to several; n odd and even.
    internal static Arbitrary<LutCase> Cases =>
        (from f in Formats
         from m in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 9), Gen.Elements(63, 64, 65, 130))
         from groups in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 5))
         from n in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 4), Gen.Constant(9))
         from seed in Gen.Choose(0, int.MaxValue)
         from scope in Gen.Elements(TernaryScaleScope.PerTensor, TernaryScaleScope.PerRow)
         select new LutCase(f, m, groups, n, seed, scope)).ToArbitrary();

    internal static (LutQuantizedMatrix Q, LutWeights W, float[] X) Make(LutCase c)
    {
        var rng = new Random(c.Seed);
        float[] wf = Inputs.Floats(rng, c.M * c.K, 0.5f);
        var q = LutQuantizer.Quantize(wf, c.M, c.K, c.Format, c.Scope);
        float[] x = Inputs.Floats(rng, c.N * c.K, 2f);
        return (q, BitPlanePacking.Pack(q), x);
    }

    /// <summary>Int8 tables: |y − ref| ≤ table bound + fp32 rounding; exact tables: fp32 rounding only.</summary>
    internal static void CheckAgainstReference(LutCase c, LutQuantizedMatrix q, float[] x, float[] actual, LutTableMode mode, string what) =>
        CheckAgainstReference(q, x, actual, c.N, mode, 1e-30, $"{what} {mode} {c}");

    /// <summary>Checks n output rows of a LUT GEMM against <see cref="LutReference.Gemm"/> within the stated bound: fp32
    /// rounding of the centred sum, plus the int8-table error for <see cref="LutTableMode.Int8"/>, plus
    /// <paramref name="absTolerance"/>.</summary>
    internal static void CheckAgainstReference(LutQuantizedMatrix q, float[] x, float[] actual, int n, LutTableMode mode, double absTolerance, string what)
    {
        int m = q.M, k = q.K;
        float[] expected = new float[n * m];
        LutReference.Gemm(q, x, expected, n);
        double[] bound = new double[expected.Length];
        double rel = ResultComparer.DotTolerance(k + 16) * 2;
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
            {
                ReadOnlySpan<float> xj = x.AsSpan(j * k, k);
                double b = rel * LutReference.RoundingScale(q, r, xj);
                if (mode == LutTableMode.Int8) b += LutReference.Int8TableErrorBound(q, r, xj) * (1 + 1e-5);
                bound[j * m + r] = b;
            }
        var result = ResultComparer.Compare(expected, actual, bound, 1.0, absTolerance);
        Assert.True(result.Passed, $"{what}: {result}");
    }

    private static float[] Run(LutCase c, LutWeights w, float[] x, LutTableMode mode, IsaPath isa)
    {
        float[] y = Enumerable.Repeat(float.NaN, c.N * c.M).ToArray();
        float[] xCopy = (float[])x.Clone();
        LutGemm.Gemm(w, x, y, c.N, new LutGemmOptions { TableMode = mode }, new KernelOptions { Isa = isa });
        Assert.Equal(xCopy, x);
        return y;
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Gemm_Int8Tables_EachIsa_WithinStatedBound(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(Cases, c =>
        {
            var (q, w, x) = Make(c);
            CheckAgainstReference(c, q, x, Run(c, w, x, LutTableMode.Int8, isa), LutTableMode.Int8, isa.ToString());
        }).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Gemm_ExactTables_EachIsa_MatchesReferenceToRounding(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(Cases, c =>
        {
            var (q, w, x) = Make(c);
            CheckAgainstReference(c, q, x, Run(c, w, x, LutTableMode.Exact, isa), LutTableMode.Exact, isa.ToString());
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Gemm_BothTableModes_BitIdenticalAcrossIsaPaths()
    {
        Prop.ForAll(Cases, c =>
        {
            var (_, w, x) = Make(c);
            foreach (var mode in new[] { LutTableMode.Int8, LutTableMode.Exact })
            {
                float[] scalar = Run(c, w, x, mode, IsaPath.Scalar);
                foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
                    Assert.Equal(scalar, Run(c, w, x, mode, isa));
            }
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Gemm_EveryFormat_LargeParallel_WithinBound()
    {
        foreach (var f in new[] { LutFormat.Asymmetric(1), LutFormat.Asymmetric(2), LutFormat.Asymmetric(3), LutFormat.Asymmetric(4, 64), LutFormat.Symmetric(4, 32), LutFormat.Ternary() })
        {
            var c = new LutCase(f, 259, 1024 / f.GroupSize, 3, 11, TernaryScaleScope.PerTensor);
            var (q, w, x) = Make(c);
            CheckAgainstReference(c, q, x, Run(c, w, x, LutTableMode.Int8, IsaPath.Auto), LutTableMode.Int8, "auto");
        }
    }

    [Fact]
    public void Gemm_Int8Tables_SameForAnyThreadCountAndColumnBatching()
    {
        var c = new LutCase(LutFormat.Asymmetric(3, 64), 300, 8, 5, 21, TernaryScaleScope.PerTensor);
        var (_, w, x) = Make(c);
        float[] parallel = new float[c.N * c.M], single = new float[c.N * c.M], batched = new float[c.N * c.M];
        LutGemm.Gemm(w, x, parallel, c.N);
        LutGemm.Gemm(w, x, single, c.N, null, new KernelOptions { MaxDegreeOfParallelism = 1 });
        LutGemm.GemmWithTableBudget(w, x, batched, c.N, LutGemmOptions.Default, 2 * c.K * 4); // 2 vectors per batch
        Assert.Equal(parallel, single);
        Assert.Equal(parallel, batched);
        var exact = new LutGemmOptions { TableMode = LutTableMode.Exact };
        LutGemm.Gemm(w, x, parallel, c.N, exact);
        LutGemm.GemmWithTableBudget(w, x, batched, c.N, exact, 1);
        Assert.Equal(parallel, batched);
    }

    [Fact]
    public void Gemm_N512_WithinBound()
    {
        var c = new LutCase(LutFormat.Ternary(64), 70, 1, 512, 13, TernaryScaleScope.PerRow);
        var (q, w, x) = Make(c);
        CheckAgainstReference(c, q, x, Run(c, w, x, LutTableMode.Int8, IsaPath.Auto), LutTableMode.Int8, "auto");
    }

    [Fact]
    public void Gemm_Bf16Activations_MatchFp32Activations()
    {
        var c = new LutCase(LutFormat.Asymmetric(2), 70, 2, 3, 5, TernaryScaleScope.PerTensor);
        var (_, w, x) = Make(c);
        var xb = x.Select(v => (BFloat16)v).ToArray();
        var xr = xb.Select(v => (float)v).ToArray();
        float[] a = new float[c.N * c.M], b = new float[c.N * c.M];
        LutGemm.Gemm(w, xb, a, c.N);
        LutGemm.Gemm(w, xr, b, c.N);
        Assert.Equal(b, a);
    }

    [Fact]
    public void Gemm_StatedBoundIsTight_ErrorNonZeroButBelowBound()
    {
        // Sanity: the int8 mode really quantizes (error > 0) and the bound is not vacuous (error ≥ 0.1% of it somewhere).
        var c = new LutCase(LutFormat.Asymmetric(4), 64, 4, 1, 3, TernaryScaleScope.PerTensor);
        var (q, w, x) = Make(c);
        float[] y = Run(c, w, x, LutTableMode.Int8, IsaPath.Auto);
        float[] e = new float[c.M];
        LutReference.Gemm(q, x, e, 1);
        double worst = 0;
        for (int r = 0; r < c.M; r++) worst = Math.Max(worst, Math.Abs(e[r] - y[r]) / LutReference.Int8TableErrorBound(q, r, x));
        Assert.InRange(worst, 1e-3, 1.0);
    }

    [Fact]
    public void Gemm_EmptyShapes_DoNothing()
    {
        var q = LutQuantizer.Quantize(ReadOnlySpan<float>.Empty, 0, 128, LutFormat.Asymmetric(2));
        var w = BitPlanePacking.Pack(q);
        LutGemm.Gemm(w, new float[128], Span<float>.Empty, 1);
        var q2 = LutQuantizer.Quantize(new float[5 * 128], 5, 128, LutFormat.Asymmetric(2));
        LutGemm.Gemm(BitPlanePacking.Pack(q2), ReadOnlySpan<float>.Empty, Span<float>.Empty, 0);
        var q3 = LutQuantizer.Quantize(ReadOnlySpan<float>.Empty, 5, 0, LutFormat.Asymmetric(2));
        float[] y = Enumerable.Repeat(1f, 5).ToArray();
        LutGemm.Gemm(BitPlanePacking.Pack(q3), ReadOnlySpan<float>.Empty, y, 1);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Gemm_PartialTile_WritesOnlyItsOutputs()
    {
        // m = 70: the second tile has 6 real rows; y sits inside a larger buffer whose sentinels must survive every path.
        var c = new LutCase(LutFormat.Asymmetric(2, 32), 70, 2, 3, 8, TernaryScaleScope.PerTensor);
        var (_, w, x) = Make(c);
        foreach (var mode in new[] { LutTableMode.Int8, LutTableMode.Exact })
            foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
            {
                float[] buffer = Enumerable.Repeat(-12345f, c.N * c.M + 128).ToArray();
                LutGemm.Gemm(w, x, buffer.AsSpan(64, c.N * c.M), c.N, new LutGemmOptions { TableMode = mode }, new KernelOptions { Isa = isa });
                Assert.All(buffer[..64], v => Assert.Equal(-12345f, v));
                Assert.All(buffer[(64 + c.N * c.M)..], v => Assert.Equal(-12345f, v));
                Assert.DoesNotContain(-12345f, buffer[64..(64 + c.N * c.M)]);
            }
    }

    [Fact]
    public void Gemm_ThrowsForWrongLengths()
    {
        var w = BitPlanePacking.Pack(LutQuantizer.Quantize(new float[3 * 64], 3, 64, LutFormat.Asymmetric(2, 64)));
        var ex = Assert.Throws<ArgumentException>(() => LutGemm.Gemm(w, new float[63], new float[3], 1));
        Assert.Equal("x", ex.ParamName);
        Assert.Contains("64", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => LutGemm.Gemm(w, new float[64], new float[2], 1));
        Assert.Contains("y has 2 elements", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => LutGemm.Gemm(w, new float[64], new float[3], -1));
    }

    [Fact]
    public void Gemm_ThrowsForOverlappingOutput()
    {
        var w = BitPlanePacking.Pack(LutQuantizer.Quantize(new float[32 * 32], 32, 32, LutFormat.Asymmetric(2, 32)));
        var buf = new float[64];
        var ex = Assert.Throws<ArgumentException>(() => LutGemm.Gemm(w, buf.AsSpan(0, 32), buf.AsSpan(16, 32), 1));
        Assert.Contains("overlaps", ex.Message);
    }
}

public class LutDequantGemmTests
{
    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Gemm_EachIsa_MatchesReferenceToRounding(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(LutGemmTests.Cases, c =>
        {
            var (q, w, x) = LutGemmTests.Make(c);
            float[] y = new float[c.N * c.M];
            LutDequantGemm.Gemm(w, x, y, c.N, new KernelOptions { Isa = isa });
            LutGemmTests.CheckAgainstReference(c, q, x, y, LutTableMode.Exact, "dequant " + isa);
        }).QuickCheckThrowOnFailure();
    }
}
