using BenchmarkDotNet.Attributes;
using Kernels.Cpu.Dense;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Bdn;

/// <summary>BenchmarkDotNet: dense GEMV/GEMM (fp32 and bf16 weights). Run: <c>-- bdn --filter *DenseBenchmarks*</c>.</summary>
[MemoryDiagnoser]
public class DenseBenchmarks
{
    private float[] _wf = [];
    private BFloat16[] _wb = [];
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
        _wf = Suites.DenseSuite.RandomFloats(M * K, 1, 0.05f);
        _wb = _wf.Select(v => (BFloat16)v).ToArray();
        _x = Suites.DenseSuite.RandomFloats(N * K, 2);
        _y = new float[N * M];
        // Check once against the oracle (first 8 rows).
        var yr = new float[N * 8];
        DenseReference.Gemm(_wf.AsSpan(0, 8 * K), _x, yr, 8, K, N);
        DenseGemm.Gemm(_wf, _x, _y, M, K, N);
        for (int j = 0; j < N; j++)
            for (int r = 0; r < 8; r++)
                if (Math.Abs(yr[j * 8 + r] - _y[j * M + r]) > 1e-3f) throw new InvalidOperationException("DenseGemm does not match the reference");
    }

    [Benchmark(Baseline = true)]
    public void Bf16() => DenseGemm.Gemm(_wb, _x, _y, M, K, N);

    [Benchmark]
    public void F32() => DenseGemm.Gemm(_wf, _x, _y, M, K, N);
}
