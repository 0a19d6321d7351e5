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
    public static Vector128<float> Widen(Vector128<uint> h)
    {
        var f = ((h & Vector128.Create(MagMask)) << 13).AsSingle() * Vector128.Create(Rebias);
        var special = Vector128.Equals(h & Vector128.Create(ExpMask), Vector128.Create(ExpMask)) & Vector128.Create(F32ExpMask);
        return (f.AsUInt32() | special | ((h & Vector128.Create(SignMask)) << 16)).AsSingle();
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
