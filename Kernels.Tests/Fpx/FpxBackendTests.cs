using Kernels.Cpu;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Fpx;

public class FpxBackendTests
{
    [Fact]
    public void CpuBackend_Gemm_MatchesReference_ForEveryWeightKind()
    {
        using var cpu = new CpuBackend();
        IFpxOps ops = cpu;
        var rng = new Random(4);
        int m = 9, k = 100, n = 3;
        float[] x = Inputs.Floats(rng, n * k);
        using var xt = cpu.Upload(x, n, k);
        using var yt = cpu.Allocate<float>(n, m);
        float[] e = new float[m * n];
        double[] mag = new double[m * n];

        var f = FpxGemmTests.RandomWeights(rng, m, k, FpxFormat.Fp6E3M2);
        using (var pw = ops.Prepare(f))
        {
            ops.Gemm(pw, xt, yt);
            FpxReference.Gemm(f, x, e, n, mag);
            Assert.True(ResultComparer.Compare(e, yt.ToArray(), mag, ResultComparer.DotTolerance(k)).Passed);
        }

        var i6 = Int6GemmTests.RandomWeights(rng, m, k, 64);
        using var pi = ops.Prepare(i6);
        ops.Gemm(pi, xt, yt, Int6Mode.W6A16);
        FpxReference.GemmW6A16(i6, x, e, n, mag);
        Assert.True(ResultComparer.Compare(e, yt.ToArray(), mag, ResultComparer.DotTolerance(k)).Passed);
    }

    [Fact]
    public void CpuBackend_Gemm_RejectsWrongShapeAndDisposedWeights()
    {
        using var cpu = new CpuBackend();
        var pw = cpu.Prepare(FpxGemmTests.RandomWeights(new Random(1), 4, 8, FpxFormat.Fp5E2M2));
        using var x = cpu.Allocate<float>(2, 7);
        using var y = cpu.Allocate<float>(2, 4);
        Assert.Contains("[n, 8]", Assert.Throws<ArgumentException>(() => cpu.Gemm(pw, x, y)).Message);
        pw.Dispose();
        using var x8 = cpu.Allocate<float>(2, 8);
        Assert.Throws<ObjectDisposedException>(() => cpu.Gemm(pw, x8, y));
    }
}
