namespace Kernels.Attention.Positional;

/// <summary>The RoPE oracle: scalar, in double, straight from <see cref="RopeOptions"/> (not from a <see cref="RopeTable"/>).</summary>
/// <remarks>For each token t, head h and pair i: <c>θ = RopeOptions.Angle(positions[t], i, rotary_dim)</c>,
/// <c>x1' = x1·cos θ − x2·sin θ</c>, <c>x2' = x2·cos θ + x1·sin θ</c> evaluated in double and rounded once to float;
/// dimensions ≥ rotary_dim are copied unchanged (bit for bit, NaN payloads and −0 included).</remarks>
public static class RopeReference
{
    /// <summary>Applies RoPE to <c>x [tokens, heads, head_dim]</c>.</summary>
    /// <param name="options">The settings.</param>
    /// <param name="headDim">head_dim.</param>
    /// <param name="positions">One position (≥ 0) per token.</param>
    /// <param name="x">Input, <c>tokens × heads × head_dim</c> floats.</param>
    /// <param name="output">Output, as long as <paramref name="x"/>; may be <paramref name="x"/> itself (in place), never a
    /// partial overlap.</param>
    /// <exception cref="ArgumentException">The options are invalid, or the lengths disagree (the message names them).</exception>
    /// <exception cref="ArgumentOutOfRangeException">A position is negative.</exception>
    public static void Apply(RopeOptions options, int headDim, ReadOnlySpan<int> positions, ReadOnlySpan<float> x, Span<float> output)
    {
        ArgumentNullException.ThrowIfNull(options);
        int rotary = options.Validate(headDim);
        int heads = RopeArguments.Heads(positions.Length, headDim, x.Length, output.Length);
        if (!RopeArguments.IsSameMemory(x, output)) ThrowHelper.ThrowIfOverlapping(x, output, nameof(x), nameof(output));
        for (int t = 0; t < positions.Length; t++)
            if (positions[t] < 0)
                throw new ArgumentOutOfRangeException(nameof(positions), $"positions[{t}] = {positions[t]} is negative.");
        int half = rotary / 2;
        for (int t = 0; t < positions.Length; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                int b = (t * heads + h) * headDim;
                for (int i = 0; i < half; i++)
                {
                    var (sin, cos) = Math.SinCos(options.Angle(positions[t], i, rotary));
                    int i1 = options.Interleaved ? b + 2 * i : b + i;
                    int i2 = options.Interleaved ? i1 + 1 : i1 + half;
                    double x1 = x[i1], x2 = x[i2];
                    output[i1] = (float)(x1 * cos - x2 * sin);
                    output[i2] = (float)(x2 * cos + x1 * sin);
                }
                x.Slice(b + rotary, headDim - rotary).CopyTo(output.Slice(b + rotary, headDim - rotary));
            }
        }
    }
}
