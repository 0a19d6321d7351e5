using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Attention;

/// <summary>Reads elements of a K or V row straight into a 512-bit (AVX-512) or 256-bit (AVX2) register, in the domain the
/// register-tiled kernel (<see cref="PagedAttentionTiled{TTile}"/>) computes in: the stored value up to a per-token or per-call
/// factor that the kernel folds into the logits (K) or the probabilities (V).</summary>
/// <remarks>Every loader is exact: the register holds <c>value / factor</c> without rounding. Pairs of half-rows apart,
/// because an int4 byte holds elements i and half + i.</remarks>
internal unsafe interface IKvRow
{
    /// <summary>Elements <c>[i, i + 16)</c> (<paramref name="lo"/>) and <c>[half + i, half + i + 16)</c> (<paramref name="hi"/>) of
    /// the row at <paramref name="row"/> (head_dim <c>2·half</c>, <c>i &lt; half</c>); <paramref name="zero"/> is the row's int4
    /// zero point (ignored by other formats).</summary>
    static abstract void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi);

    /// <summary>Whether the loader reads the <c>zero</c> argument (int4's zero point); callers skip loading it otherwise.</summary>
    static virtual bool UsesZero => false;

    /// <summary>The 8-element (AVX2) form of <see cref="Load2(byte*, int, int, Vector512{int}, out Vector512{float}, out Vector512{float})"/>.</summary>
    static abstract void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi);

    /// <summary>The 4-element (portable Vector128: SSE, Arm64 AdvSimd) form.</summary>
    static abstract void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi);
}

/// <summary>fp32 rows, as stored (factor 1).</summary>
internal unsafe struct KvF32 : IKvRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        lo = Vector512.Load((float*)row + i);
        hi = Vector512.Load((float*)row + half + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        lo = Vector256.Load((float*)row + i);
        hi = Vector256.Load((float*)row + half + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        lo = Vector128.Load((float*)row + i);
        hi = Vector128.Load((float*)row + half + i);
    }
}

/// <summary>fp16 rows scaled by 2⁻¹¹² (factor 2¹¹²), finite values only: <c>vpmovsxwd</c> copies the sign into bits 31..16,
/// <c>vpslld 13</c> moves exponent and mantissa to bits 27..13 with the sign at bit 31, <c>vpandd 0x8FFFE000</c> clears the
/// rest. The fp32 value of that pattern is exactly <c>h·2⁻¹¹²</c>, subnormal fp16 included (it becomes an fp32 subnormal), so
/// the usual multiply by 2¹¹² moves into the pre-scaled queries and probabilities. Inf/NaN would read as finite: pages that
/// may hold them use <see cref="KvF16Special"/>.</summary>
internal unsafe struct KvF16 : IKvRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        lo = Widen(Avx512F.ConvertToVector512Int32(Vector256.Load((short*)row + i))); // vpmovsxwd
        hi = Widen(Avx512F.ConvertToVector512Int32(Vector256.Load((short*)row + half + i)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        lo = Widen(Avx2.ConvertToVector256Int32((short*)row + i)); // vpmovsxwd ymm
        hi = Widen(Avx2.ConvertToVector256Int32((short*)row + half + i));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        lo = Widen(Vector128.WidenLower(Load4x16((short*)row + i)));
        hi = Widen(Vector128.WidenLower(Load4x16((short*)row + half + i)));
    }

    /// <summary>Four 16-bit values into the low half of a vector (one 8-byte load).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<short> Load4x16(short* p) => Vector128.CreateScalar(*(long*)p).AsInt16();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Widen(Vector512<int> h) => ((h << 13) & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Widen(Vector128<int> h) => ((h << 13) & Vector128.Create(unchecked((int)0x8FFFE000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Widen(Vector256<int> h) => ((h << 13) & Vector256.Create(unchecked((int)0x8FFFE000))).AsSingle();
}

/// <summary><see cref="KvF16"/> that also maps exponent 31 to the fp32 all-ones exponent, so ±Inf and NaN stay Inf and NaN
/// (three more instructions: <c>vpandd</c>, <c>vpcmpeqd</c>, a masked <c>vpord</c>).</summary>
internal unsafe struct KvF16Special : IKvRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        lo = Widen(Avx512F.ConvertToVector512Int32(Vector256.Load((short*)row + i)));
        hi = Widen(Avx512F.ConvertToVector512Int32(Vector256.Load((short*)row + half + i)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        lo = Widen(Avx2.ConvertToVector256Int32((short*)row + i));
        hi = Widen(Avx2.ConvertToVector256Int32((short*)row + half + i));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        lo = Widen(Vector128.WidenLower(KvF16.Load4x16((short*)row + i)));
        hi = Widen(Vector128.WidenLower(KvF16.Load4x16((short*)row + half + i)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen(Vector512<int> h)
    {
        var special = Vector512.Equals(h & Vector512.Create(0x7C00), Vector512.Create(0x7C00)) & Vector512.Create(0x7F800000);
        return (KvF16.Widen(h).AsInt32() | special).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Widen(Vector128<int> h)
    {
        var special = Vector128.Equals(h & Vector128.Create(0x7C00), Vector128.Create(0x7C00)) & Vector128.Create(0x7F800000);
        return (KvF16.Widen(h).AsInt32() | special).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Widen(Vector256<int> h)
    {
        var special = Vector256.Equals(h & Vector256.Create(0x7C00), Vector256.Create(0x7C00)) & Vector256.Create(0x7F800000);
        return (KvF16.Widen(h).AsInt32() | special).AsSingle();
    }
}

/// <summary>fp16 rows at their true value (factor 1): <see cref="KvF16Special"/> times 2¹¹² (exact, subnormals included;
/// Inf and NaN stay so). For items whose queries are too large to pre-scale by 2¹¹² (|q| ≥ 2¹⁵); one more multiply.</summary>
internal unsafe struct KvF16Exact : IKvRow
{
    private const float TwoPow112 = 5.192296858534828E+33f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        KvF16Special.Load2(row, i, half, zero, out lo, out hi);
        lo *= Vector512.Create(TwoPow112);
        hi *= Vector512.Create(TwoPow112);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        KvF16Special.Load2(row, i, half, zero, out lo, out hi);
        lo *= Vector256.Create(TwoPow112);
        hi *= Vector256.Create(TwoPow112);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        KvF16Special.Load2(row, i, half, zero, out lo, out hi);
        lo *= Vector128.Create(TwoPow112);
        hi *= Vector128.Create(TwoPow112);
    }
}

/// <summary>bf16 rows, exact (<c>vpmovzxwd</c> + <c>vpslld 16</c>; factor 1).</summary>
internal unsafe struct KvBf16 : IKvRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        lo = (Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)row + i)) << 16).AsSingle();
        hi = (Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)row + half + i)) << 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        lo = (Avx2.ConvertToVector256Int32((ushort*)row + i) << 16).AsSingle();
        hi = (Avx2.ConvertToVector256Int32((ushort*)row + half + i) << 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        lo = (Vector128.WidenLower(KvF16.Load4x16((short*)row + i).AsUInt16()) << 16).AsSingle();
        hi = (Vector128.WidenLower(KvF16.Load4x16((short*)row + half + i).AsUInt16()) << 16).AsSingle();
    }
}

/// <summary>int8 rows as the integer codes (<c>vpmovsxbd</c> + <c>vcvtdq2ps</c>); the scale is the factor.</summary>
internal unsafe struct KvI8 : IKvRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        lo = Vector512.ConvertToSingle(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)row + i)));
        hi = Vector512.ConvertToSingle(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)row + half + i)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        lo = Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32((sbyte*)row + i));
        hi = Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32((sbyte*)row + half + i));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        lo = Vector128.ConvertToSingle(Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(*(int*)(row + i)).AsSByte())));
        hi = Vector128.ConvertToSingle(Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(*(int*)(row + half + i)).AsSByte())));
    }
}

/// <summary>int4 rows as <c>q − z</c> (an exact small integer: the cache's zero points are integers); the scale is the factor.
/// Element <c>i &lt; half</c> is the low nibble of byte <c>i</c>, element <c>i + half</c> its high nibble.</summary>
internal unsafe struct KvI4 : IKvRow
{
    /// <inheritdoc/>
    public static bool UsesZero => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        var b = Avx512F.ConvertToVector512Int32(Vector128.Load(row + i)); // vpmovzxbd: bytes i..i+15
        lo = Vector512.ConvertToSingle((b & Vector512.Create(15)) - zero);
        hi = Vector512.ConvertToSingle((b >>> 4) - zero);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        var b = Avx2.ConvertToVector256Int32(row + i); // vpmovzxbd ymm: bytes i..i+7
        lo = Vector256.ConvertToSingle((b & Vector256.Create(15)) - zero);
        hi = Vector256.ConvertToSingle((b >>> 4) - zero);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        var b = Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(*(int*)(row + i)).AsByte())).AsInt32(); // bytes i..i+3
        lo = Vector128.ConvertToSingle((b & Vector128.Create(15)) - zero);
        hi = Vector128.ConvertToSingle((b >>> 4) - zero);
    }
}

/// <summary>Widens 16 / 8 / 4 sign-extended bytes (one fp8 code per int32 lane) to fp32 for <see cref="KvF8{TW}"/>.</summary>
internal interface IFp8Widener
{
    /// <summary>16 codes.</summary>
    static abstract Vector512<float> Widen(Vector512<int> b);

    /// <summary>8 codes.</summary>
    static abstract Vector256<float> Widen(Vector256<int> b);

    /// <summary>4 codes.</summary>
    static abstract Vector128<float> Widen(Vector128<int> b);
}

/// <summary>fp8 rows (one byte per value): <c>vpmovsxbd</c> copies each code's sign into bits 31..8, then
/// <typeparamref name="TW"/> shifts exponent and mantissa into place (<see cref="E5M2"/>, <see cref="E4M3"/> and their
/// NaN-aware and true-value forms).</summary>
internal unsafe struct KvF8<TW> : IKvRow where TW : struct, IFp8Widener
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector512<int> zero, out Vector512<float> lo, out Vector512<float> hi)
    {
        lo = TW.Widen(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)row + i)));
        hi = TW.Widen(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)row + half + i)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector256<int> zero, out Vector256<float> lo, out Vector256<float> hi)
    {
        lo = TW.Widen(Avx2.ConvertToVector256Int32((sbyte*)row + i));
        hi = TW.Widen(Avx2.ConvertToVector256Int32((sbyte*)row + half + i));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load2(byte* row, int i, int half, Vector128<int> zero, out Vector128<float> lo, out Vector128<float> hi)
    {
        lo = TW.Widen(Load4(row + i));
        hi = TW.Widen(Load4(row + half + i));
    }

    /// <summary>Four signed bytes at <paramref name="p"/>, sign-extended to int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Load4(byte* p) => Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(*(int*)p).AsSByte()));
}

/// <summary>E5M2 scaled by 2⁻¹¹² (factor 2¹¹², as fp16: an E5M2 byte is the top byte of an fp16), finite values only:
/// <c>vpslld 21</c> moves exponent and mantissa to bits 27..21 below the sign at bit 31, <c>vpandd 0x8FE00000</c> clears
/// the rest; the pattern's fp32 value is exactly <c>x·2⁻¹¹²</c>, subnormals included.</summary>
internal struct E5M2 : IFp8Widener
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(Vector512<int> b) => ((b << 21) & Vector512.Create(unchecked((int)0x8FE00000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<int> b) => ((b << 21) & Vector256.Create(unchecked((int)0x8FE00000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<int> b) => ((b << 21) & Vector128.Create(unchecked((int)0x8FE00000))).AsSingle();
}

/// <summary><see cref="E5M2"/> with exponent 31 (±Inf, NaN) kept: the exponent field forced to all ones (three more
/// instructions), for pages flagged as holding such values.</summary>
internal struct E5M2Special : IFp8Widener
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(Vector512<int> b) =>
        (E5M2.Widen(b).AsInt32() | (Vector512.Equals(b & Vector512.Create(0x7C), Vector512.Create(0x7C)) & Vector512.Create(0x7F800000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<int> b) =>
        (E5M2.Widen(b).AsInt32() | (Vector256.Equals(b & Vector256.Create(0x7C), Vector256.Create(0x7C)) & Vector256.Create(0x7F800000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<int> b) =>
        (E5M2.Widen(b).AsInt32() | (Vector128.Equals(b & Vector128.Create(0x7C), Vector128.Create(0x7C)) & Vector128.Create(0x7F800000))).AsSingle();
}

/// <summary>E5M2 at its true value (factor 1): <see cref="E5M2Special"/> times 2¹¹², for items whose queries are too
/// large to pre-scale.</summary>
internal struct E5M2Exact : IFp8Widener
{
    private const float TwoPow112 = 5.192296858534828E+33f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(Vector512<int> b) => E5M2Special.Widen(b) * Vector512.Create(TwoPow112);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<int> b) => E5M2Special.Widen(b) * Vector256.Create(TwoPow112);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<int> b) => E5M2Special.Widen(b) * Vector128.Create(TwoPow112);
}

/// <summary>E4M3 scaled by 2⁻¹²⁰ (factor 2¹²⁰), finite values only: <c>vpslld 20</c> (exponent and mantissa to bits
/// 26..20 below the sign at bit 31), <c>vpandd 0x87F00000</c>; the pattern's fp32 value is exactly <c>x·2⁻¹²⁰</c>,
/// subnormals included.</summary>
internal struct E4M3 : IFp8Widener
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(Vector512<int> b) => ((b << 20) & Vector512.Create(unchecked((int)0x87F00000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<int> b) => ((b << 20) & Vector256.Create(unchecked((int)0x87F00000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<int> b) => ((b << 20) & Vector128.Create(unchecked((int)0x87F00000))).AsSingle();
}

/// <summary><see cref="E4M3"/> with NaN kept (<c>S.1111.111</c>: the exponent field forced to all ones), for pages flagged
/// as holding NaN.</summary>
internal struct E4M3Special : IFp8Widener
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(Vector512<int> b) =>
        (E4M3.Widen(b).AsInt32() | (Vector512.Equals(b & Vector512.Create(0x7F), Vector512.Create(0x7F)) & Vector512.Create(0x7F800000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<int> b) =>
        (E4M3.Widen(b).AsInt32() | (Vector256.Equals(b & Vector256.Create(0x7F), Vector256.Create(0x7F)) & Vector256.Create(0x7F800000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<int> b) =>
        (E4M3.Widen(b).AsInt32() | (Vector128.Equals(b & Vector128.Create(0x7F), Vector128.Create(0x7F)) & Vector128.Create(0x7F800000))).AsSingle();
}

/// <summary>E4M3 at its true value (factor 1): <see cref="E4M3Special"/> times 2¹²⁰, for items whose queries are too
/// large to pre-scale (|q| ≥ 2⁸).</summary>
internal struct E4M3Exact : IFp8Widener
{
    private const float TwoPow120 = 1.329227995784916E+36f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(Vector512<int> b) => E4M3Special.Widen(b) * Vector512.Create(TwoPow120);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<int> b) => E4M3Special.Widen(b) * Vector256.Create(TwoPow120);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<int> b) => E4M3Special.Widen(b) * Vector128.Create(TwoPow120);
}
