using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Kernels.Attention.Reference;

namespace Kernels.Cpu.Attention;

/// <summary>The portable 128-bit vector kernels of <see cref="PagedAttentionTiled{TTile}"/> (SSE on x64 without AVX2, AdvSimd
/// on Arm64), sized for 16 registers: 4 queries × 2 tokens per logit block (8 accumulators, each K chunk widened once for the
/// four queries), 4 queries × 8 dims (i and half + i) of output accumulators, fused multiply-adds where the hardware has them
/// (<c>MultiplyAddEstimate</c>). Quantized queries take the float path with their dequantized values.</summary>
internal unsafe struct Tile128 : IAttentionTile
{
    private const int Tile = PagedAttentionKernel.Tile;

    /// <inheritdoc />
    public static bool IsSupported => Vector128.IsHardwareAccelerated;

    /// <inheritdoc />
    public static bool SupportsIntDot => false;

    /// <inheritdoc />
    public static bool TileScales(float* src, long tokenStride, long headStride, int heads, float mul, int tl, int th, void* dst, bool toInt) => false;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void WidenRows<TL>(byte** rows, int* zero, int tl, int th, int half, float* dst) where TL : unmanaged, IKvRow
    {
        for (int t = tl; t < th; t++)
        {
            var z = TL.UsesZero ? Vector128.Create(zero[t]) : default;
            float* o = dst + t * 2 * half;
            for (int i = 0; i < half; i += 4)
            {
                TL.Load2(rows[t], i, half, z, out var lo, out var hi);
                lo.Store(o + i);
                hi.Store(o + half + i);
            }
        }
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetRows(byte** rows, byte* first, long tokenBytes, byte* zeroRow, int tl, int th)
    {
        for (int t = 0; t < Tile; t++) rows[t] = t >= tl && t < th ? first + t * tokenBytes : zeroRow;
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits4<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        float* q0 = q, q1 = q + d, q2 = q + 2 * d, q3 = q + 3 * d;
        for (int t = tl & ~1; t < th; t += 2)
        {
            pf.Rows(t, 2);
            byte* k0 = rows[t], k1 = rows[t + 1];
            var z0 = TL.UsesZero ? Vector128.Create(zero[t]) : default;
            var z1 = TL.UsesZero ? Vector128.Create(zero[t + 1]) : default;
            Vector128<float> a00 = default, a01 = default, a10 = default, a11 = default;
            Vector128<float> a20 = default, a21 = default, a30 = default, a31 = default;
            for (int i = 0; i < half; i += 4)
            {
                TL.Load2(k0, i, half, z0, out var x0, out var w0);
                TL.Load2(k1, i, half, z1, out var x1, out var w1);
                Fma2(Vector128.Load(q0 + i), x0, x1, ref a00, ref a01);
                Fma2(Vector128.Load(q1 + i), x0, x1, ref a10, ref a11);
                Fma2(Vector128.Load(q2 + i), x0, x1, ref a20, ref a21);
                Fma2(Vector128.Load(q3 + i), x0, x1, ref a30, ref a31);
                Fma2(Vector128.Load(q0 + half + i), w0, w1, ref a00, ref a01);
                Fma2(Vector128.Load(q1 + half + i), w0, w1, ref a10, ref a11);
                Fma2(Vector128.Load(q2 + half + i), w0, w1, ref a20, ref a21);
                Fma2(Vector128.Load(q3 + half + i), w0, w1, ref a30, ref a31);
            }
            dst[t] = Vector128.Sum(a00);
            dst[t + 1] = Vector128.Sum(a01);
            dst[Tile + t] = Vector128.Sum(a10);
            dst[Tile + t + 1] = Vector128.Sum(a11);
            dst[2 * Tile + t] = Vector128.Sum(a20);
            dst[2 * Tile + t + 1] = Vector128.Sum(a21);
            dst[3 * Tile + t] = Vector128.Sum(a30);
            dst[3 * Tile + t + 1] = Vector128.Sum(a31);
        }
    }

    /// <summary>a_j += y·x_j for two register accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Fma2(Vector128<float> y, Vector128<float> x0, Vector128<float> x1, ref Vector128<float> a0, ref Vector128<float> a1)
    {
        a0 = Vector128.MultiplyAddEstimate(y, x0, a0);
        a1 = Vector128.MultiplyAddEstimate(y, x1, a1);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits1<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        for (int t = tl & ~1; t < th; t += 2)
        {
            pf.Rows(t, 2);
            byte* k0 = rows[t], k1 = rows[t + 1];
            var z0 = TL.UsesZero ? Vector128.Create(zero[t]) : default;
            var z1 = TL.UsesZero ? Vector128.Create(zero[t + 1]) : default;
            Vector128<float> a0 = default, a1 = default;
            for (int i = 0; i < half; i += 4)
            {
                TL.Load2(k0, i, half, z0, out var x0, out var w0);
                TL.Load2(k1, i, half, z1, out var x1, out var w1);
                Fma2(Vector128.Load(q + i), x0, x1, ref a0, ref a1);
                Fma2(Vector128.Load(q + half + i), w0, w1, ref a0, ref a1);
            }
            dst[t] = Vector128.Sum(a0);
            dst[t + 1] = Vector128.Sum(a1);
        }
    }

    /// <inheritdoc />
    public static bool RotatesInLogits => false;

    /// <summary>Not used: <see cref="RotatesInLogits"/> is false, so in-kernel RoPE widens and rotates the rows first.</summary>
    public static void Logits4Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow => throw new UnreachableException();

    /// <summary>Not used: <see cref="RotatesInLogits"/> is false.</summary>
    public static void Logits1Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow => throw new UnreachableException();

    /// <summary>Not used: <see cref="SupportsIntDot"/> is false, so quantized queries take <see cref="Logits4{TL}"/>.</summary>
    public static void Logits4Int<TL>(ref TileItem c, int i, byte** rows, int* zero, int tl, int th, int d, int half, PagePrefetch pf)
        where TL : unmanaged, IKvRow => throw new UnreachableException();

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Softmax4(float* p, float* kmul, float* vmul, int lo, int hi, uint keep, float* m, float* l, float** acc, int d)
    {
        for (int j = 0; j < 4; j++) Softmax(p + j * Tile, kmul, vmul, lo, hi, keep, ref m[j], ref l[j], acc[j], d);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Softmax(float* p, float* kmul, float* vmul, int lo, int hi, uint keep, ref float m, ref float l, float* acc, int d)
    {
        var vlo = Vector128.Create(lo);
        var vhi = Vector128.Create(hi);
        var ninf = Vector128.Create(float.NegativeInfinity);
        var lane = Vector128.Create(0, 1, 2, 3);
        Vector128<float> x0 = Logits(p, kmul, 0, lane, vlo, vhi, keep, ninf), x1 = Logits(p, kmul, 4, lane + Vector128.Create(4), vlo, vhi, keep, ninf);
        Vector128<float> x2 = Logits(p, kmul, 8, lane + Vector128.Create(8), vlo, vhi, keep, ninf), x3 = Logits(p, kmul, 12, lane + Vector128.Create(12), vlo, vhi, keep, ninf);
        var mx = Vector128.MaxNative(Vector128.MaxNative(x0, x1), Vector128.MaxNative(x2, x3)); // a NaN lane's exp is NaN anyway
        mx = Vector128.MaxNative(mx, Vector128.Shuffle(mx, Vector128.Create(2, 3, 0, 1)));
        mx = Vector128.MaxNative(mx, Vector128.Shuffle(mx, Vector128.Create(1, 0, 3, 2)));
        float tmax = mx.ToScalar();
        if (tmax > m)
        {
            if (l > 0)
            {
                float f = SoftmaxExp.Weight(m - tmax);
                Scale(acc, f, d);
                l *= f;
            }
            m = tmax;
        }
        var mv = Vector128.Create(SoftmaxExp.Shift(m));
        var e0 = SoftmaxExp.Exp(x0 - mv);
        var e1 = SoftmaxExp.Exp(x1 - mv);
        var e2 = SoftmaxExp.Exp(x2 - mv);
        var e3 = SoftmaxExp.Exp(x3 - mv);
        l += Vector128.Sum((e0 + e1) + (e2 + e3));
        (e0 * Vector128.Load(vmul)).Store(p);
        (e1 * Vector128.Load(vmul + 4)).Store(p + 4);
        (e2 * Vector128.Load(vmul + 8)).Store(p + 8);
        (e3 * Vector128.Load(vmul + 12)).Store(p + 12);
    }

    /// <summary>Lanes j … j + 3 of a logit row, × kmul unless null, −∞ outside [lo, hi).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Logits(float* p, float* kmul, int j, Vector128<int> lane, Vector128<int> lo, Vector128<int> hi, uint keep,
        Vector128<float> ninf)
    {
        var x = Vector128.Load(p + j);
        if (kmul != null) x *= Vector128.Load(kmul + j);
        var bit = Vector128.Create(1, 2, 4, 8);
        var live = (Vector128.GreaterThanOrEqual(lane, lo) & Vector128.LessThan(lane, hi)
            & Vector128.Equals(Vector128.Create((int)(keep >> j)) & bit, bit)).AsSingle();
        return Vector128.ConditionalSelect(live, x, ninf);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate4<TL>(float** acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        float* a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        float* p0 = p; // query j's probabilities at p0 + j·Tile
        for (int i = 0; i < half; i += 4)
        {
            int j = half + i;
            var x0 = Vector128.Load(a0 + i);
            var x1 = Vector128.Load(a1 + i);
            var x2 = Vector128.Load(a2 + i);
            var x3 = Vector128.Load(a3 + i);
            var y0 = Vector128.Load(a0 + j);
            var y1 = Vector128.Load(a1 + j);
            var y2 = Vector128.Load(a2 + j);
            var y3 = Vector128.Load(a3 + j);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1); // spread over the first pass, one row per token
                TL.Load2(rows[t], i, half, TL.UsesZero ? Vector128.Create(zero[t]) : default, out var va, out var vb);
                float* pt = p0 + t; // the four queries' probabilities at constant offsets from one pointer
                Fma2(Vector128.Create(pt[0]), va, vb, ref x0, ref y0);
                Fma2(Vector128.Create(pt[Tile]), va, vb, ref x1, ref y1);
                Fma2(Vector128.Create(pt[2 * Tile]), va, vb, ref x2, ref y2);
                Fma2(Vector128.Create(pt[3 * Tile]), va, vb, ref x3, ref y3);
            }
            x0.Store(a0 + i);
            x1.Store(a1 + i);
            x2.Store(a2 + i);
            x3.Store(a3 + i);
            y0.Store(a0 + j);
            y1.Store(a1 + j);
            y2.Store(a2 + j);
            y3.Store(a3 + j);
        }
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate1<TL>(float* acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        for (int i = 0; i < half; i += 4)
        {
            var x = Vector128.Load(acc + i);
            var y = Vector128.Load(acc + half + i);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1);
                TL.Load2(rows[t], i, half, TL.UsesZero ? Vector128.Create(zero[t]) : default, out var va, out var vb);
                Fma2(Vector128.Create(p[t]), va, vb, ref x, ref y);
            }
            x.Store(acc + i);
            y.Store(acc + half + i);
        }
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* acc, float f, int n)
    {
        var fv = Vector128.Create(f);
        for (int i = 0; i < n; i += 4) (Vector128.Load(acc + i) * fv).Store(acc + i);
    }

    /// <summary><see cref="Kernels.Attention.Reference.QueryQuantization.Quantize"/> of one query row (head_dim a multiple
    /// of 16) on 128-bit vectors (SSE, Arm64 AdvSimd; the AVX2 path uses it too), bit-identical to it: the same fp32 maximum
    /// (NaN kept), division and round-half-even; also the codes as int16, their sum and <c>code·s</c>. (The scalar loop it
    /// replaced cost ≈ 10 % of an AVX2 int4 decode call with int8 queries from L2, scratch.)</summary>
    /// <returns>The scale.</returns>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs a few times per call: never worth tier-0 code
    public static float QuantizeQuery(float* q, int d, sbyte* codes, short* codes16, float* dequantized, out int sum)
    {
        var amax = Vector128<float>.Zero;
        for (int j = 0; j < d; j += 4) amax = Vector128.Max(amax, Vector128.Abs(Vector128.Load(q + j))); // IEEE max: NaN propagates
        float m = MathF.Max(MathF.Max(amax.GetElement(0), amax.GetElement(1)), MathF.Max(amax.GetElement(2), amax.GetElement(3)));
        if (QueryCodes.Degenerate(m, d, codes, codes16, dequantized, out sum, out float s0)) return s0;
        float s = m / 127f;
        var sv = Vector128.Create(s);
        var total = Vector128<int>.Zero;
        for (int j = 0; j < d; j += 16)
        {
            var c0 = Code(q + j, sv);
            var c1 = Code(q + j + 4, sv);
            var c2 = Code(q + j + 8, sv);
            var c3 = Code(q + j + 12, sv);
            total += c0 + c1 + c2 + c3;
            Vector128<short> lo = Vector128.Narrow(c0, c1), hi = Vector128.Narrow(c2, c3);
            lo.Store(codes16 + j);
            hi.Store(codes16 + j + 8);
            Vector128.Narrow(lo, hi).Store(codes + j);
            (Vector128.ConvertToSingle(c0) * sv).Store(dequantized + j);
            (Vector128.ConvertToSingle(c1) * sv).Store(dequantized + j + 4);
            (Vector128.ConvertToSingle(c2) * sv).Store(dequantized + j + 8);
            (Vector128.ConvertToSingle(c3) * sv).Store(dequantized + j + 12);
        }
        sum = Vector128.Sum(total);
        return s;
    }

    /// <summary>The int8 codes of four query elements: round-half-even of q/s, clamped to ±127.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Code(float* q, Vector128<float> s) =>
        Vector128.ConvertToInt32(Vector128.Clamp(Vector128.Round(Vector128.Load(q) / s), Vector128.Create(-127f), Vector128.Create(127f)));
}
