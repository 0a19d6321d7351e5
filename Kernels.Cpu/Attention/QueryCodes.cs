namespace Kernels.Cpu.Attention;

/// <summary>The part of the int8 query quantization (<see cref="Kernels.Attention.Reference.QueryQuantization.Quantize"/>)
/// that every vector width's <c>QuantizeQuery</c> shares: rows whose largest magnitude is 0, +∞ or NaN.</summary>
internal static unsafe class QueryCodes
{
    /// <summary>When <paramref name="amax"/> (the row's largest |q|) is 0, +∞ or NaN, writes all-zero codes (int8 and int16),
    /// sum 0 and <c>0·scale</c> as the dequantized values, and returns true with the reference's scale: 0 for an all-zero
    /// row, NaN otherwise. Returns false, writing nothing, for an ordinary row.</summary>
    public static bool Degenerate(float amax, int d, sbyte* codes, short* codes16, float* dequantized, out int sum, out float scale)
    {
        sum = 0;
        scale = 0;
        if (amax > 0 && !float.IsPositiveInfinity(amax)) return false;
        scale = amax == 0 ? 0f : float.NaN;
        for (int j = 0; j < d; j++)
        {
            codes[j] = 0;
            codes16[j] = 0;
            dequantized[j] = 0 * scale;
        }
        return true;
    }
}
