namespace Kernels;

/// <summary>Conversions between fp32 and the two OCP 8-bit floating-point formats, <see cref="DType.F8E4M3"/> and
/// <see cref="DType.F8E5M2"/>, as bytes.</summary>
/// <remarks>
/// <para>Encoding rounds to nearest, ties to even, and saturates: a finite value beyond the largest finite code, and ±Inf,
/// become ±448 (E4M3) or ±57344 (E5M2), as CUDA's <c>__nv_fp8_e4m3</c> / <c>__nv_fp8_e5m2</c> constructors do
/// (<c>__NV_SATFINITE</c>). NaN becomes NaN (<c>0x7F</c>, with the input's sign). −0 keeps its sign. Values below half the
/// smallest subnormal (2⁻¹⁰ for E4M3, 2⁻¹⁷ for E5M2) become ±0.</para>
/// <para>Decoding is exact (every code is an fp32 value): E4M3 <c>S.1111.111</c> is NaN; E5M2 exponent 31 is ±Inf
/// (mantissa 0) or NaN.</para>
/// </remarks>
public static class Float8
{
    /// <summary>The largest finite E4M3 value, 448 = 1.75 · 2⁸.</summary>
    public const float E4M3MaxValue = 448f;

    /// <summary>The largest finite E5M2 value, 57344 = 1.75 · 2¹⁵.</summary>
    public const float E5M2MaxValue = 57344f;

    private static readonly float[] s_e4m3 = Table(e5m2: false);
    private static readonly float[] s_e5m2 = Table(e5m2: true);

    /// <summary>The 256 E4M3 codes as fp32 (index = code).</summary>
    public static ReadOnlySpan<float> E4M3Values => s_e4m3;

    /// <summary>The 256 E5M2 codes as fp32 (index = code).</summary>
    public static ReadOnlySpan<float> E5M2Values => s_e5m2;

    /// <summary>The fp32 value of an E4M3 code.</summary>
    /// <param name="code">The byte.</param>
    /// <returns>Its exact value (NaN for <c>0x7F</c> and <c>0xFF</c>).</returns>
    public static float E4M3ToSingle(byte code) => s_e4m3[code];

    /// <summary>The fp32 value of an E5M2 code.</summary>
    /// <param name="code">The byte.</param>
    /// <returns>Its exact value (±Inf for exponent 31 with mantissa 0, NaN for other exponent-31 codes).</returns>
    public static float E5M2ToSingle(byte code) => s_e5m2[code];

    /// <summary>Rounds <paramref name="value"/> to E4M3 (nearest, ties to even, saturating to ±448; NaN stays NaN).</summary>
    /// <param name="value">The value.</param>
    /// <returns>The code.</returns>
    public static byte SingleToE4M3(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value), sign = (bits >> 24) & 0x80, abs = bits & 0x7FFF_FFFF;
        if (abs > 0x7F80_0000) return (byte)(sign | 0x7F);
        if (abs >= 0x43E0_0000) return (byte)(sign | 0x7E);                                              // ≥ 448, ±Inf: saturate
        if (abs < 0x3C80_0000) return (byte)(sign | (uint)MathF.Round(BitConverter.UInt32BitsToSingle(abs) * 512f)); // < 2^-6: units of 2^-9
        uint code = ((abs + 0x7_FFFF + ((abs >> 20) & 1)) >> 20) - (120 << 3);                            // rebias 127 → 7, 3 mantissa bits
        return (byte)(sign | Math.Min(code, 0x7Eu));
    }

    /// <summary>Rounds <paramref name="value"/> to E5M2 (nearest, ties to even, saturating to ±57344; NaN stays NaN).</summary>
    /// <param name="value">The value.</param>
    /// <returns>The code.</returns>
    public static byte SingleToE5M2(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value), sign = (bits >> 24) & 0x80, abs = bits & 0x7FFF_FFFF;
        if (abs > 0x7F80_0000) return (byte)(sign | 0x7F);
        if (abs >= 0x4760_0000) return (byte)(sign | 0x7B);                                                // ≥ 57344, ±Inf: saturate
        if (abs < 0x3880_0000) return (byte)(sign | (uint)MathF.Round(BitConverter.UInt32BitsToSingle(abs) * 65536f)); // < 2^-14: units of 2^-16
        uint code = ((abs + 0xF_FFFF + ((abs >> 21) & 1)) >> 21) - (112 << 2);                             // rebias 127 → 15, 2 mantissa bits
        return (byte)(sign | Math.Min(code, 0x7Bu));
    }

    /// <summary>Whether an E4M3 code is NaN (the format's only non-finite code).</summary>
    /// <param name="code">The byte.</param>
    /// <returns>True for <c>0x7F</c> and <c>0xFF</c>.</returns>
    public static bool IsE4M3NonFinite(byte code) => (code & 0x7F) == 0x7F;

    /// <summary>Whether an E5M2 code is ±Inf or NaN (exponent 31).</summary>
    /// <param name="code">The byte.</param>
    /// <returns>True when the exponent bits are all ones.</returns>
    public static bool IsE5M2NonFinite(byte code) => (code & 0x7C) == 0x7C;

    private static double DecodeMagnitude(int code, int mantissaBits, int bias)
    {
        int e = (code & 0x7F) >> mantissaBits, m = code & ((1 << mantissaBits) - 1);
        return e == 0
            ? Math.ScaleB(m, 1 - bias - mantissaBits)
            : Math.ScaleB((1 << mantissaBits) + m, e - bias - mantissaBits);
    }

    private static float[] Table(bool e5m2)
    {
        var t = new float[256];
        for (int c = 0; c < 256; c++)
        {
            float magnitude;
            if (e5m2 && IsE5M2NonFinite((byte)c)) magnitude = (c & 3) == 0 ? float.PositiveInfinity : float.NaN;
            else if (!e5m2 && IsE4M3NonFinite((byte)c)) magnitude = float.NaN;
            else magnitude = (float)DecodeMagnitude(c, e5m2 ? 2 : 3, e5m2 ? 15 : 7);
            t[c] = (c & 0x80) != 0 ? -magnitude : magnitude;
        }
        return t;
    }
}
