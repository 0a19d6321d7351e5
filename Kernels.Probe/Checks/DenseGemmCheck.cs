using Kernels.Cpu.Dense;
using Kernels.Quant.Reference;

namespace Kernels.Probe.Checks;

/// <summary>DenseGemm's public dispatcher (fp32 and bf16 weights) against DenseReference.</summary>
public sealed class DenseGemmCheck : IProbeCheck
{
    /// <inheritdoc/>
    public string Name => "dense-gemm";

    /// <inheritdoc/>
    public string? Run()
    {
        var rng = new Random(42);
        foreach (var (m, k, n) in new[] { (1, 1, 1), (7, 33, 1), (17, 127, 3), (64, 515, 5), (9, 1024, 17) })
        {
            float[] w = ProbeData.Floats(rng, m * k), x = ProbeData.Floats(rng, n * k);
            float[] yRef = new float[m * n], y = new float[m * n];
            double[] mag = new double[m * n];
            DenseReference.Gemm(w, x, yRef, m, k, n);
            DenseReference.AbsGemm(w, x, mag, m, k, n);
            DenseGemm.Gemm(w, x, y, m, k, n);
            var r = ResultComparer.Compare(yRef, y, mag, ResultComparer.DotTolerance(k));
            if (!r.Passed) return $"f32 m={m} k={k} n={n} seed=42: {r}";

            var wb = w.Select(v => (BFloat16)v).ToArray();
            float[] wbf = wb.Select(v => (float)v).ToArray();
            DenseReference.Gemm(wb, x, yRef, m, k, n);
            DenseReference.AbsGemm(wbf, x, mag, m, k, n);
            DenseGemm.Gemm(wb, x, y, m, k, n);
            r = ResultComparer.Compare(yRef, y, mag, ResultComparer.DotTolerance(k));
            if (!r.Passed) return $"bf16 m={m} k={k} n={n} seed=42: {r}";
        }
        return null;
    }
}
