namespace Kernels.Quant.Fpx;

/// <summary>The two FP6-LLM TC-FPx floating-point weight formats.</summary>
public enum FpxFormat
{
    /// <summary>FP6 e3m2: sign, 3 exponent bits (bias 3), 2 mantissa bits; subnormals; no Inf/NaN. Max 28.</summary>
    Fp6E3M2 = 1,

    /// <summary>FP5 e2m2: sign, 2 exponent bits (bias 1), 2 mantissa bits; subnormals; no Inf/NaN. Max 7.</summary>
    Fp5E2M2 = 2,
}

/// <summary>Exact encode/decode of one FP6 e3m2 or FP5 e2m2 code (the scalar specification).</summary>
/// <remarks>
/// A code is <c>s e…e m m</c> with the sign in the top bit (bit 5 for FP6, bit 4 for FP5). Value:
/// <c>e &gt; 0: (−1)^s · (1 + m/4) · 2^(e − bias)</c>, <c>e = 0: (−1)^s · (m/4) · 2^(1 − bias)</c>.
/// FP6: bias 3, max 28 (0x1F), min subnormal 0.0625 (0x01), 1.0 = 0x0C, −0 = 0x20.
/// FP5: bias 1, max 7 (0x0F), min subnormal 0.25 (0x01), 1.0 = 0x04, −0 = 0x10.
/// <see cref="Encode(FpxFormat, double)"/> rounds to nearest, ties to even, onto the grid including subnormals, and saturates
/// at ±max; the sign of zero (and of values that round to zero) is kept. NaN cannot be encoded (callers reject it first).
/// </remarks>
public static class FpxCodec
{
    /// <summary>Code bits (6 or 5).</summary>
    /// <param name="format">The format.</param>
    /// <returns>The width of one code in bits.</returns>
    public static int Bits(FpxFormat format) => format == FpxFormat.Fp6E3M2 ? 6 : 5;

    /// <summary>Exponent bias (3 or 1).</summary>
    /// <param name="format">The format.</param>
    /// <returns>The bias.</returns>
    public static int Bias(FpxFormat format) => format == FpxFormat.Fp6E3M2 ? 3 : 1;

    /// <summary>Largest finite magnitude (28 or 7).</summary>
    /// <param name="format">The format.</param>
    /// <returns>The maximum.</returns>
    public static float MaxValue(FpxFormat format) => format == FpxFormat.Fp6E3M2 ? 28f : 7f;

    /// <summary>Number of distinct codes (64 or 32).</summary>
    /// <param name="format">The format.</param>
    /// <returns>2^bits.</returns>
    public static int CodeCount(FpxFormat format) => 1 << Bits(format);

    /// <summary>
    /// The power of two that turns the fp32 bit pattern <c>(s &lt;&lt; 31) | ((code &amp; magnitudeMask) &lt;&lt; 21)</c> into the code's value:
    /// 2^124 for FP6 (127 − 3), 2^126 for FP5 (127 − 1). The kernels fold it into the row scale.
    /// </summary>
    /// <param name="format">The format.</param>
    /// <returns>The exponent (124 or 126).</returns>
    public static int Fp32BiasShift(FpxFormat format) => 127 - Bias(format);

    /// <summary>Decodes one code exactly.</summary>
    /// <param name="format">The format.</param>
    /// <param name="code">The code (only the low <see cref="Bits"/> bits are used).</param>
    /// <returns>The value (exact in float).</returns>
    public static float Decode(FpxFormat format, int code)
    {
        int bits = Bits(format), expBits = bits - 3, bias = Bias(format);
        int s = (code >> (bits - 1)) & 1;
        int e = (code >> 2) & ((1 << expBits) - 1);
        int m = code & 3;
        double v = e == 0 ? m / 4.0 * Math.ScaleB(1.0, 1 - bias) : (1 + m / 4.0) * Math.ScaleB(1.0, e - bias);
        return (float)(s == 1 ? -v : v);
    }

    /// <summary>Rounds <paramref name="value"/> to the nearest code (ties to even), saturating at ±max and keeping the sign of zero.</summary>
    /// <param name="format">The format.</param>
    /// <param name="value">A non-NaN value (±Inf saturates).</param>
    /// <returns>The code.</returns>
    /// <exception cref="ArgumentException"><paramref name="value"/> is NaN.</exception>
    public static byte Encode(FpxFormat format, double value)
    {
        if (double.IsNaN(value)) throw new ArgumentException("NaN has no FP6/FP5 code.", nameof(value));
        int bits = Bits(format), bias = Bias(format);
        int sign = double.IsNegative(value) ? 1 << (bits - 1) : 0;
        double a = Math.Abs(value);
        int maxMag = (1 << (bits - 1)) - 1;
        if (a >= MaxValue(format)) return (byte)(sign | maxMag);
        int mag;
        if (a < Math.ScaleB(1.0, 1 - bias))
        {
            // Subnormal range: step 2^(1 − bias − 2). q = 4 lands exactly on the smallest normal (e = 1, m = 0).
            mag = (int)Math.Round(Math.ScaleB(a, bias + 1), MidpointRounding.ToEven);
        }
        else
        {
            int e = Math.ILogB(a);
            int q = (int)Math.Round((Math.ScaleB(a, -e) - 1) * 4, MidpointRounding.ToEven);
            if (q == 4)
            {
                e++;
                q = 0;
            }
            mag = Math.Min(((e + bias) << 2) | q, maxMag);
        }
        return (byte)(sign | mag);
    }
}
