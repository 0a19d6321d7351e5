using Kernels.Gpu;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Gpu;

/// <summary>Edge values on the ILGPU kernels (CPU accelerator, tiny shapes): huge and tiny activations through FP6/FP5,
/// where the GPU kernel differed from the oracle and the CPU backend.</summary>
[Collection(GpuCollection.Name)]
public class GpuEdgeValueTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    [Theory]
    [InlineData(FpxFormat.Fp6E3M2)]
    [InlineData(FpxFormat.Fp5E2M2)]
    public void FpxGemm_HugeAndTinyActivations_MatchReference(FpxFormat f)
    {
        // Decoded FP6/FP5 codes reach 28 / 7 before the row scale: w·x overflowed to ±Inf (or Inf − Inf = NaN) for |x| ≈ 3e37
        // and lost bits for |x| ≈ 1e-38. The CPU pre-scales each token by a power of two (docs/fpx.md); so must the GPU.
        int m = 3, k = 70, n = 2;
        var rng = new Random(5);
        var w = FpxWeights.Quantize(Inputs.Floats(rng, m * k), m, k, f);
        using var pw = _gpu.Prepare(w);
        foreach (float s in new[] { 3e37f, 1e30f, 1e-38f, 1e-30f })
        {
            float[] x = Inputs.Floats(rng, n * k, s);
            float[] e = new float[m * n];
            double[] mag = new double[m * n];
            FpxReference.Gemm(w, x, e, n, mag);
            using var xt = _gpu.Upload(x, n, k);
            using var yt = _gpu.Allocate<float>(n, m);
            _gpu.Gemm(pw, xt, yt);
            var r = ResultComparer.Compare(e, yt.ToArray(), mag, ResultComparer.DotTolerance(k), absTol: 1e-44);
            Assert.True(r.Passed, $"{f} scale {s}: {r}");
            Assert.Equal(x, xt.ToArray());
        }
    }

    [Fact]
    public void FpxGemm_NonFiniteActivations_StillPropagate()
    {
        var rng = new Random(3);
        var w = FpxWeights.Quantize(Inputs.Floats(rng, 2 * 40), 2, 40, FpxFormat.Fp6E3M2);
        float[] x = Inputs.Floats(rng, 3 * 40);
        x[5] = float.NaN;
        x[40 + 7] = float.PositiveInfinity;
        float[] e = new float[6];
        FpxReference.Gemm(w, x, e, 3);
        using var pw = _gpu.Prepare(w);
        using var xt = _gpu.Upload(x, 3, 40);
        using var yt = _gpu.Allocate<float>(3, 2);
        _gpu.Gemm(pw, xt, yt);
        float[] a = yt.ToArray();
        for (int i = 0; i < 6; i++)
            Assert.True(float.IsNaN(e[i]) ? float.IsNaN(a[i]) : float.IsInfinity(e[i]) ? e[i] == a[i] : float.IsFinite(a[i]), $"y[{i}]: reference {e[i]}, gpu {a[i]}");
    }
}
