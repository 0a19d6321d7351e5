using Kernels.Cpu.Fpx;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;

namespace Kernels.Probe.Checks;

/// <summary>FpxGemm (FP6/FP5, fused GEMV/GEMM and dequantize) and Int6Gemm (W6A16, W6A8) public dispatchers against FpxReference.</summary>
public sealed class FpxCheck : IProbeCheck
{
    /// <inheritdoc/>
    public string Name => "fpx";

    /// <inheritdoc/>
    public string? Run()
    {
        // Reported so a child-process test can assert that DOTNET_EnableAVX512v2=0 (VBMI off) took effect (the vpshufb fallbacks).
        Console.WriteLine($"fact Avx512Vbmi={System.Runtime.Intrinsics.X86.Avx512Vbmi.IsSupported}");
        Console.WriteLine($"fact Gfni={System.Runtime.Intrinsics.X86.Gfni.V512.IsSupported}"); // DOTNET_EnableGFNI=0: the vpermb H/L decode
        var rng = new Random(42);
        foreach (var (m, k, n) in new[] { (1, 1, 1), (7, 65, 1), (17, 200, 3), (33, 515, 5), (9, 1024, 9) })
        {
            float[] x = ProbeData.Floats(rng, n * k);
            float[] e = new float[m * n], a = new float[m * n];
            double[] mag = new double[m * n];
            foreach (var f in new[] { FpxFormat.Fp6E3M2, FpxFormat.Fp5E2M2 })
            {
                var w = FpxWeights.Quantize(ProbeData.Floats(rng, m * k), m, k, f);
                FpxReference.Gemm(w, x, e, n, mag);
                FpxGemm.Gemm(w, x, a, n);
                var r = ResultComparer.Compare(e, a, mag, ResultComparer.DotTolerance(k));
                if (!r.Passed) return $"{f} m={m} k={k} n={n} seed=42: {r}";
                float[] de = new float[m * k], da = new float[m * k];
                FpxReference.Dequantize(w, de);
                FpxGemm.Dequantize(w, da);
                if (!de.AsSpan().SequenceEqual(da)) return $"{f} dequantize m={m} k={k} not bit-exact";
            }
            var i6 = Int6Weights.Quantize(ProbeData.Floats(rng, m * k), m, k, 64);
            FpxReference.GemmW6A16(i6, x, e, n, mag);
            Int6Gemm.GemmW6A16(i6, x, a, n);
            var r6 = ResultComparer.Compare(e, a, mag, ResultComparer.DotTolerance(k));
            if (!r6.Passed) return $"W6A16 m={m} k={k} n={n} seed=42: {r6}";
            var xq = new sbyte[n * k];
            var xs = new float[n];
            FpxReference.QuantizeActivations(x, k, xq, xs);
            FpxReference.GemmW6A8(i6, xq, xs, e, mag);
            Int6Gemm.GemmW6A8(i6, x, a, n);
            r6 = ResultComparer.Compare(e, a, mag, ResultComparer.DotTolerance(i6.GroupsPerRow + 18));
            if (!r6.Passed) return $"W6A8 m={m} k={k} n={n} seed=42: {r6}";
        }
        return null;
    }
}
