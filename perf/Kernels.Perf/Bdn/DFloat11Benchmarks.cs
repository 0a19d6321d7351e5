using BenchmarkDotNet.Attributes;
using Kernels.Cpu.Dense;
using Kernels.Cpu.DFloat11;
using Kernels.Quant.DFloat11;
using Kernels.Quant.DFloat11.Reference;

namespace Kernels.Perf.Bdn;

/// <summary>BenchmarkDotNet: DFloat11 decompression and fused GEMV vs dense bf16 GEMV. Run: <c>-- bdn --filter *DFloat11Benchmarks*</c>.</summary>
[MemoryDiagnoser]
public class DFloat11Benchmarks
{
    private BFloat16[] _w = [];
    private BFloat16[] _out = [];
    private DFloat11Tensor _t = null!;
    private float[] _x = [];
    private float[] _y = [];
    private readonly KernelOptions _oneThread = new() { MaxDegreeOfParallelism = 1 };

    [Params("4096x4096", "3079x4103")]
    public string Shape { get; set; } = "4096x4096";

    private int M => int.Parse(Shape.Split('x')[0]);

    private int K => int.Parse(Shape.Split('x')[1]);

    [GlobalSetup]
    public void Setup()
    {
        _w = Suites.DFloat11Suite.GaussianWeights(M * K, 1);
        _t = DFloat11Encoder.Encode(_w, new TensorShape(M, K));
        _out = new BFloat16[M * K];
        _x = Suites.DenseSuite.RandomFloats(K, 2);
        _y = new float[M];
        // Check once: the fast decoder and the reference decoder give the original bits.
        DFloat11Decoder.Decompress(_t, _out);
        if (!_out.AsSpan().SequenceEqual(_w)) throw new InvalidOperationException("DFloat11Decoder does not round-trip");
        var head = DFloat11Reference.Decode(DFloat11Encoder.Encode(_w.AsSpan(0, 50_000)));
        if (!head.AsSpan().SequenceEqual(_w.AsSpan(0, 50_000))) throw new InvalidOperationException("DFloat11Reference does not round-trip");
    }

    [Benchmark(Baseline = true)]
    public void DenseBf16Gemv() => DenseGemm.Gemm(_w, _x, _y, M, K, 1);

    [Benchmark]
    public void FusedDf11Gemv() => DFloat11Decoder.Gemm(_t, _x, _y, M, K, 1);

    [Benchmark]
    public void Decompress() => DFloat11Decoder.Decompress(_t, _out);

    [Benchmark]
    public void DecompressOneThread() => DFloat11Decoder.Decompress(_t, _out, _oneThread);
}
