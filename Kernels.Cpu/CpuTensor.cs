namespace Kernels.Cpu;

/// <summary>A <see cref="DeviceTensor{T}"/> in host memory, owned by a <see cref="CpuBackend"/>; its span is directly accessible.</summary>
/// <typeparam name="T">Element type.</typeparam>
public sealed class CpuTensor<T> : DeviceTensor<T> where T : unmanaged
{
    private readonly HostTensor<T> _storage;
    private readonly CpuBackend _backend;

    internal CpuTensor(CpuBackend backend, HostTensor<T> storage) : base(backend, storage.Shape)
    {
        _storage = storage;
        _backend = backend;
    }

    /// <summary>Throws <see cref="ObjectDisposedException"/> if this tensor or its backend was disposed (as on the GPU).</summary>
    private void ThrowIfUnusable()
    {
        ThrowIfDisposed();
        ObjectDisposedException.ThrowIf(_backend.IsDisposed, _backend);
    }

    /// <summary>The elements, zero-copy.</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public Span<T> Span
    {
        get
        {
            ThrowIfUnusable();
            return _storage.Span;
        }
    }

    /// <summary>The elements as memory, zero-copy; valid until disposal.</summary>
    public Memory<T> Memory
    {
        get
        {
            ThrowIfUnusable();
            return _storage.Memory;
        }
    }

    /// <inheritdoc/>
    public override void CopyFrom(ReadOnlySpan<T> source)
    {
        ThrowIfUnusable();
        ThrowHelper.ThrowIfLengthMismatch(nameof(source), source.Length, Shape.ElementCount);
        source.CopyTo(_storage.Span);
    }

    /// <inheritdoc/>
    public override void CopyTo(Span<T> destination)
    {
        ThrowIfUnusable();
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, Shape.ElementCount);
        _storage.Span.CopyTo(destination);
    }

    /// <inheritdoc/>
    protected override void Release() => _storage.Dispose();
}
