namespace Kernels.Quant.Lut;

/// <summary>Quantizes fp32/bf16 weights into a <see cref="LutQuantizedMatrix"/> (the logical LUT-GEMM format).</summary>
/// <remarks>
/// <para>Asymmetric b-bit (per group of G along k): <c>s = (max − min)/(2^b − 1)</c> rounded to bf16,
/// <c>z = clamp(round(−min/s), 0, 2^b − 1)</c>, <c>q = clamp(round(w/s) + z, 0, 2^b − 1)</c>, offset <c>o = bf16(s·(c − z))</c>.
/// A constant group (s = 0) stores its value in the offset, so it is exact.</para>
/// <para>Symmetric b-bit: <c>s = bf16(max|w| / c)</c>, <c>q = clamp(round(w/s + c), 0, 2^b − 1)</c>, <c>o = 0</c>; levels are
/// <c>±s/2, ±3s/2, …</c> (mid-rise, no zero level; for b = 1 this is the sign quantizer <c>±s/2</c>).</para>
/// <para>Ternary (BitNet b1.58): <c>γ = max(mean|W|, 1e-5)</c> per tensor or per row, <c>t = clamp(round(w/γ), −1, 1)</c>,
/// codes <c>t + 1</c>, every group of the row stores <c>s = bf16(γ)</c> and <c>o = s/2</c> (exact), so <c>w = s·t</c>.</para>
/// <para>Rounding is to nearest, ties to even. Weights must be finite.</para>
/// </remarks>
public static class LutQuantizer
{
    /// <summary>Quantizes row-major fp32 weights.</summary>
    /// <param name="weights"><c>m·k</c> weights, row-major.</param>
    /// <param name="m">Rows.</param>
    /// <param name="k">Columns; a multiple of the group size.</param>
    /// <param name="format">Target format.</param>
    /// <param name="ternaryScope">Scale scope for <see cref="LutQuantKind.Ternary"/> (ignored otherwise).</param>
    /// <returns>The quantized matrix.</returns>
    /// <exception cref="ArgumentException">A size mismatch, k not a multiple of the group, or a non-finite weight.</exception>
    public static LutQuantizedMatrix Quantize(ReadOnlySpan<float> weights, int m, int k, LutFormat format, TernaryScaleScope ternaryScope = TernaryScaleScope.PerTensor)
    {
        if (format.Bits == 0) throw new ArgumentException("format is default; create it with LutFormat's constructor.", nameof(format));
        LutQuantizedMatrix.ValidateShape(format, m, k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(weights), weights.Length, (long)m * k);
        for (int i = 0; i < weights.Length; i++)
            if (!float.IsFinite(weights[i])) ThrowHelper.Argument(nameof(weights), $"weights[{i}] = {weights[i]} is not finite; LUT formats need finite weights.");
        int gs = format.GroupSize, groups = k / gs;
        var codes = new byte[(long)m * k];
        var scales = new BFloat16[(long)m * groups];
        var offsets = new BFloat16[(long)m * groups];
        if (format.Kind == LutQuantKind.Ternary) QuantizeTernary(weights, m, k, gs, ternaryScope, codes, scales, offsets);
        else
        {
            for (int r = 0; r < m; r++)
                for (int g = 0; g < groups; g++)
                {
                    int start = r * k + g * gs;
                    QuantizeGroup(weights.Slice(start, gs), format, codes.AsSpan(start, gs), out scales[r * groups + g], out offsets[r * groups + g]);
                    if (!float.IsFinite((float)scales[r * groups + g]) || !float.IsFinite((float)offsets[r * groups + g]))
                        ThrowHelper.Argument(nameof(weights), $"weights row {r}, group {g} (columns {g * gs}..{g * gs + gs - 1}): magnitudes up to {MaxAbs(weights.Slice(start, gs))} overflow the bf16 scale/offset of {format}; LUT formats need |w| well below 3.4e38.");
                }
        }
        return new LutQuantizedMatrix(format, m, k, codes, scales, offsets);
    }

    /// <summary>Quantizes row-major bf16 weights (each widened exactly to fp32 first).</summary>
    /// <param name="weights"><c>m·k</c> weights, row-major.</param>
    /// <param name="m">Rows.</param>
    /// <param name="k">Columns; a multiple of the group size.</param>
    /// <param name="format">Target format.</param>
    /// <param name="ternaryScope">Scale scope for ternary (ignored otherwise).</param>
    /// <returns>The quantized matrix.</returns>
    /// <exception cref="ArgumentException">A size mismatch, k not a multiple of the group, or a non-finite weight.</exception>
    public static LutQuantizedMatrix Quantize(ReadOnlySpan<BFloat16> weights, int m, int k, LutFormat format, TernaryScaleScope ternaryScope = TernaryScaleScope.PerTensor)
    {
        var f = new float[weights.Length];
        for (int i = 0; i < f.Length; i++) f[i] = (float)weights[i];
        return Quantize(f, m, k, format, ternaryScope);
    }

    private static float MaxAbs(ReadOnlySpan<float> w)
    {
        float m = 0;
        foreach (float v in w) m = Math.Max(m, Math.Abs(v));
        return m;
    }

    private static void QuantizeGroup(ReadOnlySpan<float> w, LutFormat format, Span<byte> q, out BFloat16 scale, out BFloat16 offset)
    {
        int maxCode = format.MaxCode;
        double c = format.Center;
        if (format.Kind == LutQuantKind.Symmetric)
        {
            float absMax = 0;
            foreach (float v in w) absMax = Math.Max(absMax, Math.Abs(v));
            float s = (float)(BFloat16)(float)(absMax / c);
            scale = (BFloat16)s;
            offset = (BFloat16)0f;
            for (int i = 0; i < w.Length; i++)
                q[i] = s == 0 ? (byte)0 : (byte)Math.Clamp(Math.Round(w[i] / (double)s + c, MidpointRounding.ToEven), 0, maxCode);
            return;
        }
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (float v in w)
        {
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }
        float sb = (float)(BFloat16)(float)(((double)max - min) / maxCode);
        if (!float.IsFinite(sb))
        {
            // The range overflows bf16: report it (the caller throws) instead of folding the group to its midpoint.
            scale = (BFloat16)sb;
            offset = (BFloat16)0f;
            q.Clear();
            return;
        }
        if (sb == 0)
        {
            // Constant group (or a range too small for bf16): all codes 0, the value lives in the offset.
            scale = (BFloat16)0f;
            offset = (BFloat16)(float)(((double)min + max) * 0.5); // in double: min + max overflows fp32 above 1.7e38
            q.Clear();
            return;
        }
        double z = Math.Clamp(Math.Round(-min / (double)sb, MidpointRounding.ToEven), 0, maxCode);
        scale = (BFloat16)sb;
        offset = (BFloat16)(float)(sb * (c - z));
        for (int i = 0; i < w.Length; i++)
            q[i] = (byte)Math.Clamp(Math.Round(w[i] / (double)sb, MidpointRounding.ToEven) + z, 0, maxCode);
    }

    private static void QuantizeTernary(ReadOnlySpan<float> w, int m, int k, int gs, TernaryScaleScope scope, byte[] codes, BFloat16[] scales, BFloat16[] offsets)
    {
        int groups = k / gs;
        double tensorMean = 0;
        if (scope == TernaryScaleScope.PerTensor)
        {
            foreach (float v in w) tensorMean += Math.Abs(v);
            tensorMean /= Math.Max(1L, (long)m * k);
        }
        for (int r = 0; r < m; r++)
        {
            double mean = tensorMean;
            if (scope == TernaryScaleScope.PerRow)
            {
                mean = 0;
                for (int c = 0; c < k; c++) mean += Math.Abs(w[r * k + c]);
                mean /= Math.Max(1, k);
            }
            double gamma = Math.Max(mean, 1e-5);
            var s = (BFloat16)(float)gamma;
            var o = (BFloat16)((float)s * 0.5f); // exact: halving a bf16 only changes its exponent (barring underflow)
            for (int c = 0; c < k; c++)
            {
                double t = Math.Clamp(Math.Round(w[r * k + c] / gamma, MidpointRounding.ToEven), -1, 1);
                codes[r * k + c] = (byte)(t + 1);
            }
            for (int g = 0; g < groups; g++)
            {
                scales[r * groups + g] = s;
                offsets[r * groups + g] = o;
            }
        }
    }
}
