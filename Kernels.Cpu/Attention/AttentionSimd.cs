using System.Runtime.CompilerServices;

namespace Kernels.Cpu.Attention;

/// <summary>The operations the generic attention kernel (<see cref="PagedAttentionKernel"/>, the scalar path) needs: float math
/// plus widening of a KV row to fp32. The vector paths use <see cref="PagedAttentionTiled{TTile}"/>.</summary>
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

    /// <summary>acc_j[i] += Σ_t p_j[t]·v_t[i] for four queries of one row over the tile tokens [<paramref name="tl"/>,
    /// <paramref name="th"/>) that row may see (rows <paramref name="v"/>[t]). Every token of the range contributes, a zero
    /// weight too (0·v is NaN when v holds Inf or NaN, as in the oracle); tokens outside it are never read.</summary>
    static virtual void Accumulate4(float* a0, float* a1, float* a2, float* a3, float* p0, float* p1, float* p2, float* p3, float** v, int n, int tl, int th)
    {
        for (int t = tl; t < th; t++)
        {
            TSelf.Axpy(a0, p0[t], v[t], n);
            TSelf.Axpy(a1, p1[t], v[t], n);
            TSelf.Axpy(a2, p2[t], v[t], n);
            TSelf.Axpy(a3, p3[t], v[t], n);
        }
    }

    /// <summary>acc[i] += Σ_t p[t]·v_t[i] over the tile tokens [<paramref name="tl"/>, <paramref name="th"/>), as <see cref="Accumulate4"/>.</summary>
    static virtual void Accumulate1(float* a, float* p, float** v, int n, int tl, int th)
    {
        for (int t = tl; t < th; t++) TSelf.Axpy(a, p[t], v[t], n);
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
            x[i] = SoftmaxExp.Weight(x[i] - m);
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
