using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Numerics.Tensors;

namespace Kernels;

/// <summary>An owning, dense, row-major tensor in 64-byte-aligned host memory.</summary>
/// <typeparam name="T">The element type (float, Half, BFloat16, sbyte, byte, int or any unmanaged struct).</typeparam>
/// <remarks>
/// The elements live in an array on the pinned object heap, offset so the first element is 64-byte aligned (for 512-bit
/// loads); the address never moves, so spans and pointers stay valid while the tensor is alive, and no span can ever
/// outlive the memory (the GC owns it). <see cref="Dispose"/> releases the tensor's reference; any later access throws
/// <see cref="ObjectDisposedException"/>.
/// Interop: <see cref="AsTensorSpan"/> exposes the data as a <see cref="TensorSpan{T}"/> without copying, and
/// <see cref="From(ReadOnlyTensorSpan{T})"/> copies any (strided) System.Numerics.Tensors span in.
/// </remarks>
public sealed unsafe class HostTensor<T> : IDisposable where T : unmanaged
{
    private const int Alignment = 64;
    private T[]? _array;
    private readonly int _offset;

    /// <summary>Allocates a zero-initialised tensor.</summary>
    /// <param name="lengths">Dimension lengths, outermost first.</param>
    /// <exception cref="ArgumentException">A negative length, or more than 2³⁰ elements.</exception>
    public HostTensor(params ReadOnlySpan<int> lengths)
    {
        Shape = new TensorShape(lengths);
        int pad = (Alignment + sizeof(T) - 1) / sizeof(T);
        if (Shape.ElementCount > System.Array.MaxLength - pad)
        {
            throw new ArgumentException($"Tensor {Shape} has {Shape.ElementCount} elements; a host tensor holds at most {System.Array.MaxLength - pad}.", nameof(lengths));
        }
        _array = GC.AllocateArray<T>((int)Shape.ElementCount + pad, pinned: true);
        nint address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_array));
        int misalignment = (int)(address & (Alignment - 1));
        _offset = misalignment == 0 ? 0 : (Alignment - misalignment) / sizeof(T);
    }

    /// <summary>The shape (dense row-major).</summary>
    public TensorShape Shape { get; }

    /// <summary>The element type.</summary>
    public DType DType => DTypeInfo.Of<T>();

    /// <summary>Number of elements.</summary>
    public int Length => (int)Shape.ElementCount;

    /// <summary>True once <see cref="Dispose"/> has run.</summary>
    public bool IsDisposed => _array is null;

    /// <summary>The elements, row-major (64-byte aligned).</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public Span<T> Span => new(Storage, _offset, Length);

    /// <summary>The elements as <see cref="Memory{T}"/>; the memory is pinned for the tensor's lifetime.</summary>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public Memory<T> Memory => new(Storage, _offset, Length);

    private T[] Storage
    {
        get
        {
            ObjectDisposedException.ThrowIf(_array is null, this);
            return _array;
        }
    }

    /// <summary>Copies <paramref name="source"/> into a new tensor of shape <paramref name="lengths"/>.</summary>
    /// <param name="source">Row-major elements; exactly the shape's element count.</param>
    /// <param name="lengths">Dimension lengths.</param>
    /// <returns>The new tensor.</returns>
    /// <exception cref="ArgumentException">The element count differs from the shape's.</exception>
    public static HostTensor<T> From(ReadOnlySpan<T> source, params ReadOnlySpan<int> lengths)
    {
        var t = new HostTensor<T>(lengths);
        ThrowHelper.ThrowIfLengthMismatch(nameof(source), source.Length, t.Length);
        source.CopyTo(t.Span);
        return t;
    }

    /// <summary>Copies a (possibly strided) System.Numerics.Tensors span into a new dense tensor.</summary>
    /// <param name="source">The source span.</param>
    /// <returns>The new tensor with the same lengths.</returns>
    public static HostTensor<T> From(ReadOnlyTensorSpan<T> source)
    {
        var lengths = new int[source.Rank];
        for (int i = 0; i < lengths.Length; i++)
        {
            nint length = source.Lengths[i];
            if (length > int.MaxValue)
            {
                throw new ArgumentException($"source dimension {i} has length {length}; a host tensor's dimensions are at most {int.MaxValue}.", nameof(source));
            }
            lengths[i] = (int)length;
        }
        var t = new HostTensor<T>(lengths);
        source.FlattenTo(t.Span);
        return t;
    }

    /// <summary>A zero-copy <see cref="TensorSpan{T}"/> over this tensor.</summary>
    /// <returns>The view, valid until disposal.</returns>
    public TensorSpan<T> AsTensorSpan()
    {
        Span<nint> lengths = stackalloc nint[Shape.Rank];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = Shape[i];
        return new TensorSpan<T>(Span, lengths);
    }

    /// <summary>Copies the data into a new <see cref="Tensor{T}"/>.</summary>
    /// <returns>A System.Numerics.Tensors tensor with the same lengths.</returns>
    public Tensor<T> ToTensor()
    {
        var lengths = new nint[Shape.Rank];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = Shape[i];
        return Tensor.Create(Span.ToArray(), lengths);
    }

    /// <summary>A non-owning view of this tensor with its shape.</summary>
    /// <returns>The view, valid until disposal.</returns>
    public TensorView<T> AsView() => new(Memory, Shape);

    /// <inheritdoc/>
    public override string ToString() => $"HostTensor<{typeof(T).Name}>{Shape}";

    /// <summary>Releases the memory; later access throws. Idempotent.</summary>
    public void Dispose() => _array = null;
}
