using Kernels.Cpu.Lut;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;

namespace Kernels.Probe.Checks;

/// <summary>LutGemm's public dispatcher (int8 and exact tables, fp32 activations) against LutReference, every format.</summary>
public sealed class LutCheck : IProbeCheck
{
    /// <inheritdoc/>
    public string Name => "lut-gemm";

    /// <inheritdoc/>
    public string? Run()
    {
        var rng = new Random(42);
        var formats = new[] { LutFormat.Asymmetric(1, 32), LutFormat.Asymmetric(2, 64), LutFormat.Symmetric(3, 128), LutFormat.Asymmetric(4, 32), LutFormat.Ternary(64) };
        foreach (var f in formats)
            foreach (var (m, groups, n) in new[] { (1, 1, 1), (65, 2, 3), (130, 3, 1) })
            {
                int k = groups * f.GroupSize;
                var q = LutQuantizer.Quantize(ProbeData.Floats(rng, m * k), m, k, f);
                var w = BitPlanePacking.Pack(q);
                float[] x = ProbeData.Floats(rng, n * k);
                float[] expected = new float[n * m], y = new float[n * m];
                LutReference.Gemm(q, x, expected, n);
                foreach (var mode in new[] { LutTableMode.Int8, LutTableMode.Exact })
                {
                    LutGemm.Gemm(w, x, y, n, new LutGemmOptions { TableMode = mode });
                    var bound = new double[n * m];
                    for (int j = 0; j < n; j++)
                        for (int r = 0; r < m; r++)
                        {
                            var xj = x.AsSpan(j * k, k);
                            bound[j * m + r] = 2 * ResultComparer.DotTolerance(k + 16) * LutReference.RoundingScale(q, r, xj)
                                + (mode == LutTableMode.Int8 ? LutReference.Int8TableErrorBound(q, r, xj) * (1 + 1e-5) : 0);
                        }
                    var res = ResultComparer.Compare(expected, y, bound, 1.0, 1e-30);
                    if (!res.Passed) return $"{f} {mode} m={m} k={k} n={n} seed=42: {res}";
                }
            }
        return null;
    }
}
