using Kernels.Cpu.Dense;

namespace Kernels.Cpu;

/// <summary>The CPU backend: host tensors and the SIMD kernels, behind the same op interfaces as the GPU backend.</summary>
/// <remarks>
/// Ops run synchronously on the calling thread plus the kernel worker pool. For zero-copy use without tensors, call the
/// static span APIs directly (<see cref="DenseGemm"/> and the other kernel classes of this assembly).
/// </remarks>
public sealed partial class CpuBackend : IKernelBackend, IDenseOps
{
    /// <summary>Creates a CPU backend.</summary>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="NotSupportedException">The options force an ISA path this process does not support.</exception>
    public CpuBackend(KernelOptions? options = null)
    {
        Options = options ?? KernelOptions.Default;
        Isa = CpuIsa.Resolve(Options);
    }

    /// <summary>The options every op of this backend runs with.</summary>
    public KernelOptions Options { get; }

    /// <summary>The resolved ISA path.</summary>
    public IsaPath Isa { get; }

    /// <inheritdoc/>
    public string Name => "cpu";

    private bool _disposed;

    /// <summary>True once <see cref="Dispose"/> has run.</summary>
    internal bool IsDisposed => _disposed;

    /// <summary>Throws <see cref="ObjectDisposedException"/> once the backend is disposed (as the GPU backend does).</summary>
    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <inheritdoc/>
    /// <exception cref="ObjectDisposedException">The backend was disposed.</exception>
    public BackendInfo Describe() => _disposed ? throw new ObjectDisposedException(GetType().FullName) : new(
        "cpu",
        $"{Environment.ProcessorCount} logical cores, {System.Runtime.InteropServices.RuntimeInformation.OSArchitecture}",
        Isa.ToString(),
        Options.EffectiveParallelism,
        CpuIsa.Describe() + $"; .NET {Environment.Version}");

    /// <inheritdoc/>
    public DeviceTensor<T> Allocate<T>(params ReadOnlySpan<int> lengths) where T : unmanaged
    {
        ThrowIfDisposed();
        return new CpuTensor<T>(this, new HostTensor<T>(lengths));
    }

    /// <summary>Allocates a tensor and copies <paramref name="data"/> into it.</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="data">Row-major elements.</param>
    /// <param name="lengths">Dimension lengths.</param>
    /// <returns>The tensor.</returns>
    /// <exception cref="ArgumentException">The element count differs from the shape's.</exception>
    public CpuTensor<T> Upload<T>(ReadOnlySpan<T> data, params ReadOnlySpan<int> lengths) where T : unmanaged
    {
        ThrowIfDisposed();
        var t = new CpuTensor<T>(this, HostTensor<T>.From(data, lengths));
        return t;
    }

    /// <inheritdoc/>
    public void Synchronize() => ThrowIfDisposed();

    /// <inheritdoc/>
    public void Gemm(DeviceTensor weights, DeviceTensor<float> x, DeviceTensor<float> y)
    {
        var (m, k, n) = DenseGemmContract.Validate(this, weights, x, y);
        ThrowIfDisposed();
        Span<float> ys = ((CpuTensor<float>)y).Span;
        ReadOnlySpan<float> xs = ((CpuTensor<float>)x).Span;
        if (weights is CpuTensor<float> wf) DenseGemm.Gemm(wf.Span, xs, ys, m, k, n, Options);
        else DenseGemm.Gemm(((CpuTensor<BFloat16>)weights).Span, xs, ys, m, k, n, Options);
    }

    /// <summary>Returns <paramref name="tensor"/> as this backend's tensor, or throws naming the parameter.</summary>
    /// <exception cref="ArgumentException">The tensor was allocated by another backend.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    private CpuTensor<T> AsCpu<T>(DeviceTensor<T> tensor, string name) where T : unmanaged
    {
        var t = DenseGemmContract.RequireBackend<CpuTensor<T>>(this, tensor, name);
        ThrowIfDisposed();
        return t;
    }

    /// <inheritdoc/>
    /// <remarks>Later calls on the backend, and on its tensors, throw <see cref="ObjectDisposedException"/>.</remarks>
    public void Dispose() => _disposed = true;
}
