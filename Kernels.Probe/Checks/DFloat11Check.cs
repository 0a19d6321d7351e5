using Kernels.Cpu.DFloat11;
using Kernels.Quant.DFloat11;
using Kernels.Quant.DFloat11.Reference;
using Kernels.Quant.Reference;

namespace Kernels.Probe.Checks;

/// <summary>DFloat11Decoder's public dispatcher (decompress and fused GEMM) against DFloat11Reference, bit-exact.</summary>
public sealed class DFloat11Check : IProbeCheck
{
    /// <inheritdoc/>
    public string Name => "dfloat11";

    /// <inheritdoc/>
    public string? Run()
    {
        var rng = new Random(42);
        foreach (int n in new[] { 0, 1, 100, 20_000 })
        {
            var v = new BFloat16[n];
            for (int i = 0; i < n; i++) v[i] = i % 5 == 0 ? BFloat16.FromBits((ushort)rng.Next(65536)) : (BFloat16)(float)(0.02 * (rng.NextDouble() - 0.5));
            var t = DFloat11Encoder.Encode(v);
            var d = new BFloat16[n];
            DFloat11Decoder.Decompress(t, d);
            for (int i = 0; i < n; i++)
                if (d[i].Bits != v[i].Bits) return $"decompress n={n} seed=42: element {i} is 0x{d[i].Bits:X4}, expected 0x{v[i].Bits:X4}";
            var r = DFloat11Reference.Decode(t);
            for (int i = 0; i < n; i++)
                if (r[i].Bits != v[i].Bits) return $"reference n={n}: element {i} differs";
        }
        int m = 33, k = 515;
        float[] wf = ProbeData.Floats(rng, m * k), x = ProbeData.Floats(rng, k);
        var w = wf.Select(f => (BFloat16)(f * 0.05f)).ToArray();
        var tw = DFloat11Encoder.Encode(w, new TensorShape(m, k));
        float[] yRef = new float[m], y = new float[m];
        double[] mag = new double[m];
        DenseReference.Gemm(w, x, yRef, m, k, 1);
        DenseReference.AbsGemm(w.Select(b => (float)b).ToArray(), x, mag, m, k, 1);
        DFloat11Decoder.Gemm(tw, x, y, m, k, 1);
        var cmp = ResultComparer.Compare(yRef, y, mag, ResultComparer.DotTolerance(k));
        return cmp.Passed ? null : $"gemm m={m} k={k}: {cmp}";
    }
}
