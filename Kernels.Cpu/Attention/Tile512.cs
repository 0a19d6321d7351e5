using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Attention.Reference;

namespace Kernels.Cpu.Attention;

/// <summary>The AVX-512 vector kernels of <see cref="PagedAttentionTiled{TTile}"/>: 4 queries × 4 tokens per logit block
/// (16 zmm accumulators, a 45-instruction transpose-and-add tree to one register of 16 dot products), 16-lane softmax,
/// 4 queries × 64 dims of output accumulators, and integer K dot products for int8 queries.</summary>
internal unsafe struct Tile512 : IAttentionTile
{
    private const int Tile = PagedAttentionKernel.Tile;

    /// <inheritdoc />
    public static bool IsSupported => Avx512F.IsSupported && Avx512BW.IsSupported;

    /// <inheritdoc />
    public static bool SupportsIntDot => true;

    /// <inheritdoc />
    public static bool RotatesInLogits => true;

    /// <summary>HND (<paramref name="tokenStride"/> 1, which includes one head): one load per head. NHD with the item covering
    /// every head (<paramref name="headStride"/> 1, <paramref name="tokenStride"/> = <paramref name="heads"/> ∈ {2, 4, 8}): the
    /// tile's values are one [16 tokens][heads] block, transposed in registers by log₂(heads) rounds of even/odd
    /// <c>vpermt2ps</c> splits (24 for 8 heads). Replaces 16 scalar reads and writes per head and array, whose narrow stores
    /// then stalled the 64-byte loads of the softmax and the 16-byte loads of the int4 logits (store-to-load forwarding
    /// fails from several small stores to one wide load): scratch, int4 with int8 queries from L2, 20 → 16.5 ns per token × kv head.
    /// Unrolled per head count: a generic loop of rounds over vectors on the stack (any power of two) measured 3–6 % slower.
    /// Not inlined (a call per array and tile): inlined at its four call sites it used up the JIT's inline budget for the tile step.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static bool TileScales(float* src, long tokenStride, long headStride, int heads, float mul, int tl, int th, void* dst, bool toInt)
    {
        var lane = Vector512<int>.Indices;
        var live = (Vector512.GreaterThanOrEqual(lane, Vector512.Create(tl)) & Vector512.LessThan(lane, Vector512.Create(th))).AsSingle();
        var m = Vector512.Create(mul);
        if (tokenStride == 1)
        {
            for (int kk = 0; kk < heads; kk++) PutRow(Vector512.Load(src + kk * headStride), kk, live, m, dst, toInt);
            return true;
        }
        if (headStride != 1 || tokenStride != heads) return false;
        switch (heads)
        {
            case 2:
            {
                Split(Vector512.Load(src), Vector512.Load(src + 16), out var h0, out var h1);
                PutRow(h0, 0, live, m, dst, toInt);
                PutRow(h1, 1, live, m, dst, toInt);
                return true;
            }
            case 4:
            {
                Split(Vector512.Load(src), Vector512.Load(src + 16), out var e0, out var o0);        // heads {0, 2} and {1, 3}, tokens 0–7
                Split(Vector512.Load(src + 32), Vector512.Load(src + 48), out var e1, out var o1);   // tokens 8–15
                Split(e0, e1, out var h0, out var h2);
                Split(o0, o1, out var h1, out var h3);
                PutRow(h0, 0, live, m, dst, toInt);
                PutRow(h1, 1, live, m, dst, toInt);
                PutRow(h2, 2, live, m, dst, toInt);
                PutRow(h3, 3, live, m, dst, toInt);
                return true;
            }
            case 8:
            {
                // Round 1: even/odd heads, 4 tokens per vector; round 2: heads ≡ 0, 2, 1, 3 (mod 4), 8 tokens; round 3: one head.
                Split(Vector512.Load(src), Vector512.Load(src + 16), out var e0, out var o0);
                Split(Vector512.Load(src + 32), Vector512.Load(src + 48), out var e1, out var o1);
                Split(Vector512.Load(src + 64), Vector512.Load(src + 80), out var e2, out var o2);
                Split(Vector512.Load(src + 96), Vector512.Load(src + 112), out var e3, out var o3);
                Split(e0, e1, out var ee0, out var eo0);
                Split(e2, e3, out var ee1, out var eo1);
                Split(o0, o1, out var oe0, out var oo0);
                Split(o2, o3, out var oe1, out var oo1);
                Split(ee0, ee1, out var h0, out var h4);
                Split(eo0, eo1, out var h2, out var h6);
                Split(oe0, oe1, out var h1, out var h5);
                Split(oo0, oo1, out var h3, out var h7);
                PutRow(h0, 0, live, m, dst, toInt);
                PutRow(h1, 1, live, m, dst, toInt);
                PutRow(h2, 2, live, m, dst, toInt);
                PutRow(h3, 3, live, m, dst, toInt);
                PutRow(h4, 4, live, m, dst, toInt);
                PutRow(h5, 5, live, m, dst, toInt);
                PutRow(h6, 6, live, m, dst, toInt);
                PutRow(h7, 7, live, m, dst, toInt);
                return true;
            }
            default:
                return false;
        }
    }

    /// <summary>The even and odd elements of the 32-element concatenation x·y (two <c>vpermt2ps</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Split(Vector512<float> x, Vector512<float> y, out Vector512<float> even, out Vector512<float> odd)
    {
        var i = Vector512<int>.Indices * 2;
        even = Avx512F.PermuteVar16x32x2(x, i, y);
        odd = Avx512F.PermuteVar16x32x2(x, i + Vector512<int>.One, y);
    }

    /// <summary>Row <paramref name="kk"/> of a <see cref="TileScales"/> result: x × m on live lanes, 0 elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutRow(Vector512<float> x, int kk, Vector512<float> live, Vector512<float> m, void* dst, bool toInt)
    {
        var v = Vector512.ConditionalSelect(live, x * m, Vector512<float>.Zero);
        if (toInt) Vector512.ConvertToInt32(v).Store((int*)dst + kk * Tile);
        else v.Store((float*)dst + kk * Tile);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Softmax(float* p, float* kmul, float* vmul, int lo, int hi, uint keep, ref float m, ref float l, float* acc, int d)
    {
        var live = Live(lo, hi, keep);
        var x = Vector512.Load(p);
        if (kmul != null) x *= Vector512.Load(kmul);
        x = Vector512.ConditionalSelect(live, x, Vector512.Create(float.NegativeInfinity));
        float tmax = MaxAcross(x);
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
        var e = SoftmaxExp.Exp(x - Vector512.Create(SoftmaxExp.Shift(m))); // e^(−∞) = 0 for masked lanes
        l += SumAcross(e);
        (e * Vector512.Load(vmul)).Store(p);
    }

    /// <summary>Four queries at once: the four maxima come from one transpose-and-max tree and the four sums from one
    /// transpose-and-add tree (instead of a horizontal reduction per query), and the running maxima and sums are compared and
    /// updated as one 4-lane vector; the rescale (rare once the maximum has settled) runs per query as in <see cref="Softmax"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Softmax4(float* p, float* kmul, float* vmul, int lo, int hi, uint keep, float* m, float* l, float** acc, int d)
    {
        var live = Live(lo, hi, keep);
        var ninf = Vector512.Create(float.NegativeInfinity);
        var x0 = Vector512.Load(p);
        var x1 = Vector512.Load(p + Tile);
        var x2 = Vector512.Load(p + 2 * Tile);
        var x3 = Vector512.Load(p + 3 * Tile);
        if (kmul != null)
        {
            var km = Vector512.Load(kmul);
            x0 *= km;
            x1 *= km;
            x2 *= km;
            x3 *= km;
        }
        x0 = Vector512.ConditionalSelect(live, x0, ninf);
        x1 = Vector512.ConditionalSelect(live, x1, ninf);
        x2 = Vector512.ConditionalSelect(live, x2, ninf);
        x3 = Vector512.ConditionalSelect(live, x3, ninf);
        var tmax = Across4(x0, x1, x2, x3, max: true);                  // lanes 0..3: the tile maxima (vmaxps: a NaN lane may drop)
        var mOld = Vector128.Load(m);
        var grown = Vector128.GreaterThan(tmax, mOld);
        if (grown != Vector128<float>.Zero)
        {
            for (int j = 0; j < 4; j++)
            {
                if (!(tmax.GetElement(j) > m[j])) continue;
                if (l[j] > 0)
                {
                    float f = SoftmaxExp.Weight(m[j] - tmax.GetElement(j));
                    Scale(acc[j], f, d);
                    l[j] *= f;
                }
                m[j] = tmax.GetElement(j);
            }
        }
        var e0 = SoftmaxExp.Exp(x0 - Vector512.Create(SoftmaxExp.Shift(m[0]))); // e^(−∞) = 0 for masked lanes
        var e1 = SoftmaxExp.Exp(x1 - Vector512.Create(SoftmaxExp.Shift(m[1])));
        var e2 = SoftmaxExp.Exp(x2 - Vector512.Create(SoftmaxExp.Shift(m[2])));
        var e3 = SoftmaxExp.Exp(x3 - Vector512.Create(SoftmaxExp.Shift(m[3])));
        (Vector128.Load(l) + Across4(e0, e1, e2, e3, max: false)).Store(l);
        var vm = Vector512.Load(vmul);
        (e0 * vm).Store(p);
        (e1 * vm).Store(p + Tile);
        (e2 * vm).Store(p + 2 * Tile);
        (e3 * vm).Store(p + 3 * Tile);
    }

    /// <summary>All-ones in the lanes t with lo ≤ t &lt; hi whose bit t of <paramref name="keep"/> is set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Live(int lo, int hi, uint keep)
    {
        var lane = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        var bit = Vector512.Create(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
        return (Vector512.GreaterThanOrEqual(lane, Vector512.Create(lo)) & Vector512.LessThan(lane, Vector512.Create(hi))
            & Vector512.Equals(Vector512.Create((int)keep) & bit, bit)).AsSingle();
    }

    /// <summary>[op over x, op over y, op over z, op over w] for op = max or +: a transpose tree within 128-bit blocks, then
    /// across the four blocks (10 shuffles and 8 ops for four vectors).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Across4(Vector512<float> x, Vector512<float> y, Vector512<float> z, Vector512<float> w, bool max)
    {
        var xy = Op(Avx512F.UnpackLow(x, y), Avx512F.UnpackHigh(x, y), max);
        var zw = Op(Avx512F.UnpackLow(z, w), Avx512F.UnpackHigh(z, w), max);
        var b = Op(Avx512F.Shuffle(xy, zw, 0x44), Avx512F.Shuffle(xy, zw, 0xEE), max); // block k: [x, y, z, w] over block k
        var h = Op(b, Avx512F.Shuffle4x128(b, b, 0x4E), max);                          // + the other 256-bit half
        return Op(h, Avx512F.Shuffle4x128(h, h, 0xB1), max).GetLower().GetLower();      // + the neighbouring block
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Op(Vector512<float> a, Vector512<float> b, bool max) => max ? Avx512F.Max(a, b) : a + b;

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void WidenRows<TL>(byte** rows, int* zero, int tl, int th, int half, float* dst) where TL : unmanaged, IKvRow
    {
        for (int t = tl; t < th; t++)
        {
            var z = TL.UsesZero ? Vector512.Create(zero[t]) : default;
            float* o = dst + t * 2 * half;
            for (int i = 0; i < half; i += 16)
            {
                TL.Load2(rows[t], i, half, z, out var lo, out var hi);
                lo.Store(o + i);
                hi.Store(o + half + i);
            }
        }
    }

    /// <summary><see cref="WidenRows{TL}"/> fused with in-kernel RoPE for NeoX pairs over the whole row (rotary_dim = head_dim):
    /// the loader's two half-rows are exactly the pairs (i, i + d/2), so each is rotated in registers before the store,
    /// with <c>RopeKernel</c>'s formula (<c>x1' = fma(x1, c, −(x2·s))</c>, <c>x2' = fma(x2, c, x1·s)</c>; bit-identical to
    /// widening then rotating). Row t takes the table row at <c>cos + t·2·half</c>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void WidenRowsNeox<TL>(byte** rows, int* zero, int tl, int th, int half, float* dst, float* cos) where TL : unmanaged, IKvRow
    {
        for (int t = tl; t < th; t++)
        {
            var z = TL.UsesZero ? Vector512.Create(zero[t]) : default;
            float* o = dst + t * 2 * half, c = cos + t * 2 * half, sn = c + half;
            for (int i = 0; i < half; i += 16)
            {
                TL.Load2(rows[t], i, half, z, out var x1, out var x2);
                var cv = Vector512.Load(c + i);
                var sv = Vector512.Load(sn + i);
                Avx512F.FusedMultiplySubtract(x1, cv, x2 * sv).Store(o + i);
                Avx512F.FusedMultiplyAdd(x2, cv, x1 * sv).Store(o + half + i);
            }
        }
    }

    /// <summary>rows[t] = first + t·tokenBytes for live tokens [tl, th), else the zero row (two 8-lane 64-bit vectors).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetRows(byte** rows, byte* first, long tokenBytes, byte* zeroRow, int tl, int th)
    {
        var t = Vector512.Create(0L, 1, 2, 3, 4, 5, 6, 7);
        var lo = Vector512.Create((long)tl);
        var hi = Vector512.Create((long)th);
        var zero = Vector512.Create((long)zeroRow);
        var step = Vector512.Create(tokenBytes);
        for (int h = 0; h < Tile; h += 8, t += Vector512.Create(8L))
        {
            var live = Vector512.GreaterThanOrEqual(t, lo) & Vector512.LessThan(t, hi);
            Vector512.ConditionalSelect(live, Vector512.Create((long)first) + t * step, zero).Store((long*)rows + h);
        }
    }

    /// <summary>Raw dot products of four queries (rows of <paramref name="q"/>, stride d) with the tile's 16 rows, stored as
    /// four 16-token vectors at <paramref name="dst"/>. Token groups of four outside [tl, th) are skipped (their lanes are masked).
    /// Per group, 4 queries × 4 tokens keep 16 register accumulators over head_dim, reduced to lanes <c>[4·query + token]</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Logits4<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow =>
        Logits4<TL, NoRotation>(q, rows, zero, tl, th, d, half, dst, pf, null);

    /// <summary><see cref="Logits4{TL}"/> with in-kernel RoPE for NeoX pairs over the whole row (rotary_dim = head_dim): each
    /// K chunk pair (i, half + i) is rotated in registers right after its load, by the table row at
    /// <c>cos + t·d</c> for token t, with the formula of <see cref="WidenRowsNeox{TL}"/> (so the logits are bit-identical
    /// to widening, rotating, storing and reading the rows back, which decode did until the eleventh session). Tokens
    /// outside [tl, th) take row tl's angles: their K rows are the zero row, and their table rows may lie past the table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Logits4Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow =>
        Logits4<TL, NeoxRotation>(q, rows, zero, tl, th, d, half, dst, pf, cos);

    /// <summary><see cref="Logits1{TL}"/> with the rotation of <see cref="Logits4Neox{TL}"/> (the heads left over after
    /// blocks of four; not inlined into the tile step, whose inlining budget the common path needs).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits1Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow =>
        Logits1<TL, NeoxRotation>(q, rows, zero, tl, th, d, half, dst, pf, cos);

    /// <summary>The 4 × 4 logit blocks, with the K rows rotated (<typeparamref name="TR"/> = <see cref="NeoxRotation"/>) or
    /// not (<see cref="NoRotation"/>; the JIT drops every rotation instruction then). The block is written out here rather than
    /// as a helper: the JIT would not inline a helper that size, and the call per group cost ≈ 2 % of fp16 decode (scratch,
    /// from L2); this method is not inlined into the tile step instead.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Logits4<TL, TR>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow where TR : struct
    {
        bool rotate = typeof(TR) == typeof(NeoxRotation);
        Vector512<float> r0 = default, r1 = default, r2 = default, r3 = default;
        float* q0 = q, q1 = q + d, q2 = q + 2 * d, q3 = q + 3 * d;
        for (int g = tl >> 2; g < 4 && 4 * g < th; g++)
        {
            pf.Rows(4 * g, 4);
            byte* k0 = rows[4 * g], k1 = rows[4 * g + 1], k2 = rows[4 * g + 2], k3 = rows[4 * g + 3];
            float* c0 = rotate ? LogitRotation.AngleRow(cos, 4 * g, tl, th, d) : null, c1 = rotate ? LogitRotation.AngleRow(cos, 4 * g + 1, tl, th, d) : null;
            float* c2 = rotate ? LogitRotation.AngleRow(cos, 4 * g + 2, tl, th, d) : null, c3 = rotate ? LogitRotation.AngleRow(cos, 4 * g + 3, tl, th, d) : null;
            var z0 = TL.UsesZero ? Vector512.Create(zero[4 * g]) : default;
            var z1 = TL.UsesZero ? Vector512.Create(zero[4 * g + 1]) : default;
            var z2 = TL.UsesZero ? Vector512.Create(zero[4 * g + 2]) : default;
            var z3 = TL.UsesZero ? Vector512.Create(zero[4 * g + 3]) : default;
            Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
            Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
            Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
            Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
            for (int i = 0; i < half; i += 16)
            {
                TL.Load2(k0, i, half, z0, out var x0, out var w0);
                if (rotate) RotatePair(ref x0, ref w0, c0 + i, half);
                TL.Load2(k1, i, half, z1, out var x1, out var w1);
                if (rotate) RotatePair(ref x1, ref w1, c1 + i, half);
                TL.Load2(k2, i, half, z2, out var x2, out var w2);
                if (rotate) RotatePair(ref x2, ref w2, c2 + i, half);
                TL.Load2(k3, i, half, z3, out var x3, out var w3);
                if (rotate) RotatePair(ref x3, ref w3, c3 + i, half);
                Fma4(Vector512.Load(q0 + i), x0, x1, x2, x3, ref a00, ref a01, ref a02, ref a03);
                Fma4(Vector512.Load(q1 + i), x0, x1, x2, x3, ref a10, ref a11, ref a12, ref a13);
                Fma4(Vector512.Load(q2 + i), x0, x1, x2, x3, ref a20, ref a21, ref a22, ref a23);
                Fma4(Vector512.Load(q3 + i), x0, x1, x2, x3, ref a30, ref a31, ref a32, ref a33);
                Fma4(Vector512.Load(q0 + half + i), w0, w1, w2, w3, ref a00, ref a01, ref a02, ref a03);
                Fma4(Vector512.Load(q1 + half + i), w0, w1, w2, w3, ref a10, ref a11, ref a12, ref a13);
                Fma4(Vector512.Load(q2 + half + i), w0, w1, w2, w3, ref a20, ref a21, ref a22, ref a23);
                Fma4(Vector512.Load(q3 + half + i), w0, w1, w2, w3, ref a30, ref a31, ref a32, ref a33);
            }
            var block = Reduce16(
                Reduce4(a00, a01, a02, a03), Reduce4(a10, a11, a12, a13),
                Reduce4(a20, a21, a22, a23), Reduce4(a30, a31, a32, a33));
            Place(g, block, ref r0, ref r1, ref r2, ref r3);
        }
        StoreQueries(r0, r1, r2, r3, dst);
    }

    /// <summary>(x1, x2) rotated by the angles at <paramref name="c"/> (cos) and <c>c + half</c> (sin):
    /// <c>x1' = fma(x1, c, −(x2·s))</c>, <c>x2' = fma(x2, c, x1·s)</c>, as <see cref="WidenRowsNeox{TL}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RotatePair(ref Vector512<float> x1, ref Vector512<float> x2, float* c, int half)
    {
        var cv = Vector512.Load(c);
        var sv = Vector512.Load(c + half);
        var r1 = Avx512F.FusedMultiplySubtract(x1, cv, x2 * sv);
        x2 = Avx512F.FusedMultiplyAdd(x2, cv, x1 * sv);
        x1 = r1;
    }

    /// <summary>r_g = block for token group g (a switch the JIT keeps in registers, unlike an indexed array).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Place(int g, Vector512<float> block, ref Vector512<float> r0, ref Vector512<float> r1, ref Vector512<float> r2, ref Vector512<float> r3)
    {
        switch (g)
        {
            case 0: r0 = block; break;
            case 1: r1 = block; break;
            case 2: r2 = block; break;
            default: r3 = block; break;
        }
    }

    /// <summary>Token groups r0..r3 with lanes [4h + j] (query h, token 4g + j) → four 16-token query rows at dst: query h's row
    /// is 128-bit block h of r0..r3 (eight <c>vshuff32x4</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreQueries(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3, float* dst)
    {
        var u0 = Avx512F.Shuffle4x128(r0, r1, 0x44);
        var u1 = Avx512F.Shuffle4x128(r0, r1, 0xEE);
        var u2 = Avx512F.Shuffle4x128(r2, r3, 0x44);
        var u3 = Avx512F.Shuffle4x128(r2, r3, 0xEE);
        Avx512F.Shuffle4x128(u0, u2, 0x88).Store(dst);
        Avx512F.Shuffle4x128(u0, u2, 0xDD).Store(dst + Tile);
        Avx512F.Shuffle4x128(u1, u3, 0x88).Store(dst + 2 * Tile);
        Avx512F.Shuffle4x128(u1, u3, 0xDD).Store(dst + 3 * Tile);
    }

    /// <summary>a_j += y·x_j for four register accumulators (one query chunk against four K chunks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Fma4(Vector512<float> y, Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3,
        ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3)
    {
        a0 = Avx512F.FusedMultiplyAdd(y, x0, a0);
        a1 = Avx512F.FusedMultiplyAdd(y, x1, a1);
        a2 = Avx512F.FusedMultiplyAdd(y, x2, a2);
        a3 = Avx512F.FusedMultiplyAdd(y, x3, a3);
    }

    /// <summary>a_j += pairwise-summed int16 products y·x_j (<c>vpmaddwd</c>) for four int32 accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Madd4(Vector512<short> y, Vector512<short> x0, Vector512<short> x1, Vector512<short> x2, Vector512<short> x3,
        ref Vector512<int> a0, ref Vector512<int> a1, ref Vector512<int> a2, ref Vector512<int> a3)
    {
        a0 += Avx512BW.MultiplyAddAdjacent(x0, y);
        a1 += Avx512BW.MultiplyAddAdjacent(x1, y);
        a2 += Avx512BW.MultiplyAddAdjacent(x2, y);
        a3 += Avx512BW.MultiplyAddAdjacent(x3, y);
    }

    /// <summary>Raw dot products of one query with the tile's 16 rows (16 register accumulators), stored as one vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits1<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow =>
        Logits1<TL, NoRotation>(q, rows, zero, tl, th, d, half, dst, pf, null);

    /// <summary>One query's logit blocks, rotated or not as in <see cref="Logits4{TL, TR}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Logits1<TL, TR>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow where TR : struct
    {
        bool rotate = typeof(TR) == typeof(NeoxRotation);
        Vector512<float> r0 = default, r1 = default, r2 = default, r3 = default;
        for (int g = tl >> 2; g < 4 && 4 * g < th; g++)
        {
            pf.Rows(4 * g, 4);
            byte* k0 = rows[4 * g], k1 = rows[4 * g + 1], k2 = rows[4 * g + 2], k3 = rows[4 * g + 3];
            float* c0 = rotate ? LogitRotation.AngleRow(cos, 4 * g, tl, th, d) : null, c1 = rotate ? LogitRotation.AngleRow(cos, 4 * g + 1, tl, th, d) : null;
            float* c2 = rotate ? LogitRotation.AngleRow(cos, 4 * g + 2, tl, th, d) : null, c3 = rotate ? LogitRotation.AngleRow(cos, 4 * g + 3, tl, th, d) : null;
            var z0 = TL.UsesZero ? Vector512.Create(zero[4 * g]) : default;
            var z1 = TL.UsesZero ? Vector512.Create(zero[4 * g + 1]) : default;
            var z2 = TL.UsesZero ? Vector512.Create(zero[4 * g + 2]) : default;
            var z3 = TL.UsesZero ? Vector512.Create(zero[4 * g + 3]) : default;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int i = 0; i < half; i += 16)
            {
                var y = Vector512.Load(q + i);
                var w = Vector512.Load(q + half + i);
                TL.Load2(k0, i, half, z0, out var x0, out var v0);
                if (rotate) RotatePair(ref x0, ref v0, c0 + i, half);
                a0 = Avx512F.FusedMultiplyAdd(w, v0, Avx512F.FusedMultiplyAdd(y, x0, a0));
                TL.Load2(k1, i, half, z1, out var x1, out var v1);
                if (rotate) RotatePair(ref x1, ref v1, c1 + i, half);
                a1 = Avx512F.FusedMultiplyAdd(w, v1, Avx512F.FusedMultiplyAdd(y, x1, a1));
                TL.Load2(k2, i, half, z2, out var x2, out var v2);
                if (rotate) RotatePair(ref x2, ref v2, c2 + i, half);
                a2 = Avx512F.FusedMultiplyAdd(w, v2, Avx512F.FusedMultiplyAdd(y, x2, a2));
                TL.Load2(k3, i, half, z3, out var x3, out var v3);
                if (rotate) RotatePair(ref x3, ref v3, c3 + i, half);
                a3 = Avx512F.FusedMultiplyAdd(w, v3, Avx512F.FusedMultiplyAdd(y, x3, a3));
            }
            var block = Reduce4(a0, a1, a2, a3); // 128-bit block b holds the four tokens' partial sums over lane block b
            Place(g, block, ref r0, ref r1, ref r2, ref r3);
        }
        Reduce16(r0, r1, r2, r3).Store(dst);
    }

    /// <summary><see cref="Logits4{TL}"/> for int8/int4 K with int8 queries (<c>QuantizedQueryDot</c>): exact int32 dot
    /// products <c>Σ code·(k − z) = Σ code·k − z·Σ code</c>, converted to fp32 (exact: |dot| &lt; 2²⁴) and multiplied by the
    /// query scale; the K scale and sm_scale follow in the softmax as for float queries.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits4Int<TL>(ref TileItem c, int i, byte** rows, int* zero, int tl, int th, int d, int half, PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        int s0 = c.QSum[i], s1 = c.QSum[i + 1], s2 = c.QSum[i + 2], s3 = c.QSum[i + 3];
        float f0 = c.QScale[i], f1 = c.QScale[i + 1], f2 = c.QScale[i + 2], f3 = c.QScale[i + 3];
        var qsum = Vector512.Create(s0, s0, s0, s0, s1, s1, s1, s1, s2, s2, s2, s2, s3, s3, s3, s3);        // lanes [4h + t]
        var qscale = Vector512.Create(f0, f0, f0, f0, f1, f1, f1, f1, f2, f2, f2, f2, f3, f3, f3, f3);
        Vector512<float> r0 = default, r1 = default, r2 = default, r3 = default;
        for (int g = tl >> 2; g < 4 && 4 * g < th; g++)
        {
            pf.Rows(4 * g, 4);
            Vector512<int> dots;
            if (typeof(TL) == typeof(KvI4))
            {
                dots = Block4x4I4(c.QCodes + i * d, rows + 4 * g, d, half);
                dots -= Avx512F.BroadcastVector128ToVector512(zero + 4 * g) * qsum; // lanes [4h + t]: z_t·Σ code_h (vpmulld)
            }
            else
            {
                dots = Block4x4I8(c.Q16 + i * d, rows + 4 * g, d);
            }
            var block = Vector512.ConvertToSingle(dots) * qscale;
            Place(g, block, ref r0, ref r1, ref r2, ref r3);
        }
        StoreQueries(r0, r1, r2, r3, c.P + i * Tile);
    }

    /// <summary><see cref="QueryQuantization.Quantize"/> of one query row, vectorised and bit-identical to it (the same
    /// fp32 maximum, division and round-half-even), also writing the codes as int16, their sum and <c>code·s</c>.</summary>
    /// <returns>The scale.</returns>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs a few times per call: never worth tier-0 code
    public static float QuantizeQuery(float* q, int d, sbyte* codes, short* codes16, float* dequantized, out int sum)
    {
        var amax = Vector512<float>.Zero;
        for (int j = 0; j < d; j += 16) amax = Vector512.Max(amax, Vector512.Abs(Vector512.Load(q + j))); // IEEE max: NaN propagates
        float m = MaxAcross(amax);
        for (int j = 0; j < d && !float.IsNaN(m); j += 16)
            if (Vector512.IsNaN(Vector512.Load(q + j)) != Vector512<float>.Zero) m = float.NaN; // MaxAcross may drop a NaN lane
        if (QueryCodes.Degenerate(m, d, codes, codes16, dequantized, out sum, out float s0)) return s0;
        float s = m / 127f;
        var sv = Vector512.Create(s);
        var total = Vector512<int>.Zero;
        for (int j = 0; j < d; j += 16)
        {
            var r = Vector512.Round(Vector512.Load(q + j) / sv);                          // vdivps, vrndscaleps: ties to even
            var code = Vector512.ConvertToInt32(Vector512.Clamp(r, Vector512.Create(-127f), Vector512.Create(127f)));
            total += code;
            Avx512F.ConvertToVector128SByte(code).Store(codes + j);                         // vpmovdb
            Avx512F.ConvertToVector256Int16(code).Store(codes16 + j);                       // vpmovdw
            (Vector512.ConvertToSingle(code) * sv).Store(dequantized + j);
        }
        sum = Vector512.Sum(total);
        return s;
    }

    /// <summary>Four int8-query rows (codes, stride d) × four int4 K rows: <c>Σ code·q4</c> per (query, token) in lanes
    /// <c>[4·query + token]</c>. Per 64 bytes of a K row (elements i and half + i as low/high nibbles), two <c>vpmaddubsw</c>
    /// (unsigned nibble × signed code; a pair is at most 2·15·127, so the two summed stay below 7,620, far from 16-bit
    /// saturation) and one <c>vpmaddwd</c> by ones to int32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector512<int> Block4x4I4(sbyte* q, byte** rows, int d, int half)
    {
        byte* k0 = rows[0], k1 = rows[1], k2 = rows[2], k3 = rows[3];
        var nib = Vector512.Create((byte)0x0F);
        Vector512<int> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<int> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<int> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<int> a30 = default, a31 = default, a32 = default, a33 = default;
        for (int i = 0; i < half; i += 64)
        {
            var x = Vector512.Load(k0 + i);
            Vector512<byte> l0 = x & nib, h0 = (x.AsUInt16() >>> 4).AsByte() & nib;
            x = Vector512.Load(k1 + i);
            Vector512<byte> l1 = x & nib, h1 = (x.AsUInt16() >>> 4).AsByte() & nib;
            x = Vector512.Load(k2 + i);
            Vector512<byte> l2 = x & nib, h2 = (x.AsUInt16() >>> 4).AsByte() & nib;
            x = Vector512.Load(k3 + i);
            Vector512<byte> l3 = x & nib, h3 = (x.AsUInt16() >>> 4).AsByte() & nib;
            MaddRows(Vector512.Load(q + i), Vector512.Load(q + half + i), l0, h0, l1, h1, l2, h2, l3, h3, ref a00, ref a01, ref a02, ref a03);
            MaddRows(Vector512.Load(q + d + i), Vector512.Load(q + d + half + i), l0, h0, l1, h1, l2, h2, l3, h3, ref a10, ref a11, ref a12, ref a13);
            MaddRows(Vector512.Load(q + 2 * d + i), Vector512.Load(q + 2 * d + half + i), l0, h0, l1, h1, l2, h2, l3, h3, ref a20, ref a21, ref a22, ref a23);
            MaddRows(Vector512.Load(q + 3 * d + i), Vector512.Load(q + 3 * d + half + i), l0, h0, l1, h1, l2, h2, l3, h3, ref a30, ref a31, ref a32, ref a33);
        }
        return Reduce16(
            Reduce4(a00.AsSingle(), a01.AsSingle(), a02.AsSingle(), a03.AsSingle(), true), Reduce4(a10.AsSingle(), a11.AsSingle(), a12.AsSingle(), a13.AsSingle(), true),
            Reduce4(a20.AsSingle(), a21.AsSingle(), a22.AsSingle(), a23.AsSingle(), true), Reduce4(a30.AsSingle(), a31.AsSingle(), a32.AsSingle(), a33.AsSingle(), true), true).AsInt32();
    }

    /// <summary>a_t += one query's codes (ql: elements i…, qh: half + i…) · the int4 chunk of token t, for four tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MaddRows(Vector512<sbyte> ql, Vector512<sbyte> qh,
        Vector512<byte> l0, Vector512<byte> h0, Vector512<byte> l1, Vector512<byte> h1,
        Vector512<byte> l2, Vector512<byte> h2, Vector512<byte> l3, Vector512<byte> h3,
        ref Vector512<int> a0, ref Vector512<int> a1, ref Vector512<int> a2, ref Vector512<int> a3)
    {
        a0 += Madd(l0, h0, ql, qh);
        a1 += Madd(l1, h1, ql, qh);
        a2 += Madd(l2, h2, ql, qh);
        a3 += Madd(l3, h3, ql, qh);
    }

    /// <summary>Σ over 64 element pairs of one int4 K chunk (low and high nibbles) × the query codes, as 16 int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Madd(Vector512<byte> lo, Vector512<byte> hi, Vector512<sbyte> ql, Vector512<sbyte> qh) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(lo, ql) + Avx512BW.MultiplyAddAdjacent(hi, qh), Vector512.Create((short)1));

    /// <summary>Four int8-query rows (codes widened to int16, stride d) × four int8 K rows: per 32 elements one
    /// <c>vpmovsxbw</c> per K row and one <c>vpmaddwd</c> per (query, token) into int32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector512<int> Block4x4I8(short* q, byte** rows, int d)
    {
        sbyte* k0 = (sbyte*)rows[0], k1 = (sbyte*)rows[1], k2 = (sbyte*)rows[2], k3 = (sbyte*)rows[3];
        Vector512<int> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<int> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<int> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<int> a30 = default, a31 = default, a32 = default, a33 = default;
        for (int i = 0; i < d; i += 32)
        {
            var x0 = Avx512BW.ConvertToVector512Int16(Vector256.Load(k0 + i)); // vpmovsxbw
            var x1 = Avx512BW.ConvertToVector512Int16(Vector256.Load(k1 + i));
            var x2 = Avx512BW.ConvertToVector512Int16(Vector256.Load(k2 + i));
            var x3 = Avx512BW.ConvertToVector512Int16(Vector256.Load(k3 + i));
            Madd4(Vector512.Load(q + i), x0, x1, x2, x3, ref a00, ref a01, ref a02, ref a03);
            Madd4(Vector512.Load(q + d + i), x0, x1, x2, x3, ref a10, ref a11, ref a12, ref a13);
            Madd4(Vector512.Load(q + 2 * d + i), x0, x1, x2, x3, ref a20, ref a21, ref a22, ref a23);
            Madd4(Vector512.Load(q + 3 * d + i), x0, x1, x2, x3, ref a30, ref a31, ref a32, ref a33);
        }
        return Reduce16(
            Reduce4(a00.AsSingle(), a01.AsSingle(), a02.AsSingle(), a03.AsSingle(), true), Reduce4(a10.AsSingle(), a11.AsSingle(), a12.AsSingle(), a13.AsSingle(), true),
            Reduce4(a20.AsSingle(), a21.AsSingle(), a22.AsSingle(), a23.AsSingle(), true), Reduce4(a30.AsSingle(), a31.AsSingle(), a32.AsSingle(), a33.AsSingle(), true), true).AsInt32();
    }

    /// <summary>Four vectors x, y, z, w → one whose 128-bit block b is [Σ x_b, Σ y_b, Σ z_b, Σ w_b] (sums within block b);
    /// <paramref name="integer"/>: the lanes hold int32 and are added as such (<c>vpaddd</c>), the shuffles being the same.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Reduce4(Vector512<float> x, Vector512<float> y, Vector512<float> z, Vector512<float> w, bool integer = false)
    {
        var xy = Add(Avx512F.UnpackLow(x, y), Avx512F.UnpackHigh(x, y), integer);          // [x0+x2, y0+y2, x1+x3, y1+y3] per block
        var zw = Add(Avx512F.UnpackLow(z, w), Avx512F.UnpackHigh(z, w), integer);
        return Add(Avx512F.Shuffle(xy, zw, 0x44), Avx512F.Shuffle(xy, zw, 0xEE), integer);   // [x, y, z, w] per block
    }

    /// <summary>Four <see cref="Reduce4"/> results c0..c3 → lanes [4g + j] = Σ over the four blocks of c_g[j].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Reduce16(Vector512<float> c0, Vector512<float> c1, Vector512<float> c2, Vector512<float> c3, bool integer = false)
    {
        var e01 = Add(Avx512F.Shuffle4x128(c0, c1, 0x88), Avx512F.Shuffle4x128(c0, c1, 0xDD), integer); // [c0.B0+B1, c0.B2+B3, c1.B01, c1.B23]
        var e23 = Add(Avx512F.Shuffle4x128(c2, c3, 0x88), Avx512F.Shuffle4x128(c2, c3, 0xDD), integer);
        return Add(Avx512F.Shuffle4x128(e01, e23, 0x88), Avx512F.Shuffle4x128(e01, e23, 0xDD), integer);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Add(Vector512<float> a, Vector512<float> b, bool integer) =>
        integer ? (a.AsInt32() + b.AsInt32()).AsSingle() : a + b;

    /// <summary>acc_j[0..d) += Σ_t p_j[t]·v_t for four queries over tokens [tl, th): per pass 4 queries × 64 dims (i, i + 16,
    /// half + i, half + i + 16) in 16 registers, so each probability is broadcast once per 64 dims; a 32-dim pass covers the
    /// rest when half is not a multiple of 32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate4<TL>(float** acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        float* a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        float* p0 = p; // query j's probabilities at p0 + j·Tile
        int i = 0;
        for (; i + 32 <= half; i += 32)
        {
            int j = half + i;
            var x0 = Vector512.Load(a0 + i);
            var x1 = Vector512.Load(a1 + i);
            var x2 = Vector512.Load(a2 + i);
            var x3 = Vector512.Load(a3 + i);
            var y0 = Vector512.Load(a0 + i + 16);
            var y1 = Vector512.Load(a1 + i + 16);
            var y2 = Vector512.Load(a2 + i + 16);
            var y3 = Vector512.Load(a3 + i + 16);
            var u0 = Vector512.Load(a0 + j);
            var u1 = Vector512.Load(a1 + j);
            var u2 = Vector512.Load(a2 + j);
            var u3 = Vector512.Load(a3 + j);
            var w0 = Vector512.Load(a0 + j + 16);
            var w1 = Vector512.Load(a1 + j + 16);
            var w2 = Vector512.Load(a2 + j + 16);
            var w3 = Vector512.Load(a3 + j + 16);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1); // spread over the first pass, one row per token
                var z = TL.UsesZero ? Vector512.Create(zero[t]) : default;
                TL.Load2(rows[t], i, half, z, out var va, out var vc);
                TL.Load2(rows[t], i + 16, half, z, out var vb, out var vd);
                // The four queries' probabilities at constant offsets from one pointer (no base pointers to keep in registers).
                float* pt = p0 + t;
                Fma4(Vector512.Create(pt[0]), va, vb, vc, vd, ref x0, ref y0, ref u0, ref w0);
                Fma4(Vector512.Create(pt[Tile]), va, vb, vc, vd, ref x1, ref y1, ref u1, ref w1);
                Fma4(Vector512.Create(pt[2 * Tile]), va, vb, vc, vd, ref x2, ref y2, ref u2, ref w2);
                Fma4(Vector512.Create(pt[3 * Tile]), va, vb, vc, vd, ref x3, ref y3, ref u3, ref w3);
            }
            x0.Store(a0 + i);
            x1.Store(a1 + i);
            x2.Store(a2 + i);
            x3.Store(a3 + i);
            y0.Store(a0 + i + 16);
            y1.Store(a1 + i + 16);
            y2.Store(a2 + i + 16);
            y3.Store(a3 + i + 16);
            u0.Store(a0 + j);
            u1.Store(a1 + j);
            u2.Store(a2 + j);
            u3.Store(a3 + j);
            w0.Store(a0 + j + 16);
            w1.Store(a1 + j + 16);
            w2.Store(a2 + j + 16);
            w3.Store(a3 + j + 16);
        }
        for (; i < half; i += 16)
        {
            var x0 = Vector512.Load(a0 + i);
            var x1 = Vector512.Load(a1 + i);
            var x2 = Vector512.Load(a2 + i);
            var x3 = Vector512.Load(a3 + i);
            var y0 = Vector512.Load(a0 + half + i);
            var y1 = Vector512.Load(a1 + half + i);
            var y2 = Vector512.Load(a2 + half + i);
            var y3 = Vector512.Load(a3 + half + i);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1); // spread over the first pass, one row per token
                TL.Load2(rows[t], i, half, TL.UsesZero ? Vector512.Create(zero[t]) : default, out var va, out var vb);
                float* pt = p0 + t;
                var b = Vector512.Create(pt[0]);
                x0 = Avx512F.FusedMultiplyAdd(b, va, x0);
                y0 = Avx512F.FusedMultiplyAdd(b, vb, y0);
                b = Vector512.Create(pt[Tile]);
                x1 = Avx512F.FusedMultiplyAdd(b, va, x1);
                y1 = Avx512F.FusedMultiplyAdd(b, vb, y1);
                b = Vector512.Create(pt[2 * Tile]);
                x2 = Avx512F.FusedMultiplyAdd(b, va, x2);
                y2 = Avx512F.FusedMultiplyAdd(b, vb, y2);
                b = Vector512.Create(pt[3 * Tile]);
                x3 = Avx512F.FusedMultiplyAdd(b, va, x3);
                y3 = Avx512F.FusedMultiplyAdd(b, vb, y3);
            }
            x0.Store(a0 + i);
            x1.Store(a1 + i);
            x2.Store(a2 + i);
            x3.Store(a3 + i);
            y0.Store(a0 + half + i);
            y1.Store(a1 + half + i);
            y2.Store(a2 + half + i);
            y3.Store(a3 + half + i);
        }
    }

    /// <summary>acc[0..d) += Σ_t p[t]·v_t for one query.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate1<TL>(float* acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        for (int i = 0; i < half; i += 16)
        {
            var x = Vector512.Load(acc + i);
            var y = Vector512.Load(acc + half + i);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1); // spread over the first pass, one row per token
                TL.Load2(rows[t], i, half, TL.UsesZero ? Vector512.Create(zero[t]) : default, out var va, out var vb);
                var b = Vector512.Create(p[t]);
                x = Avx512F.FusedMultiplyAdd(b, va, x);
                y = Avx512F.FusedMultiplyAdd(b, vb, y);
            }
            x.Store(acc + i);
            y.Store(acc + half + i);
        }
    }

    /// <summary>The largest lane by raw <c>vmaxps</c> (not IEEE maximum: a NaN lane may be dropped, which is harmless here
    /// because that lane's <see cref="SoftmaxExp.Exp(Vector512{float})"/> is NaN and still reaches the sum and the output).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxAcross(Vector512<float> v)
    {
        v = Avx512F.Max(v, Avx512F.Shuffle4x128(v, v, 0x4E));          // swap 256-bit halves
        v = Avx512F.Max(v, Avx512F.Shuffle4x128(v, v, 0xB1));          // swap 128-bit blocks
        v = Avx512F.Max(v, Avx512F.Permute4x32(v, 0x4E));              // swap 64-bit pairs (vpermilps)
        v = Avx512F.Max(v, Avx512F.Permute4x32(v, 0xB1));              // swap neighbours
        return v.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SumAcross(Vector512<float> v)
    {
        var a = v.GetLower() + v.GetUpper();
        return Vector128.Sum(a.GetLower() + a.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* acc, float f, int n)
    {
        var fv = Vector512.Create(f);
        for (int i = 0; i < n; i += 16) (Vector512.Load(acc + i) * fv).Store(acc + i);
    }
}
