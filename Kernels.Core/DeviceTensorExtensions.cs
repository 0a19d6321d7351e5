using System.Numerics.Tensors;

namespace Kernels;

/// <summary>Copies between backend tensors and System.Numerics.Tensors types. Every copy is explicit and visible.</summary>
public static class DeviceTensorExtensions
{
    /// <summary>Copies a (possibly strided) tensor span into <paramref name="destination"/> (host → device on GPUs).</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="destination">The backend tensor; its lengths must equal the span's.</param>
    /// <param name="source">The source span.</param>
    /// <exception cref="ArgumentException">The lengths differ (the message names both shapes).</exception>
    public static void CopyFrom<T>(this DeviceTensor<T> destination, ReadOnlyTensorSpan<T> source) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(destination);
        if (!SameLengths(destination.Shape, source.Lengths))
        {
            ThrowHelper.Argument(nameof(source), $"source has lengths [{string.Join(", ", source.Lengths.ToArray())}] but the tensor is {destination.Shape}.");
        }
        if (source.IsDense)
        {
            // A dense span is one contiguous run: copy without staging.
            var flat = System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpan(in source.GetPinnableReference(), checked((int)source.FlattenedLength));
            destination.CopyFrom(flat);
            return;
        }
        var staging = new T[source.FlattenedLength];
        source.FlattenTo(staging);
        destination.CopyFrom(staging);
    }

    /// <summary>Copies the tensor into a new <see cref="Tensor{T}"/> (device → host on GPUs; waits for pending work).</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="source">The backend tensor.</param>
    /// <returns>A dense System.Numerics.Tensors tensor with the same lengths.</returns>
    public static Tensor<T> ToTensor<T>(this DeviceTensor<T> source) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(source);
        var lengths = new nint[source.Shape.Rank];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = source.Shape[i];
        return Tensor.Create(source.ToArray(), lengths);
    }

    private static bool SameLengths(TensorShape shape, ReadOnlySpan<nint> lengths)
    {
        if (shape.Rank != lengths.Length) return false;
        for (int i = 0; i < lengths.Length; i++)
            if (shape[i] != lengths[i]) return false;
        return true;
    }
}
