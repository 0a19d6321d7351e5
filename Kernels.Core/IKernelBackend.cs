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

/// <summary>What a backend runs on, for logs and bug reports.</summary>
/// <param name="Backend">Backend name (<c>cpu</c>, <c>cuda</c>, <c>ilgpu-cpu</c>, …).</param>
/// <param name="Device">The device (processor model or GPU name).</param>
/// <param name="CodePath">The code path chosen (CPU: the ISA path; GPU: the accelerator type and compute capability).</param>
/// <param name="Parallelism">Threads (CPU) or multiprocessors (GPU) used.</param>
/// <param name="Details">Further facts: supported ISAs, memory, driver.</param>
public sealed record BackendInfo(string Backend, string Device, string CodePath, int Parallelism, string Details)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Backend}: {Device}, path {CodePath}, parallelism {Parallelism}; {Details}";
}
