using System.Collections.Immutable;

namespace Kernels;

/// <summary>An immutable tensor shape: dimension lengths plus element strides (row-major by default).</summary>
/// <remarks>
/// Strides are in elements, not bytes. A shape is <see cref="IsContiguous"/> when its strides are the dense
/// row-major strides of its lengths. Kernels take contiguous tensors unless documented otherwise; views with other
/// strides are for slicing and interop.
/// </remarks>
public sealed class TensorShape : IEquatable<TensorShape>
{
    private readonly ImmutableArray<int> _lengths;
    private readonly ImmutableArray<long> _strides;

    /// <summary>Creates a dense row-major shape.</summary>
    /// <param name="lengths">Dimension lengths, outermost first; each ≥ 0.</param>
    /// <exception cref="ArgumentException">A length is negative or the element count overflows.</exception>
    public TensorShape(params ReadOnlySpan<int> lengths)
        : this(lengths, RowMajorStrides(lengths))
    {
    }

    /// <summary>Creates a shape with explicit strides.</summary>
    /// <param name="lengths">Dimension lengths, outermost first; each ≥ 0.</param>
    /// <param name="strides">Element strides, one per dimension; each ≥ 0.</param>
    /// <exception cref="ArgumentException">Rank mismatch, a negative length or stride, or an element count overflow.</exception>
    public TensorShape(ReadOnlySpan<int> lengths, ReadOnlySpan<long> strides)
    {
        if (lengths.Length != strides.Length)
        {
            throw new ArgumentException($"Shape has {lengths.Length} lengths but {strides.Length} strides.", nameof(strides));
        }
        long count = 1;
        bool overflow = false;
        for (int i = 0; i < lengths.Length; i++)
        {
            if (lengths[i] < 0) throw new ArgumentException($"Dimension {i} has negative length {lengths[i]}.", nameof(lengths));
            if (strides[i] < 0) throw new ArgumentException($"Dimension {i} has negative stride {strides[i]}.", nameof(strides));
            overflow |= Math.BigMul(count, lengths[i], out count) != 0 || count < 0;
        }
        if (overflow)
        {
            throw new ArgumentException($"Shape [{string.Join(", ", lengths.ToArray())}] has more than {long.MaxValue} elements.", nameof(lengths));
        }
        if (count > 0)
        {
            // The last element's offset must be representable (SpanLength): Σ (length − 1) · stride < 2⁶³.
            Int128 last = 0;
            for (int i = 0; i < lengths.Length; i++) last += (Int128)(lengths[i] - 1) * strides[i];
            if (last >= long.MaxValue)
            {
                throw new ArgumentException($"Shape [{string.Join(", ", lengths.ToArray())}] with strides [{string.Join(", ", strides.ToArray())}] spans more than {long.MaxValue} elements.", nameof(strides));
            }
        }
        _lengths = [.. lengths];
        _strides = [.. strides];
        ElementCount = count;
    }

    /// <summary>Number of dimensions.</summary>
    public int Rank => _lengths.Length;

    /// <summary>Total number of elements (product of the lengths).</summary>
    public long ElementCount { get; }

    /// <summary>Dimension lengths, outermost first.</summary>
    public ReadOnlySpan<int> Lengths => _lengths.AsSpan();

    /// <summary>Element strides, outermost first.</summary>
    public ReadOnlySpan<long> Strides => _strides.AsSpan();

    /// <summary>Length of dimension <paramref name="dimension"/>.</summary>
    /// <param name="dimension">Zero-based dimension index.</param>
    public int this[int dimension] => _lengths[dimension];

    /// <summary>True when the strides are the dense row-major strides of the lengths.</summary>
    public bool IsContiguous
    {
        get
        {
            long expected = 1;
            for (int i = Rank - 1; i >= 0; i--)
            {
                if (_lengths[i] != 1 && _strides[i] != expected) return false;
                expected = SaturatingMultiply(expected, Math.Max(_lengths[i], 1)); // as RowMajorStrides: a zero-length dimension keeps the stride
            }
            return true;
        }
    }

    /// <summary>Number of elements the strided layout spans (max offset + 1; 0 when empty).</summary>
    public long SpanLength
    {
        get
        {
            if (ElementCount == 0) return 0;
            long last = 0;
            for (int i = 0; i < Rank; i++) last += (_lengths[i] - 1) * _strides[i];
            return last + 1;
        }
    }

    /// <summary>Dense row-major strides for <paramref name="lengths"/>.</summary>
    /// <param name="lengths">Dimension lengths.</param>
    /// <returns>The strides, in elements.</returns>
    public static long[] RowMajorStrides(ReadOnlySpan<int> lengths)
    {
        var strides = new long[lengths.Length];
        long s = 1;
        for (int i = lengths.Length - 1; i >= 0; i--)
        {
            strides[i] = s;
            // Saturates instead of wrapping; the constructor rejects a shape whose strides do not fit.
            s = SaturatingMultiply(s, Math.Max(lengths[i], 1));
        }
        return strides;
    }

    private static long SaturatingMultiply(long a, int b) => Math.BigMul(a, b, out long p) != 0 || p < 0 ? long.MaxValue : p;

    /// <inheritdoc/>
    public bool Equals(TensorShape? other) =>
        other is not null && Lengths.SequenceEqual(other.Lengths) && Strides.SequenceEqual(other.Strides);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as TensorShape);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (int l in _lengths) h.Add(l);
        return h.ToHashCode();
    }

    /// <summary>Formats as <c>[d0, d1, …]</c>, the form used in error messages.</summary>
    /// <returns>The shape as text.</returns>
    public override string ToString() => "[" + string.Join(", ", _lengths) + "]";
}
