using Kernels.Gpu;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;
using Kernels.Tests.Gpu;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Fpx;

[Collection(GpuCollection.Name)]
public class FpxGpuTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    [Theory]
    [InlineData(1, 1, 1, FpxFormat.Fp6E3M2)]
    [InlineData(5, 70, 2, FpxFormat.Fp6E3M2)]
    [InlineData(6, 129, 1, FpxFormat.Fp5E2M2)]
    [InlineData(3, 0, 2, FpxFormat.Fp5E2M2)]
    [InlineData(2, 543, 1, FpxFormat.Fp6E3M2)] // four unrolled steps of 128 columns per lane, then a remainder
    [InlineData(2, 400, 1, FpxFormat.Fp5E2M2)]
    public void Gemm_Fpx_MatchesReference(int m, int k, int n, FpxFormat f)
    {
        var rng = new Random(m * 100 + k);
        var w = FpxGemmTests.RandomWeights(rng, m, k, f);
        float[] x = Inputs.Floats(rng, n * k, 2f);
        float[] e = new float[m * n];
        double[] mag = new double[m * n];
        FpxReference.Gemm(w, x, e, n, mag);
        using var pw = _gpu.Prepare(w);
        using var xt = _gpu.Upload(x, n, k);
        using var yt = _gpu.Allocate<float>(n, m);
        _gpu.Gemm(pw, xt, yt);
        var r = ResultComparer.Compare(e, yt.ToArray(), mag, ResultComparer.DotTolerance(k));
        Assert.True(r.Passed, $"{f} m={m} k={k} n={n}: {r}");
    }

    [Theory]
    [InlineData(4, 130, 2, 64)]
    [InlineData(3, 200, 1, 128)]
    [InlineData(2, 600, 1, 64)] // four unrolled steps, groups changing inside them
    public void Gemm_Int6_BothModes_MatchReference(int m, int k, int n, int g)
    {
        var rng = new Random(m + k);
        var w = Int6GemmTests.RandomWeights(rng, m, k, g);
        float[] x = Inputs.Floats(rng, n * k, 2f);
        using var pw = _gpu.Prepare(w);
        using var xt = _gpu.Upload(x, n, k);
        using var yt = _gpu.Allocate<float>(n, m);

        float[] e = new float[m * n];
        double[] mag = new double[m * n];
        FpxReference.GemmW6A16(w, x, e, n, mag);
        _gpu.Gemm(pw, xt, yt, Int6Mode.W6A16);
        var r = ResultComparer.Compare(e, yt.ToArray(), mag, ResultComparer.DotTolerance(k));
        Assert.True(r.Passed, $"W6A16 m={m} k={k} n={n}: {r}");

        var xq = new sbyte[n * k];
        var xs = new float[n];
        FpxReference.QuantizeActivations(x, k, xq, xs);
        FpxReference.GemmW6A8(w, xq, xs, e, mag);
        _gpu.Gemm(pw, xt, yt, Int6Mode.W6A8);
        r = ResultComparer.Compare(e, yt.ToArray(), mag, ResultComparer.DotTolerance(w.GroupsPerRow + 18));
        Assert.True(r.Passed, $"W6A8 m={m} k={k} n={n}: {r}");
    }

    [Fact]
    public void Gemm_RejectsCpuPreparedWeights()
    {
        using var cpu = new Kernels.Cpu.CpuBackend();
        using var pw = cpu.Prepare(FpxGemmTests.RandomWeights(new Random(1), 2, 3, FpxFormat.Fp6E3M2));
        using var x = _gpu.Allocate<float>(1, 3);
        using var y = _gpu.Allocate<float>(1, 2);
        var ex = Assert.Throws<ArgumentException>(() => _gpu.Gemm(pw, x, y));
        Assert.Contains("cpu", ex.Message);
    }
}
