namespace Kernels.Quant.Lut;

/// <summary>Builds the 16-entry activation tables of T-MAC and quantizes them to int8: the definition every backend follows.</summary>
/// <remarks>
/// <para>For 4 activations <c>x0..x3</c>: <c>T[idx] = Σ_j (bit_j(idx) ? +x_j : −x_j)</c>, evaluated in fp32 as
/// <c>((±x0 ± x1) ± x2) ± x3</c>. Only the 8 entries with bit 3 set are computed; the others are their negations
/// (<c>T[15 − idx] = −T[idx]</c>, the mirror symmetry), which is exact.</para>
/// <para>int8 mode, per group of G activations: <c>lutScale = max |T| over the group's tables / 127</c> (fp32),
/// <c>qT = clamp(roundEven(T · (1/lutScale)), −127, 127)</c> (0 when lutScale is 0). Hence <c>|qT·lutScale − T| ≤ lutScale/2</c>
/// (up to one fp32 rounding of the product). Activations must be finite.</para>
/// </remarks>
public static class LutTable
{
    /// <summary>Builds the fp32 table of one 4-group.</summary>
    /// <param name="x0">Activation 0 (bit 0 of the index).</param>
    /// <param name="x1">Activation 1.</param>
    /// <param name="x2">Activation 2.</param>
    /// <param name="x3">Activation 3 (bit 3).</param>
    /// <param name="table">16 entries.</param>
    public static void Build(float x0, float x1, float x2, float x3, Span<float> table)
    {
        for (int idx = 8; idx < 16; idx++)
        {
            float v = (idx & 1) != 0 ? x0 : -x0;
            v += (idx & 2) != 0 ? x1 : -x1;
            v += (idx & 4) != 0 ? x2 : -x2;
            v += x3;
            table[idx] = v;
            table[15 - idx] = -v;
        }
    }

    /// <summary>The int8 table scale of a group: <c>max over its 4-groups and 16 entries of |T[idx]|, / 127</c>.</summary>
    /// <param name="group">The group's activations (a multiple of 4).</param>
    /// <returns>The scale (0 for an all-zero group).</returns>
    /// <remarks>In exact arithmetic <c>max |T| = |x0| + |x1| + |x2| + |x3|</c> (T-MAC's formula); taking it from the fp32 table
    /// itself guarantees <c>|T·(1/scale)| ≤ 127</c> up to one rounding.</remarks>
    public static float Int8Scale(ReadOnlySpan<float> group)
    {
        Span<float> t = stackalloc float[16];
        float max = 0;
        for (int i = 0; i + 4 <= group.Length; i += 4)
        {
            Build(group[i], group[i + 1], group[i + 2], group[i + 3], t);
            for (int e = 0; e < 16; e++) max = Math.Max(max, Math.Abs(t[e]));
        }
        return max / 127f;
    }

    /// <summary>The group sum <c>X_g</c> used by the kernels: <c>Σ over 4-groups, in order, of T[15] = ((x0 + x1) + x2) + x3</c>.</summary>
    /// <param name="group">The group's activations (a multiple of 4).</param>
    /// <returns>The sum in fp32.</returns>
    public static float GroupSum(ReadOnlySpan<float> group)
    {
        float sum = 0;
        for (int i = 0; i + 4 <= group.Length; i += 4) sum += ((group[i] + group[i + 1]) + group[i + 2]) + group[i + 3];
        return sum;
    }

    /// <summary>The int8 entry <c>clamp(roundEven(t / scale), ±127)</c>, used instead of <see cref="Quantize"/> when
    /// <c>1/scale</c> overflows fp32 (scale below 2⁻¹²⁸: groups of tiny activations), where <c>t · ∞</c> would saturate every
    /// non-zero entry.</summary>
    /// <param name="t">Table value.</param>
    /// <param name="scale">The group's table scale (non-zero).</param>
    /// <returns>The int8 entry.</returns>
    public static sbyte QuantizeByDivision(float t, float scale) => (sbyte)Math.Clamp(MathF.Round(t / scale, MidpointRounding.ToEven), -127f, 127f);

    /// <summary>Quantizes one table entry: <c>clamp(roundEven(t·inverseScale), −127, 127)</c>.</summary>
    /// <param name="t">Entry.</param>
    /// <param name="inverseScale"><c>1/lutScale</c>, or 0 when the scale is 0.</param>
    /// <returns>The int8 entry.</returns>
    public static sbyte Quantize(float t, float inverseScale) => (sbyte)Math.Clamp(MathF.Round(t * inverseScale, MidpointRounding.ToEven), -127f, 127f);

    /// <summary>The inverse scale used by <see cref="Quantize"/>.</summary>
    /// <param name="scale">The table scale.</param>
    /// <returns><c>1/scale</c>, or 0 when scale is 0.</returns>
    public static float InverseScale(float scale) => scale == 0 ? 0 : 1f / scale;
}
