namespace Kernels;

/// <summary>Options for CPU kernels: the ISA path and the thread count. Immutable; pass one instance everywhere.</summary>
public sealed record KernelOptions
{
    /// <summary>The default options: automatic ISA, all cores.</summary>
    public static KernelOptions Default { get; } = new();

    /// <summary>The ISA path to force; <see cref="IsaPath.Auto"/> picks the widest supported.</summary>
    public IsaPath Isa { get; init; } = IsaPath.Auto;

    /// <summary>The largest <see cref="MaxDegreeOfParallelism"/> accepted (kernels multiply the thread count by small
    /// chunk factors in 32-bit arithmetic).</summary>
    public const int MaxThreads = 1 << 16;

    private readonly int _maxDegreeOfParallelism = -1;

    /// <summary>Maximum threads a kernel uses; -1 (default), 0 or any negative value means <see cref="Environment.ProcessorCount"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is above <see cref="MaxThreads"/>.</exception>
    public int MaxDegreeOfParallelism
    {
        get => _maxDegreeOfParallelism;
        init
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, MaxThreads, nameof(MaxDegreeOfParallelism));
            _maxDegreeOfParallelism = value;
        }
    }

    /// <summary>The thread count this resolves to (at least 1).</summary>
    public int EffectiveParallelism => MaxDegreeOfParallelism <= 0 ? Environment.ProcessorCount : MaxDegreeOfParallelism;
}
