namespace Kernels;

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
