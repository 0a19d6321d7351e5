using BenchmarkDotNet.Attributes;
using Kernels.Cpu.Lut;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Bdn;

/// <summary>BenchmarkDotNet: LUT GEMV/GEMM (int8 tables) vs the dequantize-then-multiply kernel over the same packed weights.
/// Run: <c>-- bdn --filter *LutBenchmarks*</c>.</summary>
[MemoryDiagnoser]
public class LutBenchmarks
{
    private LutWeights _w = null!;
    private float[] _x = [];
    private float[] _y = [];

    [Params("4096x4096", "4096x14336", "3079x4096")]
    public string Shape { get; set; } = "4096x4096";

    [Params(1, 2, 4)]
    public int Bits { get; set; }

    [Params(1, 8)]
    public int N { get; set; }

    private int M => int.Parse(Shape.Split('x')[0]);

    private int K => int.Parse(Shape.Split('x')[1]);

    [GlobalSetup]
    public void Setup()
    {
        var f = LutFormat.Asymmetric(Bits, 128);
        // Quantize 64 real rows (checked against the oracle), tile them to M rows.
        float[] w64 = Suites.DenseSuite.RandomFloats(64 * K, 1, 0.05f);
        var q64 = LutQuantizer.Quantize(w64, 64, K, f);
        var p64 = BitPlanePacking.Pack(q64);
        int tiles = (M + 63) / 64;
        var planes = new byte[LutWeights.PlaneBytesFor(f, M, K)];
        var scales = new BFloat16[LutWeights.ScaleCountFor(f, M, K)];
        var offsets = new BFloat16[scales.Length];
        for (int t = 0; t < tiles; t++)
        {
            p64.Planes.CopyTo(planes, (long)t * p64.Planes.Length);
            p64.Scales.CopyTo(scales, (long)t * p64.Scales.Length);
            p64.Offsets.CopyTo(offsets, (long)t * p64.Offsets.Length);
        }
        _w = new LutWeights(f, M, K, planes, scales, offsets);
        _x = Suites.DenseSuite.RandomFloats(N * K, 2);
        _y = new float[N * M];
        LutGemm.Gemm(_w, _x, _y, N);
        var expected = new float[N * 64];
        LutReference.Gemm(q64, _x, expected, N);
        for (int j = 0; j < N; j++)
            for (int r = 0; r < 64; r++)
            {
                double bound = LutReference.Int8TableErrorBound(q64, r, _x.AsSpan(j * K, K)) * 1.001 + 1e-3;
                if (Math.Abs(expected[j * 64 + r] - _y[j * M + r]) > bound) throw new InvalidOperationException("LutGemm does not match the reference");
            }
    }

    [Benchmark(Baseline = true)]
    public void Dequant() => LutDequantGemm.Gemm(_w, _x, _y, N);

    [Benchmark]
    public void Lut() => LutGemm.Gemm(_w, _x, _y, N);
}
