namespace Kernels;

/// <summary>A compute backend: allocates tensors on its device and runs ops on them.</summary>
/// <remarks>
/// A caller picks a backend once (<c>CpuBackend</c> from Kernels.Cpu, <c>GpuBackend</c> from Kernels.Gpu) and calls the
/// same op interfaces (<see cref="IDenseOps"/> and the family interfaces of Kernels.Quant and Kernels.Attention) on either.
/// Ops may run asynchronously on a device; <see cref="Synchronize"/> waits, and <see cref="DeviceTensor{T}.CopyTo"/> waits implicitly.
/// </remarks>
public interface IKernelBackend : IDisposable
{
    /// <summary>Short name, e.g. <c>cpu</c> or <c>cuda</c>.</summary>
    string Name { get; }

    /// <summary>Describes the device and the code paths this backend runs.</summary>
    /// <returns>A description suitable for logs and bug reports.</returns>
    BackendInfo Describe();

    /// <summary>Allocates a zero-initialised tensor on this backend.</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="lengths">Dimension lengths.</param>
    /// <returns>The tensor; the caller disposes it.</returns>
    DeviceTensor<T> Allocate<T>(params ReadOnlySpan<int> lengths) where T : unmanaged;

    /// <summary>Waits until all work queued on this backend has finished.</summary>
    void Synchronize();
}
