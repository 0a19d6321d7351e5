using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Simd;

/// <summary>
/// A float vector of one width, so one kernel body can be written once and instantiated per ISA path
/// (<see cref="F32x16"/> = AVX-512, <see cref="F32x8"/> = AVX2, <see cref="F32x4"/> = Vector128).
/// </summary>
/// <remarks>
/// The JIT specialises generic code per struct type argument and inlines these members, so the generated loop is the
/// same as hand-written intrinsics (checked with DOTNET_JitDisasm). <c>ISimdVector</c> is internal to the BCL, hence this.
/// </remarks>
internal interface ISimdF32<TSelf> where TSelf : struct, ISimdF32<TSelf>
{
    /// <summary>Lanes.</summary>
    static abstract int Count { get; }

    /// <summary>All lanes zero.</summary>
    static abstract TSelf Zero { get; }

    /// <summary>Loads <see cref="Count"/> floats.</summary>
    static abstract TSelf Load(ref float source);

    /// <summary>Loads <see cref="Count"/> bf16 values (raw bits) and widens them exactly to float.</summary>
    static abstract TSelf LoadBf16(ref ushort source);

    /// <summary>Broadcasts a scalar.</summary>
    static abstract TSelf Broadcast(float value);

    /// <summary>a·b + c (fused where the ISA has FMA).</summary>
    static abstract TSelf MultiplyAdd(TSelf a, TSelf b, TSelf c);

    /// <summary>Lane-wise a + b.</summary>
    static abstract TSelf Add(TSelf a, TSelf b);

    /// <summary>Sum of all lanes (pairwise tree).</summary>
    static abstract float Sum(TSelf v);
}

/// <summary>Loads either float or bf16 weights as float vectors.</summary>
internal static class WeightLoad
{
    /// <summary>Loads Count weights of type <typeparamref name="TW"/> (float or BFloat16) as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TV, TW>(ref TW source) where TV : struct, ISimdF32<TV> where TW : unmanaged
    {
        if (typeof(TW) == typeof(float)) return TV.Load(ref Unsafe.As<TW, float>(ref source));
        Debug.Assert(typeof(TW) == typeof(BFloat16));
        return TV.LoadBf16(ref Unsafe.As<TW, ushort>(ref source));
    }

    /// <summary>Converts one weight to float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scalar<TW>(TW value) where TW : unmanaged
    {
        if (typeof(TW) == typeof(float)) return Unsafe.As<TW, float>(ref value);
        return BitConverter.Int32BitsToSingle(Unsafe.As<TW, ushort>(ref value) << 16);
    }
}

/// <summary>16 floats in a zmm register (AVX-512).</summary>
internal readonly struct F32x16 : ISimdF32<F32x16>
{
    public readonly Vector512<float> V;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public F32x16(Vector512<float> v) => V = v;

    public static int Count => 16;

    public static F32x16 Zero => new(Vector512<float>.Zero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x16 Load(ref float source) => new(Vector512.LoadUnsafe(ref source));

    // vpmovzxwd zmm, ymm/m256 then vpslld 16: bf16 bits become the top half of a float, exactly.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x16 LoadBf16(ref ushort source) =>
        new(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.LoadUnsafe(ref source)), 16).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x16 Broadcast(float value) => new(Vector512.Create(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x16 Add(F32x16 a, F32x16 b) => new(a.V + b.V);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x16 MultiplyAdd(F32x16 a, F32x16 b, F32x16 c) => new(Avx512F.FusedMultiplyAdd(a.V, b.V, c.V));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(F32x16 v) => F32x8.Sum(new F32x8(v.V.GetLower() + v.V.GetUpper()));
}

/// <summary>8 floats in a ymm register (AVX2 + FMA).</summary>
internal readonly struct F32x8 : ISimdF32<F32x8>
{
    public readonly Vector256<float> V;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public F32x8(Vector256<float> v) => V = v;

    public static int Count => 8;

    public static F32x8 Zero => new(Vector256<float>.Zero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x8 Load(ref float source) => new(Vector256.LoadUnsafe(ref source));

    // vpmovzxwd ymm, xmm/m128 then vpslld 16.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x8 LoadBf16(ref ushort source) =>
        new(Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref source)), 16).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x8 Broadcast(float value) => new(Vector256.Create(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x8 Add(F32x8 a, F32x8 b) => new(a.V + b.V);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x8 MultiplyAdd(F32x8 a, F32x8 b, F32x8 c) => new(Fma.MultiplyAdd(a.V, b.V, c.V));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(F32x8 v) => F32x4.Sum(new F32x4(v.V.GetLower() + v.V.GetUpper()));
}

/// <summary>4 floats in a 128-bit register (SSE/AdvSimd via the portable Vector128 API).</summary>
internal readonly struct F32x4 : ISimdF32<F32x4>
{
    public readonly Vector128<float> V;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public F32x4(Vector128<float> v) => V = v;

    public static int Count => 4;

    public static F32x4 Zero => new(Vector128<float>.Zero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x4 Load(ref float source) => new(Vector128.LoadUnsafe(ref source));

    // Read exactly 8 bytes (4 bf16) so the last vector never reads past the row, then widen and shift.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x4 LoadBf16(ref ushort source)
    {
        Vector128<ushort> raw = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(ref Unsafe.As<ushort, byte>(ref source))).AsUInt16();
        return new(Vector128.ShiftLeft(Vector128.WidenLower(raw), 16).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x4 Broadcast(float value) => new(Vector128.Create(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x4 Add(F32x4 a, F32x4 b) => new(a.V + b.V);

    // Fused where the hardware has FMA, multiply then add otherwise (never the slow software-emulated fused form).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F32x4 MultiplyAdd(F32x4 a, F32x4 b, F32x4 c) => new(Vector128.MultiplyAddEstimate(a.V, b.V, c.V));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(F32x4 v)
    {
        Vector128<float> s = v.V + Vector128.Shuffle(v.V, Vector128.Create(2, 3, 0, 1));
        return s.ToScalar() + s.GetElement(1);
    }
}
