using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Kernels;

/// <summary>Throw helpers for argument validation at public boundaries; kept out of line so dispatch code stays small.</summary>
public static class ThrowHelper
{
    /// <summary>Throws <see cref="ArgumentException"/> with <paramref name="message"/> for <paramref name="paramName"/>.</summary>
    /// <param name="paramName">The offending parameter.</param>
    /// <param name="message">A message naming the sizes or values involved.</param>
    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void Argument(string paramName, string message) => throw new ArgumentException(message, paramName);

    /// <summary>Throws unless <paramref name="actual"/> is at least <paramref name="required"/> elements.</summary>
    /// <param name="paramName">The buffer's parameter name.</param>
    /// <param name="actual">Elements available.</param>
    /// <param name="required">Elements required.</param>
    public static void ThrowIfTooShort(string paramName, long actual, long required)
    {
        if (actual < required) Argument(paramName, $"{paramName} has {actual} elements; {required} required.");
    }

    /// <summary>Throws unless <paramref name="offsets"/> (a CSR/BSR offset array: indptr, qo_indptr, …) starts at 0 and
    /// never decreases; the message names the first offending entries.</summary>
    /// <param name="paramName">The array's parameter name.</param>
    /// <param name="offsets">At least one offset.</param>
    public static void ThrowIfNotOffsets(string paramName, ReadOnlySpan<int> offsets)
    {
        if (offsets.IsEmpty) Argument(paramName, $"{paramName} needs at least one entry; got 0.");
        if (offsets[0] != 0) Argument(paramName, $"{paramName}[0] must be 0; got {offsets[0]}.");
        for (int i = 0; i + 1 < offsets.Length; i++)
            if (offsets[i + 1] < offsets[i])
                Argument(paramName, $"{paramName} is not monotone: {paramName}[{i + 1}] = {offsets[i + 1]} < {paramName}[{i}] = {offsets[i]}.");
    }

    /// <summary>Throws unless <paramref name="actual"/> equals <paramref name="expected"/>.</summary>
    /// <param name="paramName">The buffer's parameter name.</param>
    /// <param name="actual">Elements given.</param>
    /// <param name="expected">Elements expected.</param>
    public static void ThrowIfLengthMismatch(string paramName, long actual, long expected)
    {
        if (actual != expected) Argument(paramName, $"{paramName} has {actual} elements; expected exactly {expected}.");
    }

    /// <summary>Throws if a destination shares any byte with an input (the same buffer passed twice included): kernels never
    /// write over their inputs.</summary>
    /// <typeparam name="TIn">Input element type.</typeparam>
    /// <typeparam name="TOut">Output element type.</typeparam>
    /// <param name="input">The input.</param>
    /// <param name="destination">The destination.</param>
    /// <param name="inputName">Input parameter name.</param>
    /// <param name="destinationName">Destination parameter name (the exception's <see cref="ArgumentException.ParamName"/>).</param>
    /// <exception cref="ArgumentException">The spans overlap.</exception>
    public static void ThrowIfOverlapping<TIn, TOut>(ReadOnlySpan<TIn> input, ReadOnlySpan<TOut> destination, string inputName,
        string destinationName = "destination")
    {
        if (input.IsEmpty || destination.IsEmpty) return;
        ref byte a = ref Unsafe.As<TIn, byte>(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(input));
        ref byte b = ref Unsafe.As<TOut, byte>(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(destination));
        long aLen = (long)input.Length * Unsafe.SizeOf<TIn>();
        long bLen = (long)destination.Length * Unsafe.SizeOf<TOut>();
        nint diff = Unsafe.ByteOffset(ref a, ref b);
        bool overlaps = diff >= 0 ? diff < aLen : -diff < bLen;
        if (overlaps)
        {
            Argument(destinationName, $"{destinationName} overlaps {inputName}; kernels never write over their inputs.");
        }
    }
}
