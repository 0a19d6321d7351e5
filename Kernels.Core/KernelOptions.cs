namespace Kernels;

/// <summary>Options for CPU kernels: the ISA path and the thread count. Immutable; pass one instance everywhere.</summary>
public sealed record KernelOptions
{
    /// <summary>The default options: automatic ISA, all cores.</summary>
    public static KernelOptions Default { get; } = new();

    /// <summary>The ISA path to force; <see cref="IsaPath.Auto"/> picks the widest supported.</summary>
    public IsaPath Isa { get; init; } = IsaPath.Auto;

    /// <summary>Maximum threads a kernel uses; -1 (default) means <see cref="Environment.ProcessorCount"/>.</summary>
    public int MaxDegreeOfParallelism { get; init; } = -1;

    /// <summary>The thread count this resolves to (at least 1).</summary>
    public int EffectiveParallelism => MaxDegreeOfParallelism <= 0 ? Environment.ProcessorCount : MaxDegreeOfParallelism;
}
