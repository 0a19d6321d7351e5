namespace Kernels.Perf.Harness;

/// <summary>One kernel invocation to verify and time.</summary>
public sealed class BenchCase
{
    /// <summary>Operation, e.g. <c>gemv</c>, <c>gemm</c>, <c>decode</c>, <c>decompress</c>.</summary>
    public required string Op { get; init; }

    /// <summary>Format, e.g. <c>f32</c>, <c>bf16</c>, <c>W2 g128</c>.</summary>
    public required string Format { get; init; }

    /// <summary>Problem shape as printed, e.g. <c>4096x4096 n=1</c>.</summary>
    public required string Shape { get; init; }

    /// <summary>Backend name (<c>cpu</c>, <c>cuda</c>).</summary>
    public required string Backend { get; init; }

    /// <summary>Code path (ISA on CPU, device on GPU).</summary>
    public required string Path { get; init; }

    /// <summary>Bytes the kernel must move per call (weights + activations + outputs), for GB/s.</summary>
    public required double Bytes { get; init; }

    /// <summary>Floating-point (or integer) operations per call, for GFLOP/s; 0 when not meaningful.</summary>
    public double Flops { get; init; }

    /// <summary>Runs the kernel once; the argument is the iteration number (to rotate cold copies). Must complete (synchronize) before returning.</summary>
    public required Action<int> Run { get; init; }

    /// <summary>Checks the kernel's output against the reference; returns null when it matches, else the failure.</summary>
    public Func<string?>? Verify { get; init; }

    /// <summary>The <see cref="Key"/> of the case this one is compared with (e.g. the dense bf16 GEMV of the same shape).</summary>
    public string? BaselineKey { get; init; }

    /// <summary>Further named comparisons (label → key), e.g. "vs dequant" for the LUT suite.</summary>
    public IReadOnlyDictionary<string, string>? ExtraBaselines { get; init; }

    /// <summary>Named comparisons of rates (label → key): this case's GFLOP/s over the named case's, for cases of different
    /// sizes doing the same work per unit (e.g. a long-context decode against the same kernel on a cache-resident pool).</summary>
    public IReadOnlyDictionary<string, string>? RateBaselines { get; init; }

    /// <summary>Other kernels, each timed in alternation with this one after the normal measurement, reported as its label
    /// and the median over pairs of (its time / this time): a ratio of two kernels measured within milliseconds of each
    /// other, which the VM's drift over minutes does not reach (separate rows are timed up to a minute apart).</summary>
    public IReadOnlyList<PairedRun>? Paired { get; init; }

    /// <summary>Resources freed after the case ran.</summary>
    public IDisposable? Resources { get; init; }

    /// <summary>Free-form note printed in the Markdown (e.g. compression ratio).</summary>
    public string? Note { get; set; }

    /// <summary>Identity used for baselines: op|format|shape|backend.</summary>
    public string Key => MakeKey(Op, Format, Shape, Backend);

    /// <summary>Builds a baseline key.</summary>
    public static string MakeKey(string op, string format, string shape, string backend) => $"{op}|{format}|{shape}|{backend}";
}

/// <summary>The baseline of <see cref="BenchCase.Paired"/>.</summary>
/// <param name="Label">Printed before the ratio, e.g. <c>vs contiguous</c>.</param>
/// <param name="Run">Runs the baseline kernel once (same contract as <see cref="BenchCase.Run"/>).</param>
public sealed record PairedRun(string Label, Action<int> Run);

/// <summary>A measured case.</summary>
public sealed record BenchResult(
    string Suite, string Op, string Format, string Shape, string Backend, string Path,
    double MedianSeconds, double MinSeconds, int Iterations, double GBps, double GFlops, double PercentOfBandwidth,
    double? VsBaseline, string Verified, string? Extra, string? Note)
{
    public string Key => BenchCase.MakeKey(Op, Format, Shape, Backend);
}
