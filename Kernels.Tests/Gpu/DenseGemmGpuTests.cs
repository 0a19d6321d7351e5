using FsCheck;
using FsCheck.Fluent;
using Kernels.Gpu;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Gpu;

[Collection(GpuCollection.Name)]
public class DenseGemmGpuTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(5, 33, 1)]
    [InlineData(9, 70, 3)]
    [InlineData(4, 0, 2)]
    [InlineData(6, 64, 1)]
    [InlineData(5, 36, 11)]
    [InlineData(3, 4, 9)]
    [InlineData(5, 1028, 1)]
    public void Gemm_F32AndBf16_MatchReference(int m, int k, int n)
    {
        var rng = new Random(m * 1000 + k);
        float[] w = Inputs.Floats(rng, m * k, 1f, edges: true, edgeEvery: 40), x = Inputs.Floats(rng, n * k);
        float[] expected = new float[m * n];
        double[] mag = new double[m * n];
        DenseReference.Gemm(w, x, expected, m, k, n);
        DenseReference.AbsGemm(w, x, mag, m, k, n);
        using var wt = _gpu.Upload(w, m, k);
        using var xt = _gpu.Upload(x, n, k);
        using var yt = _gpu.Allocate<float>(n, m);
        _gpu.Gemm(wt, xt, yt);
        var r = ResultComparer.Compare(expected, yt.ToArray(), mag, ResultComparer.DotTolerance(k), ResultComparer.DotUnderflow(k));
        Assert.True(r.Passed, $"f32 m={m} k={k} n={n}: {r}");

        var wb = w.Select(v => (BFloat16)v).ToArray();
        DenseReference.Gemm(wb, x, expected, m, k, n);
        DenseReference.AbsGemm(wb.Select(v => (float)v).ToArray(), x, mag, m, k, n);
        using var wbt = _gpu.Upload(wb, m, k);
        _gpu.Gemm(wbt, xt, yt);
        r = ResultComparer.Compare(expected, yt.ToArray(), mag, ResultComparer.DotTolerance(k), ResultComparer.DotUnderflow(k));
        Assert.True(r.Passed, $"bf16 m={m} k={k} n={n}: {r}");
    }

    [Fact]
    public void Gemm_RandomShapes_MatchReference()
    {
        // Tiny shapes: ILGPU's CPU accelerator runs one OS thread per GPU thread.
        var cases = (from m in Gen.Choose(1, 9)
                     from k in Gen.Elements(0, 1, 3, 4, 8, 17, 64, 68, 131)
                     from n in Gen.Elements(1, 2, 8, 9)
                     select (m, k, n)).ToArbitrary();
        Prop.ForAll(cases, c => Gemm_F32AndBf16_MatchReference(c.m, c.k, c.n))
            .Check(Config.QuickThrowOnFailure.WithMaxTest(12));
    }

    [Fact]
    public void Gemm_RejectsCpuTensors()
    {
        using var cpu = new Kernels.Cpu.CpuBackend();
        using var w = cpu.Upload(new float[4], 2, 2);
        using var x = _gpu.Allocate<float>(1, 2);
        using var y = _gpu.Allocate<float>(1, 2);
        var ex = Assert.Throws<ArgumentException>(() => _gpu.Gemm(w, x, y));
        Assert.Contains("cpu", ex.Message);
    }

    [Fact]
    public void Describe_NamesTheAccelerator()
    {
        var info = _gpu.Describe();
        Assert.Equal("ilgpu-cpu", info.Backend);
        Assert.Contains("warp 32", info.CodePath);
    }
}
