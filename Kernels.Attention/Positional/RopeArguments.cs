namespace Kernels.Attention.Positional;

/// <summary>Checks of RoPE arguments, shared by the reference and the backends.</summary>
internal static class RopeArguments
{
    /// <summary>Returns the head count after checking that <c>x</c> and <c>output</c> hold <c>tokens × heads × head_dim</c> floats.</summary>
    /// <param name="tokens">Positions given (one per token).</param>
    /// <param name="headDim">head_dim.</param>
    /// <param name="xLength">Elements of x.</param>
    /// <param name="outputLength">Elements of output.</param>
    /// <returns>heads (0 when there are no tokens).</returns>
    /// <exception cref="ArgumentException">The sizes disagree (the message names them).</exception>
    public static int Heads(long tokens, int headDim, long xLength, long outputLength)
    {
        long row = tokens * headDim;
        if (row == 0 && xLength != 0)
            ThrowHelper.Argument("x", $"x has {xLength} elements; expected 0 for tokens 0 (one position per token).");
        if (row != 0 && xLength % row != 0)
            ThrowHelper.Argument("x", $"x has {xLength} elements; expected tokens {tokens} × heads × head_dim {headDim} (a multiple of {row}).");
        if (outputLength != xLength)
            ThrowHelper.Argument("output", $"output has {outputLength} elements; x has {xLength}.");
        long heads = row == 0 ? 0 : xLength / row;
        if (heads > int.MaxValue) ThrowHelper.Argument("x", $"x has {heads} heads per token; at most {int.MaxValue} are supported.");
        return (int)heads;
    }

    /// <summary>Throws unless every position is in <c>[0, maxPositions)</c>; the message names the first offending index and value.</summary>
    /// <param name="positions">Positions.</param>
    /// <param name="maxPositions">The table's position count.</param>
    /// <exception cref="ArgumentOutOfRangeException">A position is negative or ≥ <paramref name="maxPositions"/>.</exception>
    public static void CheckPositions(ReadOnlySpan<int> positions, int maxPositions)
    {
        for (int t = 0; t < positions.Length; t++)
            if ((uint)positions[t] >= (uint)maxPositions)
                ThrowPosition(t, positions[t], maxPositions);
    }

    /// <summary>True when <paramref name="x"/> and <paramref name="output"/> are the same memory (an in-place call).</summary>
    /// <param name="x">Input.</param>
    /// <param name="output">Output.</param>
    /// <returns>Whether both start at the same address with the same length.</returns>
    public static bool IsSameMemory(ReadOnlySpan<float> x, ReadOnlySpan<float> output) =>
        x.Length == output.Length && System.Runtime.CompilerServices.Unsafe.AreSame(
            ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x), ref System.Runtime.InteropServices.MemoryMarshal.GetReference(output));

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void ThrowPosition(int index, int value, int maxPositions) =>
        throw new ArgumentOutOfRangeException("positions", value, $"positions[{index}] = {value} is outside the RoPE table's [0, {maxPositions}).");
}
