using Kernels.Cpu;

namespace Kernels.Tests.TestUtilities;

/// <summary>Every concrete CPU ISA path, for theories that run each path in-process (unsupported ones are skipped).</summary>
public static class IsaMatrix
{
    public static readonly IsaPath[] All = [IsaPath.Avx512, IsaPath.Avx2, IsaPath.Vector128, IsaPath.Scalar];

    /// <summary>Theory data: one row per ISA path.</summary>
    public static TheoryData<IsaPath> Paths => new(All);

    /// <summary>Options forcing <paramref name="isa"/>, or null when this machine cannot run it (the caller returns early).</summary>
    public static KernelOptions? OptionsOrSkip(IsaPath isa) => CpuIsa.IsSupported(isa) ? new KernelOptions { Isa = isa } : null;
}
