using Kernels.Cpu;
using Kernels.Gpu;
using Kernels.Quant.Lut;
using Kernels.Tests.Gpu;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Lut;

[Collection(GpuCollection.Name)]
public class LutGpuTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    [Theory]
    [InlineData(LutQuantKind.Asymmetric, 1, 32, 1, 1)]
    [InlineData(LutQuantKind.Asymmetric, 2, 64, 70, 2)]
    [InlineData(LutQuantKind.Symmetric, 3, 32, 5, 1)]
    [InlineData(LutQuantKind.Asymmetric, 4, 128, 9, 2)]
    [InlineData(LutQuantKind.Ternary, 2, 32, 65, 1)]
    public void LutGemm_BothTableModes_MatchReference(LutQuantKind kind, int bits, int gs, int m, int n)
    {
        var f = new LutFormat(kind, bits, gs);
        var c = new LutGemmTests.LutCase(f, m, 128 / gs + 1, n, m * 31 + bits, TernaryScaleScope.PerRow);
        var (q, w, x) = LutGemmTests.Make(c);
        using var pw = _gpu.PrepareLut(w);
        using var xt = _gpu.Upload(x, n, c.K);
        using var yt = _gpu.Allocate<float>(n, m);
        foreach (var mode in new[] { LutTableMode.Int8, LutTableMode.Exact })
        {
            _gpu.LutGemm(pw, xt, yt, new LutGemmOptions { TableMode = mode });
            LutGemmTests.CheckAgainstReference(c, q, x, yt.ToArray(), mode, "gpu");
        }
    }

    [Fact]
    public void LutGemm_Int8Tables_TinyActivations_StayWithinBound()
    {
        // A group of activations near 1e-38 has a table scale below 2^-128, whose inverse overflows fp32: the kernel divides
        // by the scale then, as the CPU table builder does (EdgeValueRegressionTests), instead of saturating every entry.
        int m = 5, k = 64, n = 2;
        var rng = new Random(11);
        float[] w = Inputs.Floats(rng, m * k, 1e20f);
        var q = LutQuantizer.Quantize(w, m, k, LutFormat.Asymmetric(4, 32));
        float[] x = new float[n * k];
        for (int i = 0; i < k; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * 1e-38);
        for (int i = k; i < 2 * k; i++) x[i] = BitConverter.Int32BitsToSingle(rng.Next(0, 0xFFFF) | (rng.Next(2) << 31));
        using var pw = _gpu.PrepareLut(BitPlanePacking.Pack(q));
        using var xt = _gpu.Upload(x, n, k);
        using var yt = _gpu.Allocate<float>(n, m);
        _gpu.LutGemm(pw, xt, yt, new LutGemmOptions { TableMode = LutTableMode.Int8 });
        LutGemmTests.CheckAgainstReference(q, x, yt.ToArray(), n, LutTableMode.Int8, 1e-24, "gpu tiny activations");
    }

    [Fact]
    public void LutGemm_SameInterfaceOnCpu_MatchesGpuWithinBound()
    {
        var c = new LutGemmTests.LutCase(LutFormat.Asymmetric(2, 32), 33, 2, 2, 5, TernaryScaleScope.PerTensor);
        var (q, w, x) = LutGemmTests.Make(c);
        using var cpu = new CpuBackend();
        foreach (ILutGemmOps ops in new ILutGemmOps[] { cpu, _gpu })
        {
            var backend = (IKernelBackend)ops;
            using var pw = ops.PrepareLut(w);
            using var xt = backend.Allocate<float>(c.N, c.K);
            xt.CopyFrom(x);
            using var yt = backend.Allocate<float>(c.N, c.M);
            ops.LutGemm(pw, xt, yt);
            LutGemmTests.CheckAgainstReference(c, q, x, yt.ToArray(), LutTableMode.Int8, backend.Name);
        }
    }

    [Fact]
    public void LutGemm_RejectsForeignWeightsAndBadShapes()
    {
        var w = BitPlanePacking.Pack(LutQuantizer.Quantize(new float[4 * 32], 4, 32, LutFormat.Asymmetric(2, 32)));
        using var cpu = new CpuBackend();
        using var cpuWeights = cpu.PrepareLut(w);
        using var x = _gpu.Allocate<float>(1, 32);
        using var y = _gpu.Allocate<float>(1, 4);
        var ex = Assert.Throws<ArgumentException>(() => _gpu.LutGemm(cpuWeights, x, y));
        Assert.Contains("prepared on backend 'cpu'", ex.Message);
        using var gw = _gpu.PrepareLut(w);
        using var badX = _gpu.Allocate<float>(1, 31);
        ex = Assert.Throws<ArgumentException>(() => _gpu.LutGemm(gw, badX, y));
        Assert.Contains("[n, 32]", ex.Message);
        using var badY = _gpu.Allocate<float>(1, 5);
        ex = Assert.Throws<ArgumentException>(() => _gpu.LutGemm(gw, x, badY));
        Assert.Contains("[1, 4]", ex.Message);
    }
}
