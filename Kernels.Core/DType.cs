namespace Kernels;

/// <summary>Element types understood by the tensor API and the kernels.</summary>
/// <remarks>
/// Dense types have a byte size; packed weight types (<see cref="DTypeInfo.IsPacked(DType)"/>) are stored by the format objects
/// of <c>Kernels.Quant</c>, and <see cref="DTypeInfo.BitsPerElement(DType)"/> gives their payload bits per weight
/// (scales and zero points not included).
/// </remarks>
public enum DType
{
    /// <summary>IEEE 754 binary32.</summary>
    F32,
    /// <summary>IEEE 754 binary16 (<see cref="System.Half"/>).</summary>
    F16,
    /// <summary>bfloat16: the top 16 bits of a binary32 (<see cref="BFloat16"/>).</summary>
    BF16,
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>Unsigned 8-bit integer.</summary>
    U8,
    /// <summary>Signed 32-bit integer.</summary>
    I32,
    /// <summary>Packed unsigned 1-bit weights (LUT mpGEMM).</summary>
    U1,
    /// <summary>Packed unsigned 2-bit weights (LUT mpGEMM).</summary>
    U2,
    /// <summary>Packed unsigned 3-bit weights (LUT mpGEMM).</summary>
    U3,
    /// <summary>Packed unsigned 4-bit weights (LUT mpGEMM, QServe W4).</summary>
    U4,
    /// <summary>Packed ternary weights {-1, 0, +1} (BitNet b1.58).</summary>
    Ternary,
    /// <summary>FP6 e3m2 (FP6-LLM), packed in 2+4-bit segments.</summary>
    Fp6E3M2,
    /// <summary>FP5 e2m2 (FP6-LLM TC-FPx), packed in 1+4-bit segments.</summary>
    Fp5E2M2,
    /// <summary>Signed 6-bit integer (FlexQ INT6), packed densely.</summary>
    I6,
    /// <summary>DFloat11: losslessly compressed bfloat16 (Huffman-coded exponents).</summary>
    DFloat11,
    /// <summary>Packed signed 4-bit integer (KV4 caches).</summary>
    I4,
    /// <summary>OCP FP8 E4M3 (the "fn" variant: bias 7, no infinities, NaN = S.1111.111, largest finite ±448), one byte per
    /// element; conversions in <see cref="Float8"/>.</summary>
    F8E4M3,
    /// <summary>OCP FP8 E5M2 (bias 15, IEEE-style ±Inf and NaN, largest finite ±57344: the top byte of an fp16), one byte per
    /// element; conversions in <see cref="Float8"/>.</summary>
    F8E5M2,
}

/// <summary>Sizes and classification of <see cref="DType"/> values.</summary>
public static class DTypeInfo
{
    /// <summary>Returns the size of one element in bytes, for dense types.</summary>
    /// <param name="type">The element type.</param>
    /// <returns>The element size in bytes.</returns>
    /// <exception cref="NotSupportedException"><paramref name="type"/> is a packed type with no whole-byte element.</exception>
    public static int SizeInBytes(this DType type) => type switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.I8 or DType.U8 or DType.F8E4M3 or DType.F8E5M2 => 1,
        _ => throw new NotSupportedException($"DType {type} is packed and has no per-element byte size; use BitsPerElement."),
    };

    /// <summary>Returns the payload bits per element (dense types: 8 × byte size).</summary>
    /// <param name="type">The element type.</param>
    /// <returns>Bits per element, excluding per-group metadata for packed types.</returns>
    public static double BitsPerElement(this DType type) => type switch
    {
        DType.U1 => 1,
        DType.U2 or DType.Ternary => 2,
        DType.U3 => 3,
        DType.U4 or DType.I4 => 4,
        DType.Fp6E3M2 or DType.I6 => 6,
        DType.Fp5E2M2 => 5,
        DType.DFloat11 => 11,
        _ => 8 * SizeInBytes(type),
    };

    /// <summary>True for packed weight types that only format objects can hold.</summary>
    /// <param name="type">The element type.</param>
    /// <returns>Whether the type is packed (sub-byte or compressed).</returns>
    public static bool IsPacked(this DType type) => type is >= DType.U1 and not (DType.F8E4M3 or DType.F8E5M2);

    /// <summary>Maps a CLR element type to its <see cref="DType"/>.</summary>
    /// <typeparam name="T">float, Half, BFloat16, sbyte, byte or int.</typeparam>
    /// <returns>The matching dtype.</returns>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> has no dtype.</exception>
    public static DType Of<T>() where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return DType.F32;
        if (typeof(T) == typeof(Half)) return DType.F16;
        if (typeof(T) == typeof(BFloat16)) return DType.BF16;
        if (typeof(T) == typeof(sbyte)) return DType.I8;
        if (typeof(T) == typeof(byte)) return DType.U8;
        if (typeof(T) == typeof(int)) return DType.I32;
        throw new NotSupportedException($"Element type {typeof(T).Name} has no Kernels DType; supported: float, Half, BFloat16, sbyte, byte, int.");
    }
}
