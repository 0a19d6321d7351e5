using Kernels.Gpu;

namespace Kernels.Perf.Harness;

/// <summary>What suites need to build cases: options, backends, and the machine's measured bandwidth.</summary>
public sealed class BenchContext
{
    /// <summary>CPU kernel options (ISA, threads) from the command line.</summary>
    public required KernelOptions Options { get; init; }

    /// <summary>Run the CPU cases.</summary>
    public bool Cpu { get; init; } = true;

    /// <summary>The GPU backend when <c>--backend gpu|all</c> found a CUDA device, else null.</summary>
    public GpuBackend? Gpu { get; init; }

    /// <summary>Fewer, smaller shapes (for smoke runs).</summary>
    public bool Quick { get; init; }

    /// <summary>Measured DRAM read bandwidth, bytes/s (all threads).</summary>
    public double BandwidthBytesPerSecond { get; set; }

    /// <summary>Measured GPU device-memory read bandwidth, bytes/s (0 without a GPU).</summary>
    public double GpuBandwidthBytesPerSecond { get; set; }

    /// <summary>Total size of the caches to defeat (L3 and below), bytes.</summary>
    public long CacheBytes { get; init; } = 64L << 20;

    /// <summary>The CPU ISA path name as it will run.</summary>
    public string CpuPath => Kernels.Cpu.CpuIsa.Resolve(Options).ToString();

    /// <summary>How many copies of a buffer of <paramref name="bytes"/> to rotate through so each call reads from DRAM, not cache.</summary>
    public int ColdCopies(double bytes) => (int)Math.Clamp(Math.Ceiling(2.0 * CacheBytes / Math.Max(bytes, 1)), 1, 64);

    /// <summary>Filters (substring on the case key), from <c>--filter</c>.</summary>
    public IReadOnlyList<string> Filters { get; init; } = [];

    /// <summary>True when a case with these properties passes the filters (check before allocating).</summary>
    public bool Wants(string op, string format, string shape, string backend)
    {
        if (Filters.Count == 0) return true;
        string key = BenchCase.MakeKey(op, format, shape, backend);
        return Filters.Any(f => key.Contains(f, StringComparison.OrdinalIgnoreCase));
    }
}
