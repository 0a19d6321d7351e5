using System.Runtime.CompilerServices;

namespace Kernels;

/// <summary>bfloat16: sign, 8 exponent bits, 7 mantissa bits; the upper half of an IEEE binary32.</summary>
/// <remarks>
/// Conversion to <see cref="float"/> is exact (a 16-bit shift). Conversion from <see cref="float"/> rounds to nearest,
/// ties to even, and keeps NaN a (quiet) NaN with the sign preserved. The raw bits are public so that lossless
/// codecs such as DFloat11 can work on the bit pattern.
/// </remarks>
public readonly struct BFloat16 : IEquatable<BFloat16>
{
    /// <summary>The raw bit pattern.</summary>
    public readonly ushort Bits;

    /// <summary>Creates a value from its raw bit pattern.</summary>
    /// <param name="bits">The 16-bit pattern.</param>
    /// <returns>The value with exactly these bits.</returns>
    public static BFloat16 FromBits(ushort bits) => new(bits);

    private BFloat16(ushort bits) => Bits = bits;

    /// <summary>Converts to binary32 exactly.</summary>
    /// <param name="value">The bfloat16 value.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static explicit operator float(BFloat16 value) => BitConverter.Int32BitsToSingle(value.Bits << 16);

    /// <summary>Rounds a binary32 to bfloat16 (nearest, ties to even; NaN stays NaN).</summary>
    /// <param name="value">The binary32 value.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static explicit operator BFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
        {
            return new BFloat16((ushort)((bits >> 16) | 0x0040)); // quiet NaN, sign and top payload kept
        }
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        return new BFloat16((ushort)((bits + rounding) >> 16));
    }

    /// <summary>Converts to binary32 exactly.</summary>
    /// <returns>The value as a float.</returns>
    public float ToSingle() => (float)this;

    /// <inheritdoc/>
    public bool Equals(BFloat16 other) => Bits == other.Bits;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BFloat16 other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => Bits;

    /// <inheritdoc/>
    public override string ToString() => ((float)this).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Bitwise equality (so NaN patterns compare equal to themselves).</summary>
    /// <param name="left">Left operand.</param>
    /// <param name="right">Right operand.</param>
    public static bool operator ==(BFloat16 left, BFloat16 right) => left.Bits == right.Bits;

    /// <summary>Bitwise inequality.</summary>
    /// <param name="left">Left operand.</param>
    /// <param name="right">Right operand.</param>
    public static bool operator !=(BFloat16 left, BFloat16 right) => left.Bits != right.Bits;
}
