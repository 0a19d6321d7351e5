using BenchmarkDotNet.Attributes;
using Kernels.Cpu.Dense;
using Kernels.Cpu.Fpx;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Bdn;

/// <summary>BenchmarkDotNet: FP6/FP5/INT6 GEMV/GEMM vs dense bf16. Run: <c>-- bdn --filter *FpxBenchmarks*</c>.</summary>
[MemoryDiagnoser]
public class FpxBenchmarks
{
    private BFloat16[] _dense = [];
    private FpxWeights _fp6 = null!;
    private FpxWeights _fp5 = null!;
    private Int6Weights _int6 = null!;
    private float[] _x = [];
    private float[] _y = [];

    [Params("4096x4096", "11008x4096", "3079x4103")]
    public string Shape { get; set; } = "4096x4096";

    [Params(1, 8)]
    public int N { get; set; }

    private int M => int.Parse(Shape.Split('x')[0]);

    private int K => int.Parse(Shape.Split('x')[1]);

    [GlobalSetup]
    public void Setup()
    {
        float[] w = Suites.DenseSuite.RandomFloats(M * K, 1, 0.05f);
        _dense = w.Select(v => (BFloat16)v).ToArray();
        _fp6 = FpxWeights.Quantize(w, M, K, FpxFormat.Fp6E3M2);
        _fp5 = FpxWeights.Quantize(w, M, K, FpxFormat.Fp5E2M2);
        _int6 = Int6Weights.Quantize(w, M, K, 128);
        _x = Suites.DenseSuite.RandomFloats(N * K, 2);
        _y = new float[N * M];
        // Check once against the oracle (whole output; a few seconds at most).
        var e = new float[N * M];
        var mag = new double[N * M];
        FpxReference.Gemm(_fp6, _x, e, N, mag);
        FpxGemm.Gemm(_fp6, _x, _y, N);
        var r = ResultComparer.Compare(e, _y, mag, ResultComparer.DotTolerance(K));
        if (!r.Passed) throw new InvalidOperationException($"FpxGemm does not match the reference: {r}");
    }

    [Benchmark(Baseline = true)]
    public void DenseBf16() => DenseGemm.Gemm(_dense, _x, _y, M, K, N);

    [Benchmark]
    public void Fp6() => FpxGemm.Gemm(_fp6, _x, _y, N);

    [Benchmark]
    public void Fp5() => FpxGemm.Gemm(_fp5, _x, _y, N);

    [Benchmark]
    public void Int6W6A16() => Int6Gemm.GemmW6A16(_int6, _x, _y, N);

    [Benchmark]
    public void Int6W6A8() => Int6Gemm.GemmW6A8(_int6, _x, _y, N);
}
