namespace Kernels;

/// <summary>A tensor owned by a backend (host memory for the CPU backend, an accelerator buffer for the GPU backend).</summary>
/// <remarks>
/// Copies between host and device are explicit: <see cref="DeviceTensor{T}.CopyFrom"/> and <see cref="DeviceTensor{T}.CopyTo"/>.
/// Ops check that every tensor belongs to the backend they run on and has not been disposed.
/// </remarks>
public abstract class DeviceTensor : IDisposable
{
    /// <summary>Initialises the common state.</summary>
    /// <param name="backend">The owning backend.</param>
    /// <param name="dtype">The element type.</param>
    /// <param name="shape">The dense row-major shape.</param>
    protected DeviceTensor(IKernelBackend backend, DType dtype, TensorShape shape)
    {
        Backend = backend;
        DType = dtype;
        Shape = shape;
    }

    /// <summary>The backend that owns the memory.</summary>
    public IKernelBackend Backend { get; }

    /// <summary>The element type.</summary>
    public DType DType { get; }

    /// <summary>The shape (dense row-major).</summary>
    public TensorShape Shape { get; }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Throws <see cref="ObjectDisposedException"/> if disposed.</summary>
    public void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);

    /// <inheritdoc/>
    public override string ToString() => $"{DType}{Shape} on {Backend.Name}";

    /// <summary>Releases the memory; idempotent.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Release();
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the backend memory (called once).</summary>
    protected abstract void Release();
}

/// <summary>A typed backend tensor.</summary>
/// <typeparam name="T">The element type.</typeparam>
public abstract class DeviceTensor<T> : DeviceTensor where T : unmanaged
{
    /// <summary>Initialises the common state.</summary>
    /// <param name="backend">The owning backend.</param>
    /// <param name="shape">The shape.</param>
    protected DeviceTensor(IKernelBackend backend, TensorShape shape) : base(backend, DTypeInfo.Of<T>(), shape)
    {
    }

    /// <summary>Copies host data into this tensor (a host→device transfer on GPUs).</summary>
    /// <param name="source">Exactly <see cref="TensorShape.ElementCount"/> elements.</param>
    /// <exception cref="ArgumentException">Wrong element count.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public abstract void CopyFrom(ReadOnlySpan<T> source);

    /// <summary>Copies this tensor into host memory (a device→host transfer on GPUs; waits for pending work).</summary>
    /// <param name="destination">Exactly <see cref="TensorShape.ElementCount"/> elements.</param>
    /// <exception cref="ArgumentException">Wrong element count.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public abstract void CopyTo(Span<T> destination);

    /// <summary>Copies the tensor into a new array.</summary>
    /// <returns>The elements, row-major.</returns>
    public T[] ToArray()
    {
        var result = new T[Shape.ElementCount];
        CopyTo(result);
        return result;
    }
}
