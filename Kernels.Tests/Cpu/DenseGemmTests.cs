using FsCheck;
using FsCheck.Fluent;
using Kernels.Cpu;
using Kernels.Cpu.Dense;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Cpu;

public class DenseGemmTests
{
    public sealed record GemmCase(int M, int K, int N, int Seed, bool Edges)
    {
        public override string ToString() => $"m={M} k={K} n={N} seed={Seed} edges={Edges}";
    }

    // Shapes: m = 1 and odd m, k around vector multiples (±1) and k = 0, n odd and even.
    internal static Arbitrary<GemmCase> Cases =>
        (from m in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 9), Gen.Choose(10, 70))
         from k in Gen.OneOf(Gen.Constant(0), Gen.Choose(1, 40), Gen.Elements(15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 255, 257, 515))
         from n in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 9), Gen.Elements(16, 17, 33))
         from seed in Gen.Choose(0, int.MaxValue)
         from edges in Gen.Elements(false, true)
         select new GemmCase(m, k, n, seed, edges)).ToArbitrary();

    private static void Check<TW>(GemmCase c, IsaPath isa, Func<float, TW> convert, Func<TW, float> back) where TW : unmanaged
    {
        var rng = new Random(c.Seed);
        float[] wf = Inputs.Floats(rng, c.M * c.K, 1f, c.Edges);
        TW[] w = wf.Select(convert).ToArray();
        float[] wExact = w.Select(back).ToArray();
        float[] x = Inputs.Floats(rng, c.N * c.K, 2f, c.Edges);
        float[] expected = new float[c.M * c.N], actual = new float[c.M * c.N];
        double[] mag = new double[c.M * c.N];
        DenseReference.Gemm(wExact, x, expected, c.M, c.K, c.N);
        DenseReference.AbsGemm(wExact, x, mag, c.M, c.K, c.N);
        float[] xCopy = (float[])x.Clone();
        if (typeof(TW) == typeof(float)) DenseGemm.Gemm((float[])(object)w, x, actual, c.M, c.K, c.N, new KernelOptions { Isa = isa });
        else DenseGemm.Gemm((BFloat16[])(object)w, x, actual, c.M, c.K, c.N, new KernelOptions { Isa = isa });
        var r = ResultComparer.Compare(expected, actual, mag, ResultComparer.DotTolerance(c.K), ResultComparer.DotUnderflow(c.K));
        Assert.True(r.Passed, $"{typeof(TW).Name} {isa} {c}: {r}");
        Assert.Equal(xCopy, x); // inputs are never modified
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Gemm_F32_EachIsa_MatchesReference(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return; // unsupported on this machine: covered by the child-process tests elsewhere
        Prop.ForAll(Cases, c => Check(c, isa, v => v, v => v)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Gemm_Bf16_EachIsa_MatchesReference(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(Cases, c => Check(c, isa, v => (BFloat16)v, v => (float)v)).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Gemm_LargeParallel_MatchesReference()
    {
        var c = new GemmCase(259, 1031, 3, 7, false);
        Check(c, IsaPath.Auto, v => v, v => v);
        Check(c, IsaPath.Auto, v => (BFloat16)v, v => (float)v);
    }

    [Fact]
    public void Gemm_Subnormals_MatchReference()
    {
        var rng = new Random(42);
        int m = 5, k = 77, n = 2;
        float[] w = Inputs.Subnormals(rng, m * k), x = Inputs.Floats(rng, n * k, 4f);
        float[] e = new float[m * n], a = new float[m * n];
        double[] mag = new double[m * n];
        DenseReference.Gemm(w, x, e, m, k, n);
        DenseReference.AbsGemm(w, x, mag, m, k, n);
        foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
        {
            DenseGemm.Gemm(w, x, a, m, k, n, new KernelOptions { Isa = isa });
            var r = ResultComparer.Compare(e, a, mag, ResultComparer.DotTolerance(k), absTol: 1e-45);
            Assert.True(r.Passed, $"{isa}: {r}");
        }
    }

    [Fact]
    public void Gemm_ThrowsForTooShortDestination()
    {
        var ex = Assert.Throws<ArgumentException>(() => DenseGemm.Gemm(new float[12], new float[4], new float[2], 3, 4, 1));
        Assert.Contains("y has 2 elements", ex.Message);
        Assert.Contains("3", ex.Message);
    }

    [Fact]
    public void Gemm_ThrowsForWrongWeightLength()
    {
        var ex = Assert.Throws<ArgumentException>(() => DenseGemm.Gemm(new float[11], new float[4], new float[3], 3, 4, 1));
        Assert.Equal("weights", ex.ParamName);
        Assert.Contains("12", ex.Message);
    }

    [Fact]
    public void Gemm_ThrowsForOverlappingOutput()
    {
        var buffer = new float[32];
        var ex = Assert.Throws<ArgumentException>(() => DenseGemm.Gemm(buffer.AsSpan(0, 16), new float[4], buffer.AsSpan(8, 4), 4, 4, 1));
        Assert.Contains("overlaps", ex.Message);
    }

    [Fact]
    public void Gemm_ThrowsForNegativeSize() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => DenseGemm.Gemm(new float[0], new float[0], new float[0], -1, 0, 0));

    [Fact]
    public void Gemm_RowRange_WritesOnlyItsRows()
    {
        if (!CpuIsa.IsSupported(IsaPath.Avx2)) return;
        int m = 12, k = 19, n = 2;
        var rng = new Random(3);
        float[] w = Inputs.Floats(rng, m * k), x = Inputs.Floats(rng, n * k);
        float[] y = Enumerable.Repeat(-7f, m * n).ToArray();
        unsafe
        {
            fixed (float* pw = w, px = x, py = y) DenseGemm.Avx2(pw, px, py, m, k, n, 4, 5);
        }
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
                Assert.Equal(r is >= 4 and < 9, y[j * m + r] != -7f);
    }
}
