using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Attention;

/// <summary>The vector operations the attention kernels need at one width: float math plus widening of a KV row to fp32.</summary>
/// <remarks>
/// Every widening is exact and identical to <c>PagedKvCache.ReadKey</c> (the reference's view of the cache): fp16 and bf16
/// widen exactly, int8 is <c>(float)q · s</c> and int4 is <c>((float)q − z) · s</c>, each one rounding, no fused multiply-add.
/// Row lengths are multiples of 32 (validated by the public API), so no path needs a tail.
/// </remarks>
internal unsafe interface IAttentionSimd<TSelf> where TSelf : struct, IAttentionSimd<TSelf>
{
    /// <summary>Lanes.</summary>
    static abstract int Count { get; }

    /// <summary>Σ_i a[i]·b[i] over n floats (n a multiple of 2·Count).</summary>
    static abstract float Dot(float* a, float* b, int n);

    /// <summary>acc[i] += p·x[i] over n floats.</summary>
    static abstract void Axpy(float* acc, float p, float* x, int n);

    /// <summary>out[j] = Σ_i q_j[i]·k[i] for four queries sharing one key row (each K chunk is loaded once).</summary>
    static virtual void Dot4(float* q0, float* q1, float* q2, float* q3, float* k, int n, float* result)
    {
        result[0] = TSelf.Dot(q0, k, n);
        result[1] = TSelf.Dot(q1, k, n);
        result[2] = TSelf.Dot(q2, k, n);
        result[3] = TSelf.Dot(q3, k, n);
    }

    /// <summary><see cref="Dot4"/> for two key rows at once (each query chunk loaded once for both): result[0..3] for
    /// <paramref name="k0"/>, result[4..7] for <paramref name="k1"/>.</summary>
    static virtual void Dot4x2(float* q0, float* q1, float* q2, float* q3, float* k0, float* k1, int n, float* result)
    {
        TSelf.Dot4(q0, q1, q2, q3, k0, n, result);
        TSelf.Dot4(q0, q1, q2, q3, k1, n, result + 4);
    }

    /// <summary>acc_j[i] += Σ_t p_j[t]·v_t[i] for four queries over a 16-token tile (rows <paramref name="v"/>[t]), with the
    /// four accumulators held in registers across the tile.</summary>
    static virtual void Accumulate4(float* a0, float* a1, float* a2, float* a3, float* p0, float* p1, float* p2, float* p3, float** v, int n)
    {
        for (int t = 0; t < 16; t++)
        {
            if (p0[t] != 0) TSelf.Axpy(a0, p0[t], v[t], n);
            if (p1[t] != 0) TSelf.Axpy(a1, p1[t], v[t], n);
            if (p2[t] != 0) TSelf.Axpy(a2, p2[t], v[t], n);
            if (p3[t] != 0) TSelf.Axpy(a3, p3[t], v[t], n);
        }
    }

    /// <summary>acc[i] += Σ_t p[t]·v_t[i] over a 16-token tile.</summary>
    static virtual void Accumulate1(float* a, float* p, float** v, int n)
    {
        for (int t = 0; t < 16; t++)
            if (p[t] != 0) TSelf.Axpy(a, p[t], v[t], n);
    }

    /// <summary>acc[i] *= f over n floats.</summary>
    static abstract void Scale(float* acc, float f, int n);

    /// <summary>The largest of the 16 floats of a tile.</summary>
    static abstract float Max16(float* x);

    /// <summary>x[i] = e^(x[i] − m) for the 16 floats of a tile; returns their sum.</summary>
    static abstract float ExpShift16(float* x, float m);

    /// <summary>fp16 bits → fp32, n values.</summary>
    static abstract void WidenF16(ushort* src, float* dst, int n);

    /// <summary>bf16 bits → fp32 (a 16-bit shift), n values.</summary>
    static abstract void WidenBf16(ushort* src, float* dst, int n);

    /// <summary>int8 → <c>(float)q·s</c>, n values.</summary>
    static abstract void WidenI8(sbyte* src, float s, float* dst, int n);

    /// <summary>int4 row of n values (n/2 bytes; low nibble = element i, high nibble = element i + n/2) → <c>((float)q − z)·s</c>.</summary>
    static abstract void WidenI4(byte* src, float s, float z, float* dst, int n);
}

/// <summary>Scalar arithmetic in index order (the reference's operations; no intrinsics).</summary>
internal unsafe struct AttentionScalar : IAttentionSimd<AttentionScalar>
{
    public static int Count => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* a, float* b, int n)
    {
        float s = 0;
        for (int i = 0; i < n; i++) s += a[i] * b[i];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Axpy(float* acc, float p, float* x, int n)
    {
        for (int i = 0; i < n; i++) acc[i] += p * x[i];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* acc, float f, int n)
    {
        for (int i = 0; i < n; i++) acc[i] *= f;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max16(float* x)
    {
        float m = x[0];
        for (int i = 1; i < 16; i++) m = x[i] > m ? x[i] : m;
        return m;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ExpShift16(float* x, float m)
    {
        float sum = 0;
        for (int i = 0; i < 16; i++)
        {
            x[i] = MathF.Exp(x[i] - m);
            sum += x[i];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenF16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i++) dst[i] = (float)BitConverter.UInt16BitsToHalf(src[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenBf16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(src[i] << 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI8(sbyte* src, float s, float* dst, int n)
    {
        for (int i = 0; i < n; i++) dst[i] = src[i] * s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI4(byte* src, float s, float z, float* dst, int n)
    {
        int half = n / 2;
        for (int i = 0; i < half; i++)
        {
            dst[i] = ((src[i] & 0xF) - z) * s;
            dst[i + half] = ((src[i] >> 4) - z) * s;
        }
    }
}

/// <summary>fp16 → fp32 by integer ops (no F16C intrinsic is exposed in .NET 10): shift the 15 magnitude bits into place,
/// multiply by 2¹¹² (exact: rebiases normals and normalises subnormals), then force the exponent to all-ones for Inf/NaN and
/// OR the sign back.</summary>
internal static class HalfBits
{
    private const uint MagMask = 0x7FFF, ExpMask = 0x7C00, SignMask = 0x8000, F32ExpMask = 0x7F800000;
    public static float Rebias => BitConverter.UInt32BitsToSingle(0x77800000); // 2^112

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(Vector512<uint> h)
    {
        var f = ((h & Vector512.Create(MagMask)) << 13).AsSingle() * Vector512.Create(Rebias);
        var special = Vector512.Equals(h & Vector512.Create(ExpMask), Vector512.Create(ExpMask)) & Vector512.Create(F32ExpMask);
        return (f.AsUInt32() | special | ((h & Vector512.Create(SignMask)) << 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector256<uint> h)
    {
        var f = ((h & Vector256.Create(MagMask)) << 13).AsSingle() * Vector256.Create(Rebias);
        var special = Vector256.Equals(h & Vector256.Create(ExpMask), Vector256.Create(ExpMask)) & Vector256.Create(F32ExpMask);
        return (f.AsUInt32() | special | ((h & Vector256.Create(SignMask)) << 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<uint> h)
    {
        var f = ((h & Vector128.Create(MagMask)) << 13).AsSingle() * Vector128.Create(Rebias);
        var special = Vector128.Equals(h & Vector128.Create(ExpMask), Vector128.Create(ExpMask)) & Vector128.Create(F32ExpMask);
        return (f.AsUInt32() | special | ((h & Vector128.Create(SignMask)) << 16)).AsSingle();
    }
}

/// <summary>AVX-512 (16 lanes).</summary>
internal unsafe struct Attention512 : IAttentionSimd<Attention512>
{
    public static int Count => 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* a, float* b, int n)
    {
        Debug.Assert(Avx512F.IsSupported);
        var s0 = Vector512<float>.Zero;
        var s1 = Vector512<float>.Zero;
        for (int i = 0; i < n; i += 32)
        {
            s0 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i + 16), Vector512.Load(b + i + 16), s1);
        }
        return Sum(s0 + s1);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot4(float* q0, float* q1, float* q2, float* q3, float* k, int n, float* result)
    {
        var s0 = Vector512<float>.Zero;
        var s1 = Vector512<float>.Zero;
        var s2 = Vector512<float>.Zero;
        var s3 = Vector512<float>.Zero;
        for (int i = 0; i < n; i += 16)
        {
            var kv = Vector512.Load(k + i);
            s0 = Avx512F.FusedMultiplyAdd(Vector512.Load(q0 + i), kv, s0);
            s1 = Avx512F.FusedMultiplyAdd(Vector512.Load(q1 + i), kv, s1);
            s2 = Avx512F.FusedMultiplyAdd(Vector512.Load(q2 + i), kv, s2);
            s3 = Avx512F.FusedMultiplyAdd(Vector512.Load(q3 + i), kv, s3);
        }
        result[0] = Sum(s0);
        result[1] = Sum(s1);
        result[2] = Sum(s2);
        result[3] = Sum(s3);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot4x2(float* q0, float* q1, float* q2, float* q3, float* k0, float* k1, int n, float* result)
    {
        // 8 accumulators; per 16 dims 6 loads feed 8 FMAs (the load ports, not the FMA units, bound this loop).
        Vector512<float> s00 = default, s10 = default, s20 = default, s30 = default;
        Vector512<float> s01 = default, s11 = default, s21 = default, s31 = default;
        for (int i = 0; i < n; i += 16)
        {
            var ka = Vector512.Load(k0 + i);
            var kb = Vector512.Load(k1 + i);
            var x = Vector512.Load(q0 + i);
            s00 = Avx512F.FusedMultiplyAdd(x, ka, s00);
            s01 = Avx512F.FusedMultiplyAdd(x, kb, s01);
            x = Vector512.Load(q1 + i);
            s10 = Avx512F.FusedMultiplyAdd(x, ka, s10);
            s11 = Avx512F.FusedMultiplyAdd(x, kb, s11);
            x = Vector512.Load(q2 + i);
            s20 = Avx512F.FusedMultiplyAdd(x, ka, s20);
            s21 = Avx512F.FusedMultiplyAdd(x, kb, s21);
            x = Vector512.Load(q3 + i);
            s30 = Avx512F.FusedMultiplyAdd(x, ka, s30);
            s31 = Avx512F.FusedMultiplyAdd(x, kb, s31);
        }
        result[0] = Sum(s00);
        result[1] = Sum(s10);
        result[2] = Sum(s20);
        result[3] = Sum(s30);
        result[4] = Sum(s01);
        result[5] = Sum(s11);
        result[6] = Sum(s21);
        result[7] = Sum(s31);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate4(float* a0, float* a1, float* a2, float* a3, float* p0, float* p1, float* p2, float* p3, float** v, int n)
    {
        // 32 dims per pass (n is a multiple of 32): 8 accumulators in registers across the 16 tokens; per token 4 broadcasts
        // (vbroadcastss) and 2 V loads feed 8 FMAs.
        for (int i = 0; i < n; i += 32)
        {
            var x0 = Vector512.Load(a0 + i);
            var x1 = Vector512.Load(a1 + i);
            var x2 = Vector512.Load(a2 + i);
            var x3 = Vector512.Load(a3 + i);
            var y0 = Vector512.Load(a0 + i + 16);
            var y1 = Vector512.Load(a1 + i + 16);
            var y2 = Vector512.Load(a2 + i + 16);
            var y3 = Vector512.Load(a3 + i + 16);
            for (int t = 0; t < 16; t++)
            {
                float* vt = v[t] + i;
                var va = Vector512.Load(vt);
                var vb = Vector512.Load(vt + 16);
                var b = Vector512.Create(p0[t]);
                x0 = Avx512F.FusedMultiplyAdd(b, va, x0);
                y0 = Avx512F.FusedMultiplyAdd(b, vb, y0);
                b = Vector512.Create(p1[t]);
                x1 = Avx512F.FusedMultiplyAdd(b, va, x1);
                y1 = Avx512F.FusedMultiplyAdd(b, vb, y1);
                b = Vector512.Create(p2[t]);
                x2 = Avx512F.FusedMultiplyAdd(b, va, x2);
                y2 = Avx512F.FusedMultiplyAdd(b, vb, y2);
                b = Vector512.Create(p3[t]);
                x3 = Avx512F.FusedMultiplyAdd(b, va, x3);
                y3 = Avx512F.FusedMultiplyAdd(b, vb, y3);
            }
            x0.Store(a0 + i);
            x1.Store(a1 + i);
            x2.Store(a2 + i);
            x3.Store(a3 + i);
            y0.Store(a0 + i + 16);
            y1.Store(a1 + i + 16);
            y2.Store(a2 + i + 16);
            y3.Store(a3 + i + 16);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate1(float* a, float* p, float** v, int n)
    {
        for (int i = 0; i < n; i += 16)
        {
            var x = Vector512.Load(a + i);
            for (int t = 0; t < 16; t++) x = Avx512F.FusedMultiplyAdd(Vector512.Create(p[t]), Vector512.Load(v[t] + i), x);
            x.Store(a + i);
        }
    }

    /// <summary>Horizontal sum by halving (vextractf32x8, vextractf128, then a 4-lane sum).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum(Vector512<float> v)
    {
        var a = v.GetLower() + v.GetUpper();
        var b = a.GetLower() + a.GetUpper();
        return Vector128.Sum(b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max16(float* x)
    {
        var v = Vector512.Load(x);
        var a = Vector256.Max(v.GetLower(), v.GetUpper());
        var b = Vector128.Max(a.GetLower(), a.GetUpper());
        b = Vector128.Max(b, Vector128.Shuffle(b, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(b.ToScalar(), b.GetElement(1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Axpy(float* acc, float p, float* x, int n)
    {
        var pv = Vector512.Create(p);
        for (int i = 0; i < n; i += 16) Avx512F.FusedMultiplyAdd(pv, Vector512.Load(x + i), Vector512.Load(acc + i)).Store(acc + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* acc, float f, int n)
    {
        var fv = Vector512.Create(f);
        for (int i = 0; i < n; i += 16) (Vector512.Load(acc + i) * fv).Store(acc + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ExpShift16(float* x, float m)
    {
        var e = SoftmaxExp.Exp(Vector512.Load(x) - Vector512.Create(m));
        e.Store(x);
        return Sum(e);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenF16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i += 16)
            HalfBits.Widen(Avx512F.ConvertToVector512UInt32(Vector256.Load(src + i))).Store(dst + i); // vpmovzxwd zmm, ymm
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenBf16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i += 16)
            (Avx512F.ConvertToVector512UInt32(Vector256.Load(src + i)) << 16).AsSingle().Store(dst + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI8(sbyte* src, float s, float* dst, int n)
    {
        var sv = Vector512.Create(s);
        for (int i = 0; i < n; i += 16)
            (Vector512.ConvertToSingle(Avx512F.ConvertToVector512Int32(Vector128.Load(src + i))) * sv).Store(dst + i); // vpmovsxbd
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI4(byte* src, float s, float z, float* dst, int n)
    {
        var sv = Vector512.Create(s);
        var zv = Vector512.Create(z);
        var mask = Vector512.Create(15);
        int half = n / 2;
        for (int i = 0; i < half; i += 16)
        {
            var b = Avx512F.ConvertToVector512Int32(Vector128.Load(src + i)); // vpmovzxbd: 16 bytes → 16 ints
            ((Vector512.ConvertToSingle(b & mask) - zv) * sv).Store(dst + i);
            ((Vector512.ConvertToSingle(Vector512.ShiftRightLogical(b, 4)) - zv) * sv).Store(dst + half + i);
        }
    }
}

/// <summary>AVX2 + FMA (8 lanes).</summary>
internal unsafe struct Attention256 : IAttentionSimd<Attention256>
{
    public static int Count => 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* a, float* b, int n)
    {
        Debug.Assert(Avx2.IsSupported && Fma.IsSupported);
        var s0 = Vector256<float>.Zero;
        var s1 = Vector256<float>.Zero;
        for (int i = 0; i < n; i += 16)
        {
            s0 = Fma.MultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
            s1 = Fma.MultiplyAdd(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), s1);
        }
        var v = s0 + s1;
        return Vector128.Sum(v.GetLower() + v.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot4(float* q0, float* q1, float* q2, float* q3, float* k, int n, float* result)
    {
        var s0 = Vector256<float>.Zero;
        var s1 = Vector256<float>.Zero;
        var s2 = Vector256<float>.Zero;
        var s3 = Vector256<float>.Zero;
        for (int i = 0; i < n; i += 8)
        {
            var kv = Vector256.Load(k + i);
            s0 = Fma.MultiplyAdd(Vector256.Load(q0 + i), kv, s0);
            s1 = Fma.MultiplyAdd(Vector256.Load(q1 + i), kv, s1);
            s2 = Fma.MultiplyAdd(Vector256.Load(q2 + i), kv, s2);
            s3 = Fma.MultiplyAdd(Vector256.Load(q3 + i), kv, s3);
        }
        result[0] = Vector128.Sum(s0.GetLower() + s0.GetUpper());
        result[1] = Vector128.Sum(s1.GetLower() + s1.GetUpper());
        result[2] = Vector128.Sum(s2.GetLower() + s2.GetUpper());
        result[3] = Vector128.Sum(s3.GetLower() + s3.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot4x2(float* q0, float* q1, float* q2, float* q3, float* k0, float* k1, int n, float* result)
    {
        // 8 accumulators + 2 K + 1 q = 11 of the 16 ymm registers.
        Vector256<float> s00 = default, s10 = default, s20 = default, s30 = default;
        Vector256<float> s01 = default, s11 = default, s21 = default, s31 = default;
        for (int i = 0; i < n; i += 8)
        {
            var ka = Vector256.Load(k0 + i);
            var kb = Vector256.Load(k1 + i);
            var x = Vector256.Load(q0 + i);
            s00 = Fma.MultiplyAdd(x, ka, s00);
            s01 = Fma.MultiplyAdd(x, kb, s01);
            x = Vector256.Load(q1 + i);
            s10 = Fma.MultiplyAdd(x, ka, s10);
            s11 = Fma.MultiplyAdd(x, kb, s11);
            x = Vector256.Load(q2 + i);
            s20 = Fma.MultiplyAdd(x, ka, s20);
            s21 = Fma.MultiplyAdd(x, kb, s21);
            x = Vector256.Load(q3 + i);
            s30 = Fma.MultiplyAdd(x, ka, s30);
            s31 = Fma.MultiplyAdd(x, kb, s31);
        }
        result[0] = Vector128.Sum(s00.GetLower() + s00.GetUpper());
        result[1] = Vector128.Sum(s10.GetLower() + s10.GetUpper());
        result[2] = Vector128.Sum(s20.GetLower() + s20.GetUpper());
        result[3] = Vector128.Sum(s30.GetLower() + s30.GetUpper());
        result[4] = Vector128.Sum(s01.GetLower() + s01.GetUpper());
        result[5] = Vector128.Sum(s11.GetLower() + s11.GetUpper());
        result[6] = Vector128.Sum(s21.GetLower() + s21.GetUpper());
        result[7] = Vector128.Sum(s31.GetLower() + s31.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate4(float* a0, float* a1, float* a2, float* a3, float* p0, float* p1, float* p2, float* p3, float** v, int n)
    {
        // 16 dims per pass: 8 accumulators + 2 V + 1 broadcast = 11 ymm registers.
        for (int i = 0; i < n; i += 16)
        {
            var x0 = Vector256.Load(a0 + i);
            var x1 = Vector256.Load(a1 + i);
            var x2 = Vector256.Load(a2 + i);
            var x3 = Vector256.Load(a3 + i);
            var y0 = Vector256.Load(a0 + i + 8);
            var y1 = Vector256.Load(a1 + i + 8);
            var y2 = Vector256.Load(a2 + i + 8);
            var y3 = Vector256.Load(a3 + i + 8);
            for (int t = 0; t < 16; t++)
            {
                float* vt = v[t] + i;
                var va = Vector256.Load(vt);
                var vb = Vector256.Load(vt + 8);
                var b = Vector256.Create(p0[t]);
                x0 = Fma.MultiplyAdd(b, va, x0);
                y0 = Fma.MultiplyAdd(b, vb, y0);
                b = Vector256.Create(p1[t]);
                x1 = Fma.MultiplyAdd(b, va, x1);
                y1 = Fma.MultiplyAdd(b, vb, y1);
                b = Vector256.Create(p2[t]);
                x2 = Fma.MultiplyAdd(b, va, x2);
                y2 = Fma.MultiplyAdd(b, vb, y2);
                b = Vector256.Create(p3[t]);
                x3 = Fma.MultiplyAdd(b, va, x3);
                y3 = Fma.MultiplyAdd(b, vb, y3);
            }
            x0.Store(a0 + i);
            x1.Store(a1 + i);
            x2.Store(a2 + i);
            x3.Store(a3 + i);
            y0.Store(a0 + i + 8);
            y1.Store(a1 + i + 8);
            y2.Store(a2 + i + 8);
            y3.Store(a3 + i + 8);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate1(float* a, float* p, float** v, int n)
    {
        for (int i = 0; i < n; i += 8)
        {
            var x = Vector256.Load(a + i);
            for (int t = 0; t < 16; t++) x = Fma.MultiplyAdd(Vector256.Create(p[t]), Vector256.Load(v[t] + i), x);
            x.Store(a + i);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max16(float* x)
    {
        var a = Vector256.Max(Vector256.Load(x), Vector256.Load(x + 8));
        var b = Vector128.Max(a.GetLower(), a.GetUpper());
        b = Vector128.Max(b, Vector128.Shuffle(b, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(b.ToScalar(), b.GetElement(1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Axpy(float* acc, float p, float* x, int n)
    {
        var pv = Vector256.Create(p);
        for (int i = 0; i < n; i += 8) Fma.MultiplyAdd(pv, Vector256.Load(x + i), Vector256.Load(acc + i)).Store(acc + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* acc, float f, int n)
    {
        var fv = Vector256.Create(f);
        for (int i = 0; i < n; i += 8) (Vector256.Load(acc + i) * fv).Store(acc + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ExpShift16(float* x, float m)
    {
        var mv = Vector256.Create(m);
        var e0 = SoftmaxExp.Exp(Vector256.Load(x) - mv);
        var e1 = SoftmaxExp.Exp(Vector256.Load(x + 8) - mv);
        e0.Store(x);
        e1.Store(x + 8);
        var e = e0 + e1;
        return Vector128.Sum(e.GetLower() + e.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenF16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i += 8)
            HalfBits.Widen(Avx2.ConvertToVector256Int32(src + i).AsUInt32()).Store(dst + i); // vpmovzxwd ymm, m128
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenBf16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i += 8)
            (Avx2.ConvertToVector256Int32(src + i) << 16).AsSingle().Store(dst + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI8(sbyte* src, float s, float* dst, int n)
    {
        var sv = Vector256.Create(s);
        for (int i = 0; i < n; i += 8)
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(src + i)) * sv).Store(dst + i); // vpmovsxbd ymm, m64
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI4(byte* src, float s, float z, float* dst, int n)
    {
        var sv = Vector256.Create(s);
        var zv = Vector256.Create(z);
        var mask = Vector256.Create(15);
        int half = n / 2;
        for (int i = 0; i < half; i += 8)
        {
            var b = Avx2.ConvertToVector256Int32(src + i); // vpmovzxbd ymm, m64
            ((Vector256.ConvertToSingle(b & mask) - zv) * sv).Store(dst + i);
            ((Vector256.ConvertToSingle(Vector256.ShiftRightLogical(b, 4)) - zv) * sv).Store(dst + half + i);
        }
    }
}

/// <summary>Vector128 (SSE/AdvSimd, 4 lanes), portable operators only.</summary>
internal unsafe struct Attention128 : IAttentionSimd<Attention128>
{
    public static int Count => 4;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* a, float* b, int n)
    {
        var s0 = Vector128<float>.Zero;
        var s1 = Vector128<float>.Zero;
        for (int i = 0; i < n; i += 8)
        {
            s0 += Vector128.Load(a + i) * Vector128.Load(b + i);
            s1 += Vector128.Load(a + i + 4) * Vector128.Load(b + i + 4);
        }
        return Vector128.Sum(s0 + s1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max16(float* x)
    {
        var a = Vector128.Max(Vector128.Max(Vector128.Load(x), Vector128.Load(x + 4)), Vector128.Max(Vector128.Load(x + 8), Vector128.Load(x + 12)));
        a = Vector128.Max(a, Vector128.Shuffle(a, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(a.ToScalar(), a.GetElement(1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Axpy(float* acc, float p, float* x, int n)
    {
        var pv = Vector128.Create(p);
        for (int i = 0; i < n; i += 4) (Vector128.Load(acc + i) + pv * Vector128.Load(x + i)).Store(acc + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* acc, float f, int n)
    {
        var fv = Vector128.Create(f);
        for (int i = 0; i < n; i += 4) (Vector128.Load(acc + i) * fv).Store(acc + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ExpShift16(float* x, float m)
    {
        var mv = Vector128.Create(m);
        var sum = Vector128<float>.Zero;
        for (int i = 0; i < 16; i += 4)
        {
            var e = SoftmaxExp.Exp(Vector128.Load(x + i) - mv);
            e.Store(x + i);
            sum += e;
        }
        return Vector128.Sum(sum);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenF16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i += 8)
        {
            var h = Vector128.Load(src + i);
            HalfBits.Widen(Vector128.WidenLower(h)).Store(dst + i);
            HalfBits.Widen(Vector128.WidenUpper(h)).Store(dst + i + 4);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenBf16(ushort* src, float* dst, int n)
    {
        for (int i = 0; i < n; i += 8)
        {
            var h = Vector128.Load(src + i);
            (Vector128.WidenLower(h) << 16).AsSingle().Store(dst + i);
            (Vector128.WidenUpper(h) << 16).AsSingle().Store(dst + i + 4);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI8(sbyte* src, float s, float* dst, int n)
    {
        var sv = Vector128.Create(s);
        for (int i = 0; i < n; i += 16)
        {
            var b = Vector128.Load(src + i);
            var lo = Vector128.WidenLower(b);
            var hi = Vector128.WidenUpper(b);
            (Vector128.ConvertToSingle(Vector128.WidenLower(lo)) * sv).Store(dst + i);
            (Vector128.ConvertToSingle(Vector128.WidenUpper(lo)) * sv).Store(dst + i + 4);
            (Vector128.ConvertToSingle(Vector128.WidenLower(hi)) * sv).Store(dst + i + 8);
            (Vector128.ConvertToSingle(Vector128.WidenUpper(hi)) * sv).Store(dst + i + 12);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WidenI4(byte* src, float s, float z, float* dst, int n)
    {
        var sv = Vector128.Create(s);
        var zv = Vector128.Create(z);
        var mask = Vector128.Create((byte)15);
        int half = n / 2;
        for (int i = 0; i < half; i += 16)
        {
            var b = Vector128.Load(src + i);
            Nibbles(b & mask, sv, zv, dst + i);
            Nibbles(Vector128.ShiftRightLogical(b, 4), sv, zv, dst + half + i);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Nibbles(Vector128<byte> q, Vector128<float> s, Vector128<float> z, float* dst)
    {
        var lo = Vector128.WidenLower(q);
        var hi = Vector128.WidenUpper(q);
        ((Vector128.ConvertToSingle(Vector128.WidenLower(lo).AsInt32()) - z) * s).Store(dst);
        ((Vector128.ConvertToSingle(Vector128.WidenUpper(lo).AsInt32()) - z) * s).Store(dst + 4);
        ((Vector128.ConvertToSingle(Vector128.WidenLower(hi).AsInt32()) - z) * s).Store(dst + 8);
        ((Vector128.ConvertToSingle(Vector128.WidenUpper(hi).AsInt32()) - z) * s).Store(dst + 12);
    }
}
