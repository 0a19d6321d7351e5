using ILGPU;
using System.Runtime.CompilerServices;
using ILGPU.Runtime;

namespace Kernels.Gpu;

/// <summary>A <see cref="DeviceTensor{T}"/> in an ILGPU accelerator buffer, owned by a <see cref="GpuBackend"/>.</summary>
/// <typeparam name="T">Element type.</typeparam>
public sealed class GpuTensor<T> : DeviceTensor<T> where T : unmanaged
{
    private readonly GpuBackend _backend;
    private readonly MemoryBuffer1D<T, Stride1D.Dense> _buffer;

    internal GpuTensor(GpuBackend backend, TensorShape shape) : base(backend, shape)
    {
        _backend = backend;
        CheckSize(shape, backend.Accelerator);
        // Padded to a whole number of 16-byte words, so kernels may read 4-/8-/16-byte units without running past the buffer.
        long padded = (Math.Max(1, shape.ElementCount) * Unsafe.SizeOf<T>() + 15) / 16 * 16 / Unsafe.SizeOf<T>() + 1;
        _buffer = backend.Accelerator.Allocate1D<T>(padded);
        _buffer.MemSetToZero(backend.Stream);
    }

    /// <summary>Throws unless a tensor of <paramref name="shape"/> (padded as the constructor pads it) fits in the
    /// accelerator's memory: its byte size must not overflow a long nor exceed <see cref="Accelerator.MemorySize"/>.</summary>
    /// <param name="shape">The shape.</param>
    /// <param name="accelerator">The accelerator.</param>
    /// <exception cref="ArgumentException">The tensor is larger than the device memory.</exception>
    internal static void CheckSize(TensorShape shape, Accelerator accelerator)
    {
        long max = accelerator.MemorySize;
        int elementSize = Unsafe.SizeOf<T>();
        Int128 bytes = (Int128)Math.Max(1, shape.ElementCount) * elementSize;
        Int128 padded = (bytes + 15) / 16 * 16 + elementSize;
        if (padded > max)
        {
            throw new ArgumentException($"Tensor {shape} of {typeof(T).Name} needs {bytes} bytes; device '{accelerator.Name}' has {max}.", "lengths");
        }
    }

    /// <summary>Throws <see cref="ObjectDisposedException"/> if this tensor or its backend was disposed (the backend's
    /// disposal frees every buffer on its accelerator).</summary>
    private void ThrowIfUnusable()
    {
        ThrowIfDisposed();
        ObjectDisposedException.ThrowIf(_backend.IsDisposed, _backend);
    }

    /// <summary>The device view of the elements (for kernels and interop with other ILGPU code).</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public ArrayView1D<T, Stride1D.Dense> View
    {
        get
        {
            ThrowIfUnusable();
            return _buffer.View.SubView(0, Shape.ElementCount);
        }
    }

    /// <summary>The whole (padded) allocation: at least the elements rounded up to 16 bytes, zero beyond the tensor.</summary>
    internal ArrayView1D<T, Stride1D.Dense> PaddedView
    {
        get
        {
            ThrowIfUnusable();
            return _buffer.View;
        }
    }

    /// <inheritdoc/>
    public override void CopyFrom(ReadOnlySpan<T> source)
    {
        ThrowIfUnusable();
        ThrowHelper.ThrowIfLengthMismatch(nameof(source), source.Length, Shape.ElementCount);
        if (source.IsEmpty) return;
        _backend.Stream.Synchronize();
        View.CopyFromCPU(_backend.Stream, source);
        _backend.Stream.Synchronize();
    }

    /// <inheritdoc/>
    public override void CopyTo(Span<T> destination)
    {
        ThrowIfUnusable();
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, Shape.ElementCount);
        if (destination.IsEmpty) return;
        _backend.Stream.Synchronize();
        View.CopyToCPU(_backend.Stream, destination);
        _backend.Stream.Synchronize();
    }

    /// <inheritdoc/>
    protected override void Release()
    {
        if (!_backend.IsDisposed) _buffer.Dispose(); // else the accelerator already released it
    }
}
