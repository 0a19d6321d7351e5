namespace Kernels.Attention.Reference;

/// <summary>The int8 query quantization of <see cref="Planning.AttentionOptions.QuantizedQueryDot"/>: symmetric, one scale
/// per query head row, shared by the oracle and every kernel so that all see the same codes.</summary>
public static class QueryQuantization
{
    /// <summary>Quantizes one query head row: <c>s = max|q|/127</c>, <c>code = clamp(round_half_even(q/s), −127, 127)</c>.</summary>
    /// <param name="row">The <c>head_dim</c> query values.</param>
    /// <param name="codes">Receives <c>row.Length</c> codes.</param>
    /// <returns>The scale: 0 for an all-zero row (codes 0), NaN when the row holds NaN or ±Inf (codes 0, so every logit of the
    /// row is NaN, as with unquantized queries).</returns>
    /// <exception cref="ArgumentException"><paramref name="codes"/> is shorter than <paramref name="row"/>.</exception>
    public static float Quantize(ReadOnlySpan<float> row, Span<sbyte> codes)
    {
        ThrowHelper.ThrowIfTooShort(nameof(codes), codes.Length, row.Length);
        float amax = 0;
        foreach (float x in row) amax = MathF.Max(amax, MathF.Abs(x));
        if (!(amax > 0) || float.IsPositiveInfinity(amax))
        {
            codes[..row.Length].Clear();
            return amax == 0 ? 0f : float.NaN;
        }
        float s = amax / 127f;
        for (int i = 0; i < row.Length; i++) codes[i] = (sbyte)Math.Clamp(MathF.Round(row[i] / s), -127f, 127f);
        return s;
    }

    /// <summary>Replaces every <paramref name="headDim"/>-long row of <paramref name="q"/> by its dequantized int8 version
    /// <c>code·s</c> (the values whose dot products the kernels compute).</summary>
    /// <param name="q">Query rows.</param>
    /// <param name="headDim">Row length.</param>
    /// <returns>The dequantized rows.</returns>
    public static float[] Dequantized(ReadOnlySpan<float> q, int headDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        var result = new float[q.Length];
        Span<sbyte> codes = headDim <= 1024 ? stackalloc sbyte[headDim] : new sbyte[headDim];
        for (int r = 0; r + headDim <= q.Length; r += headDim)
        {
            float s = Quantize(q.Slice(r, headDim), codes);
            for (int i = 0; i < headDim; i++) result[r + i] = codes[i] * s;
        }
        return result;
    }
}
