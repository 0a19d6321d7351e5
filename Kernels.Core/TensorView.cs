using System.Numerics.Tensors;

namespace Kernels;

/// <summary>A non-owning view: a dense row-major shape over caller memory.</summary>
/// <typeparam name="T">The element type.</typeparam>
/// <remarks>Unlike <see cref="TensorSpan{T}"/> this is not a ref struct, so plans and caches can keep it.</remarks>
public readonly struct TensorView<T> where T : unmanaged
{
    /// <summary>Creates a view.</summary>
    /// <param name="memory">The elements, row-major; at least the shape's element count.</param>
    /// <param name="shape">A dense row-major shape.</param>
    /// <exception cref="ArgumentException">The memory is too short or the shape is not contiguous.</exception>
    public TensorView(Memory<T> memory, TensorShape shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (!shape.IsContiguous) ThrowHelper.Argument(nameof(shape), $"TensorView needs a contiguous shape; {shape} has strides [{string.Join(", ", shape.Strides.ToArray())}].");
        ThrowHelper.ThrowIfTooShort(nameof(memory), memory.Length, shape.ElementCount);
        Memory = memory[..(int)shape.ElementCount];
        Shape = shape;
    }

    /// <summary>Creates a view over an array.</summary>
    /// <param name="array">The elements, row-major.</param>
    /// <param name="lengths">Dimension lengths.</param>
    public TensorView(T[] array, params ReadOnlySpan<int> lengths) : this(array, new TensorShape(lengths))
    {
    }

    /// <summary>The elements.</summary>
    public Memory<T> Memory { get; }

    private static readonly TensorShape Empty = new(0);
    private readonly TensorShape? _shape;

    /// <summary>The shape (<c>[0]</c> for a default view).</summary>
    public TensorShape Shape { get => _shape ?? Empty; private init => _shape = value; }

    /// <summary>The elements as a span.</summary>
    public Span<T> Span => Memory.Span;

    /// <summary>The element type.</summary>
    public DType DType => DTypeInfo.Of<T>();

    /// <summary>A zero-copy <see cref="TensorSpan{T}"/> over the same memory.</summary>
    /// <returns>The tensor span.</returns>
    public TensorSpan<T> AsTensorSpan()
    {
        Span<nint> lengths = stackalloc nint[Shape.Rank];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = Shape[i];
        // TensorSpan rejects a default (null-reference) span even for zero elements: a default view is empty.
        return new TensorSpan<T>(Span.IsEmpty ? System.Array.Empty<T>() : Span, lengths);
    }

    /// <inheritdoc/>
    public override string ToString() => $"TensorView<{typeof(T).Name}>{Shape}";
}
