using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Attention.Reference;

namespace Kernels.Cpu.Attention;

/// <summary>The AVX2 + FMA vector kernels of <see cref="PagedAttentionTiled{TTile}"/>, sized for 16 ymm registers:
/// 4 queries × 2 tokens per logit block (8 accumulators; each K chunk widened once for the four queries, a 15-instruction
/// transpose-and-add tree to one register of 8 dot products), 1 query × 8 tokens for leftover heads, the 16-lane softmax as
/// two halves, and 4 queries × 16 dims (i and half + i) of output accumulators, and integer K dot products for int8
/// queries (4 queries × 2 tokens, <c>vpmaddwd</c>/<c>vpmaddubsw</c>).</summary>
internal unsafe struct Tile256 : IAttentionTile
{
    private const int Tile = PagedAttentionKernel.Tile;

    /// <inheritdoc />
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <inheritdoc />
    public static bool SupportsIntDot => true;

    /// <inheritdoc />
    public static bool RotatesInLogits => true;

    /// <summary>HND (<paramref name="tokenStride"/> 1): two loads per head. NHD with the item covering 8 heads (the
    /// common GQA case): each 8-token half of the [16 tokens][8 heads] block is an 8×8 transpose in registers (24 shuffles).
    /// Other head counts return false (the caller reads one by one). See <see cref="Tile512.TileScales"/> for why.
    /// Not inlined (a call per array and tile): inlined at its four call sites it used up the JIT's inline budget for the tile step.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static bool TileScales(float* src, long tokenStride, long headStride, int heads, float mul, int tl, int th, void* dst, bool toInt)
    {
        var lane = Vector256<int>.Indices;
        Vector256<int> tlv = Vector256.Create(tl), thv = Vector256.Create(th), lane8 = lane + Vector256.Create(8);
        var live0 = (Vector256.GreaterThanOrEqual(lane, tlv) & Vector256.LessThan(lane, thv)).AsSingle();
        var live1 = (Vector256.GreaterThanOrEqual(lane8, tlv) & Vector256.LessThan(lane8, thv)).AsSingle();
        var m = Vector256.Create(mul);
        if (tokenStride == 1)
        {
            for (int kk = 0; kk < heads; kk++)
            {
                PutRow(Vector256.Load(src + kk * headStride), kk * Tile, live0, m, dst, toInt);
                PutRow(Vector256.Load(src + kk * headStride + 8), kk * Tile + 8, live1, m, dst, toInt);
            }
            return true;
        }
        if (headStride != 1 || tokenStride != 8 || heads != 8) return false;
        for (int h = 0; h < 2; h++)
        {
            float* r = src + 64 * h; // tokens 8h … 8h + 7, one row of 8 heads each
            var t0 = Avx.UnpackLow(Vector256.Load(r), Vector256.Load(r + 8));
            var t1 = Avx.UnpackHigh(Vector256.Load(r), Vector256.Load(r + 8));
            var t2 = Avx.UnpackLow(Vector256.Load(r + 16), Vector256.Load(r + 24));
            var t3 = Avx.UnpackHigh(Vector256.Load(r + 16), Vector256.Load(r + 24));
            var t4 = Avx.UnpackLow(Vector256.Load(r + 32), Vector256.Load(r + 40));
            var t5 = Avx.UnpackHigh(Vector256.Load(r + 32), Vector256.Load(r + 40));
            var t6 = Avx.UnpackLow(Vector256.Load(r + 48), Vector256.Load(r + 56));
            var t7 = Avx.UnpackHigh(Vector256.Load(r + 48), Vector256.Load(r + 56));
            var s0 = Avx.Shuffle(t0, t2, 0x44); // tokens 0–3 of heads 0 | 4
            var s1 = Avx.Shuffle(t0, t2, 0xEE); // heads 1 | 5
            var s2 = Avx.Shuffle(t1, t3, 0x44); // heads 2 | 6
            var s3 = Avx.Shuffle(t1, t3, 0xEE); // heads 3 | 7
            var s4 = Avx.Shuffle(t4, t6, 0x44); // tokens 4–7
            var s5 = Avx.Shuffle(t4, t6, 0xEE);
            var s6 = Avx.Shuffle(t5, t7, 0x44);
            var s7 = Avx.Shuffle(t5, t7, 0xEE);
            var live = h == 0 ? live0 : live1;
            int o = 8 * h;
            PutRow(Avx.Permute2x128(s0, s4, 0x20), o, live, m, dst, toInt);
            PutRow(Avx.Permute2x128(s1, s5, 0x20), Tile + o, live, m, dst, toInt);
            PutRow(Avx.Permute2x128(s2, s6, 0x20), 2 * Tile + o, live, m, dst, toInt);
            PutRow(Avx.Permute2x128(s3, s7, 0x20), 3 * Tile + o, live, m, dst, toInt);
            PutRow(Avx.Permute2x128(s0, s4, 0x31), 4 * Tile + o, live, m, dst, toInt);
            PutRow(Avx.Permute2x128(s1, s5, 0x31), 5 * Tile + o, live, m, dst, toInt);
            PutRow(Avx.Permute2x128(s2, s6, 0x31), 6 * Tile + o, live, m, dst, toInt);
            PutRow(Avx.Permute2x128(s3, s7, 0x31), 7 * Tile + o, live, m, dst, toInt);
        }
        return true;
    }

    /// <summary>Eight lanes of a <see cref="TileScales"/> result at element <paramref name="at"/>: x × m on live lanes, 0 elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutRow(Vector256<float> x, int at, Vector256<float> live, Vector256<float> m, void* dst, bool toInt)
    {
        var v = Vector256.ConditionalSelect(live, x * m, Vector256<float>.Zero);
        if (toInt) Vector256.ConvertToInt32(v).Store((int*)dst + at);
        else v.Store((float*)dst + at);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void WidenRows<TL>(byte** rows, int* zero, int tl, int th, int half, float* dst) where TL : unmanaged, IKvRow
    {
        for (int t = tl; t < th; t++)
        {
            var z = TL.UsesZero ? Vector256.Create(zero[t]) : default;
            float* o = dst + t * 2 * half;
            for (int i = 0; i < half; i += 8)
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
        where TL : unmanaged, IKvRow =>
        Logits4<TL, NoRotation>(q, rows, zero, tl, th, d, half, dst, pf, null);

    /// <summary><see cref="Logits4{TL}"/> with in-kernel RoPE for NeoX pairs over the whole row (rotary_dim = head_dim), as
    /// <see cref="Tile512.Logits4Neox{TL}"/>: each K chunk pair (i, half + i) is rotated in registers right after its load by
    /// the table row at <c>cos + t·d</c> for token t, with <c>RopeKernel</c>'s formula, so the logits are bit-identical to
    /// widening, rotating (<c>RopeKernel.RotateRows</c>) and reading the rows back. Tokens outside [tl, th) take row tl's
    /// angles: their K rows are the zero row, and their table rows may lie past the table.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits4Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow =>
        Logits4<TL, NeoxRotation>(q, rows, zero, tl, th, d, half, dst, pf, cos);

    /// <summary>The 4 × 2 logit blocks over the tile, K rotated (<typeparamref name="TR"/> = <see cref="NeoxRotation"/>) or
    /// not (<see cref="NoRotation"/>: the JIT drops every rotation instruction).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Logits4<TL, TR>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow where TR : struct
    {
        bool rotate = typeof(TR) == typeof(NeoxRotation);
        for (int g = tl >> 1; g < 8 && 2 * g < th; g++)
        {
            pf.Rows(2 * g, 2);
            var r = Block4x2<TL, TR>(q, rows + 2 * g, zero + 2 * g, d, half, // lanes [2·query + token]
                rotate ? LogitRotation.AngleRow(cos, 2 * g, tl, th, d) : null, rotate ? LogitRotation.AngleRow(cos, 2 * g + 1, tl, th, d) : null);
            var lower = r.GetLower();
            var upper = r.GetUpper();
            Sse.StoreLow(dst + 2 * g, lower);                  // movlps: query 0, tokens 2g, 2g + 1
            Sse.StoreHigh(dst + Tile + 2 * g, lower);          // movhps: query 1
            Sse.StoreLow(dst + 2 * Tile + 2 * g, upper);
            Sse.StoreHigh(dst + 3 * Tile + 2 * g, upper);
        }
    }

    /// <summary>Four queries × two tokens: 8 register accumulators over head_dim, reduced to lanes <c>[2·query + token]</c>;
    /// with <see cref="NeoxRotation"/>, token j's K pairs rotated by the table row at <paramref name="c0"/> / <paramref name="c1"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector256<float> Block4x2<TL, TR>(float* q, byte** rows, int* zero, int d, int half, float* c0, float* c1)
        where TL : unmanaged, IKvRow where TR : struct
    {
        bool rotate = typeof(TR) == typeof(NeoxRotation);
        byte* k0 = rows[0], k1 = rows[1];
        var z0 = TL.UsesZero ? Vector256.Create(zero[0]) : default;
        var z1 = TL.UsesZero ? Vector256.Create(zero[1]) : default;
        float* q0 = q, q1 = q + d, q2 = q + 2 * d, q3 = q + 3 * d;
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<float> a20 = default, a21 = default, a30 = default, a31 = default;
        for (int i = 0; i < half; i += 8)
        {
            TL.Load2(k0, i, half, z0, out var x0, out var w0);
            if (rotate) RotatePair(ref x0, ref w0, c0 + i, half);
            TL.Load2(k1, i, half, z1, out var x1, out var w1);
            if (rotate) RotatePair(ref x1, ref w1, c1 + i, half);
            Fma2(Vector256.Load(q0 + i), x0, x1, ref a00, ref a01);
            Fma2(Vector256.Load(q1 + i), x0, x1, ref a10, ref a11);
            Fma2(Vector256.Load(q2 + i), x0, x1, ref a20, ref a21);
            Fma2(Vector256.Load(q3 + i), x0, x1, ref a30, ref a31);
            Fma2(Vector256.Load(q0 + half + i), w0, w1, ref a00, ref a01);
            Fma2(Vector256.Load(q1 + half + i), w0, w1, ref a10, ref a11);
            Fma2(Vector256.Load(q2 + half + i), w0, w1, ref a20, ref a21);
            Fma2(Vector256.Load(q3 + half + i), w0, w1, ref a30, ref a31);
        }
        return Reduce8(Reduce4(a00, a01, a10, a11), Reduce4(a20, a21, a30, a31));
    }

    /// <summary>a_j += y·x_j for two register accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Fma2(Vector256<float> y, Vector256<float> x0, Vector256<float> x1, ref Vector256<float> a0, ref Vector256<float> a1)
    {
        a0 = Fma.MultiplyAdd(y, x0, a0);
        a1 = Fma.MultiplyAdd(y, x1, a1);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits1<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow =>
        Logits1<TL, NoRotation>(q, rows, zero, tl, th, d, half, dst, pf, null);

    /// <summary><see cref="Logits1{TL}"/> with the rotation of <see cref="Logits4Neox{TL}"/> (the heads left over after
    /// blocks of four).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits1Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow =>
        Logits1<TL, NeoxRotation>(q, rows, zero, tl, th, d, half, dst, pf, cos);

    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Logits1<TL, TR>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow where TR : struct
    {
        bool rotate = typeof(TR) == typeof(NeoxRotation);
        for (int g = tl >> 3; g < 2 && 8 * g < th; g++)
        {
            pf.Rows(8 * g, 8);
            byte** k = rows + 8 * g;
            int* z = zero + 8 * g;
            int t = 8 * g;
            float* c0 = rotate ? LogitRotation.AngleRow(cos, t, tl, th, d) : null, c1 = rotate ? LogitRotation.AngleRow(cos, t + 1, tl, th, d) : null;
            float* c2 = rotate ? LogitRotation.AngleRow(cos, t + 2, tl, th, d) : null, c3 = rotate ? LogitRotation.AngleRow(cos, t + 3, tl, th, d) : null;
            float* c4 = rotate ? LogitRotation.AngleRow(cos, t + 4, tl, th, d) : null, c5 = rotate ? LogitRotation.AngleRow(cos, t + 5, tl, th, d) : null;
            float* c6 = rotate ? LogitRotation.AngleRow(cos, t + 6, tl, th, d) : null, c7 = rotate ? LogitRotation.AngleRow(cos, t + 7, tl, th, d) : null;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int i = 0; i < half; i += 8)
            {
                var y = Vector256.Load(q + i);
                var w = Vector256.Load(q + half + i);
                a0 = Dot2<TL, TR>(k[0], z[0], i, half, y, w, a0, c0 + i);
                a1 = Dot2<TL, TR>(k[1], z[1], i, half, y, w, a1, c1 + i);
                a2 = Dot2<TL, TR>(k[2], z[2], i, half, y, w, a2, c2 + i);
                a3 = Dot2<TL, TR>(k[3], z[3], i, half, y, w, a3, c3 + i);
                a4 = Dot2<TL, TR>(k[4], z[4], i, half, y, w, a4, c4 + i);
                a5 = Dot2<TL, TR>(k[5], z[5], i, half, y, w, a5, c5 + i);
                a6 = Dot2<TL, TR>(k[6], z[6], i, half, y, w, a6, c6 + i);
                a7 = Dot2<TL, TR>(k[7], z[7], i, half, y, w, a7, c7 + i);
            }
            Reduce8(Reduce4(a0, a1, a2, a3), Reduce4(a4, a5, a6, a7)).Store(dst + 8 * g); // lanes = tokens 8g … 8g + 7
        }
    }

    /// <summary>a + y·row[i…] + w·row[half + i…], the row's pair rotated by the angles at <paramref name="c"/> with
    /// <see cref="NeoxRotation"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Dot2<TL, TR>(byte* row, int zero, int i, int half, Vector256<float> y, Vector256<float> w, Vector256<float> a, float* c)
        where TL : unmanaged, IKvRow where TR : struct
    {
        TL.Load2(row, i, half, Vector256.Create(zero), out var x, out var v);
        if (typeof(TR) == typeof(NeoxRotation)) RotatePair(ref x, ref v, c, half);
        return Fma.MultiplyAdd(w, v, Fma.MultiplyAdd(y, x, a));
    }

    /// <summary>(x1, x2) rotated by the angles at <paramref name="c"/> (cos) and <c>c + half</c> (sin):
    /// <c>x1' = fma(x1, c, −(x2·s))</c>, <c>x2' = fma(x2, c, x1·s)</c>, as <c>RopeKernel</c>'s AVX2 rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RotatePair(ref Vector256<float> x1, ref Vector256<float> x2, float* c, int half)
    {
        var cv = Vector256.Load(c);
        var sv = Vector256.Load(c + half);
        var r1 = Fma.MultiplySubtract(x1, cv, x2 * sv);
        x2 = Fma.MultiplyAdd(x2, cv, x1 * sv);
        x1 = r1;
    }

    /// <summary><see cref="Logits4{TL}"/> for int8/int4 K with int8 queries, as <see cref="Tile512.Logits4Int{TL}"/> does it
    /// at half the width: exact int32 dot products <c>Σ code·(k − z) = Σ code·k − z·Σ code</c> of 4 queries × 2 tokens,
    /// converted to fp32 and multiplied by the query scale. Not inlined: inside the tile step it used up the JIT's inline
    /// budget, and the output pass's helpers then stayed calls (int8 with int8 queries ran 3× slower).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits4Int<TL>(ref TileItem c, int i, byte** rows, int* zero, int tl, int th, int d, int half, PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        int s0 = c.QSum[i], s1 = c.QSum[i + 1], s2 = c.QSum[i + 2], s3 = c.QSum[i + 3];
        float f0 = c.QScale[i], f1 = c.QScale[i + 1], f2 = c.QScale[i + 2], f3 = c.QScale[i + 3];
        var qsum = Vector256.Create(s0, s0, s1, s1, s2, s2, s3, s3);       // lanes [2·query + token]
        var qscale = Vector256.Create(f0, f0, f1, f1, f2, f2, f3, f3);
        float* dst = c.P + i * Tile;
        for (int g = tl >> 1; g < 8 && 2 * g < th; g++)
        {
            pf.Rows(2 * g, 2);
            Vector256<int> dots;
            if (typeof(TL) == typeof(KvI4))
            {
                dots = Block4x2I4(c.QCodes + i * d, rows + 2 * g, d, half);
                var z = TL.UsesZero ? Vector256.Create(zero[2 * g], zero[2 * g + 1], zero[2 * g], zero[2 * g + 1], zero[2 * g], zero[2 * g + 1], zero[2 * g], zero[2 * g + 1]) : default;
                dots -= z * qsum;                                                  // vpmulld
            }
            else if (AvxVnni.IsSupported && d % 32 == 0)
            {
                // Σ (k + 128)·code − 128·Σ code: vpdpbusd wants an unsigned operand, and k ^ 0x80 = k + 128.
                dots = Block4x2I8Vnni(c.QCodes + i * d, rows + 2 * g, d) - (qsum << 7);
            }
            else
            {
                dots = Block4x2I8(c.Q16 + i * d, rows + 2 * g, d);
            }
            var r = Vector256.ConvertToSingle(dots) * qscale;
            var lower = r.GetLower();
            var upper = r.GetUpper();
            Sse.StoreLow(dst + 2 * g, lower);
            Sse.StoreHigh(dst + Tile + 2 * g, lower);
            Sse.StoreLow(dst + 2 * Tile + 2 * g, upper);
            Sse.StoreHigh(dst + 3 * Tile + 2 * g, upper);
        }
    }

    /// <summary>Four int8-query rows (codes, stride d) × two int4 K rows: per 32 bytes of a K row (elements i and half + i as
    /// low/high nibbles) two <c>vpmaddubsw</c> per query (a pair is at most 2·15·127, the two summed below 7,620) and one
    /// <c>vpmaddwd</c> by ones; lanes <c>[2·query + token]</c> after the reduction.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector256<int> Block4x2I4(sbyte* q, byte** rows, int d, int half)
    {
        byte* k0 = rows[0], k1 = rows[1];
        var nib = Vector256.Create((byte)0x0F);
        Vector256<int> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<int> a20 = default, a21 = default, a30 = default, a31 = default;
        for (int i = 0; i < half; i += 32)
        {
            var x = Vector256.Load(k0 + i);
            Vector256<byte> l0 = x & nib, h0 = (x.AsUInt16() >>> 4).AsByte() & nib;
            x = Vector256.Load(k1 + i);
            Vector256<byte> l1 = x & nib, h1 = (x.AsUInt16() >>> 4).AsByte() & nib;
            MaddRows(Vector256.Load(q + i), Vector256.Load(q + half + i), l0, h0, l1, h1, ref a00, ref a01);
            MaddRows(Vector256.Load(q + d + i), Vector256.Load(q + d + half + i), l0, h0, l1, h1, ref a10, ref a11);
            MaddRows(Vector256.Load(q + 2 * d + i), Vector256.Load(q + 2 * d + half + i), l0, h0, l1, h1, ref a20, ref a21);
            MaddRows(Vector256.Load(q + 3 * d + i), Vector256.Load(q + 3 * d + half + i), l0, h0, l1, h1, ref a30, ref a31);
        }
        return ReduceInt(a00, a01, a10, a11, a20, a21, a30, a31);
    }

    /// <summary>a_t += one query's codes (ql: elements i…, qh: half + i…) · the int4 chunk of token t, for two tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MaddRows(Vector256<sbyte> ql, Vector256<sbyte> qh, Vector256<byte> l0, Vector256<byte> h0,
        Vector256<byte> l1, Vector256<byte> h1, ref Vector256<int> a0, ref Vector256<int> a1)
    {
        if (AvxVnni.IsSupported)
        {
            // vpdpbusd: four unsigned × signed byte products summed straight into int32 (2 instructions instead of 5).
            a0 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(a0, l0, ql), h0, qh);
            a1 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(a1, l1, ql), h1, qh);
            return;
        }
        var ones = Vector256.Create((short)1);
        a0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(l0, ql) + Avx2.MultiplyAddAdjacent(h0, qh), ones);
        a1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(l1, ql) + Avx2.MultiplyAddAdjacent(h1, qh), ones);
    }

    /// <summary>Four int8-query rows (codes widened to int16, stride d) × two int8 K rows: per 16 elements one
    /// <c>vpmovsxbw</c> per K row and one <c>vpmaddwd</c> per (query, token).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector256<int> Block4x2I8(short* q, byte** rows, int d)
    {
        sbyte* k0 = (sbyte*)rows[0], k1 = (sbyte*)rows[1];
        Vector256<int> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<int> a20 = default, a21 = default, a30 = default, a31 = default;
        for (int i = 0; i < d; i += 16)
        {
            var x0 = Avx2.ConvertToVector256Int16(k0 + i); // vpmovsxbw
            var x1 = Avx2.ConvertToVector256Int16(k1 + i);
            var y = Vector256.Load(q + i);
            a00 += Avx2.MultiplyAddAdjacent(x0, y);
            a01 += Avx2.MultiplyAddAdjacent(x1, y);
            y = Vector256.Load(q + d + i);
            a10 += Avx2.MultiplyAddAdjacent(x0, y);
            a11 += Avx2.MultiplyAddAdjacent(x1, y);
            y = Vector256.Load(q + 2 * d + i);
            a20 += Avx2.MultiplyAddAdjacent(x0, y);
            a21 += Avx2.MultiplyAddAdjacent(x1, y);
            y = Vector256.Load(q + 3 * d + i);
            a30 += Avx2.MultiplyAddAdjacent(x0, y);
            a31 += Avx2.MultiplyAddAdjacent(x1, y);
        }
        return ReduceInt(a00, a01, a10, a11, a20, a21, a30, a31);
    }

    /// <summary><see cref="Block4x2I8"/> by AVX-VNNI: four int8-query rows (codes, stride d) × two int8 K rows read as
    /// <c>k + 128</c> (<c>k ^ 0x80</c>, unsigned), per 32 elements one <c>vpxor</c> per K row and one <c>vpdpbusd</c> per
    /// (query, token). Returns <c>Σ (k + 128)·code</c>; the caller subtracts <c>128·Σ code</c> (exact in int32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector256<int> Block4x2I8Vnni(sbyte* q, byte** rows, int d)
    {
        byte* k0 = rows[0], k1 = rows[1];
        var bias = Vector256.Create((byte)0x80);
        Vector256<int> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<int> a20 = default, a21 = default, a30 = default, a31 = default;
        for (int i = 0; i < d; i += 32)
        {
            var x0 = Vector256.Load(k0 + i) ^ bias;
            var x1 = Vector256.Load(k1 + i) ^ bias;
            var y = Vector256.Load(q + i);
            a00 = AvxVnni.MultiplyWideningAndAdd(a00, x0, y);
            a01 = AvxVnni.MultiplyWideningAndAdd(a01, x1, y);
            y = Vector256.Load(q + d + i);
            a10 = AvxVnni.MultiplyWideningAndAdd(a10, x0, y);
            a11 = AvxVnni.MultiplyWideningAndAdd(a11, x1, y);
            y = Vector256.Load(q + 2 * d + i);
            a20 = AvxVnni.MultiplyWideningAndAdd(a20, x0, y);
            a21 = AvxVnni.MultiplyWideningAndAdd(a21, x1, y);
            y = Vector256.Load(q + 3 * d + i);
            a30 = AvxVnni.MultiplyWideningAndAdd(a30, x0, y);
            a31 = AvxVnni.MultiplyWideningAndAdd(a31, x1, y);
        }
        return ReduceInt(a00, a01, a10, a11, a20, a21, a30, a31);
    }

    /// <summary><see cref="Reduce8"/>(<see cref="Reduce4"/>, <see cref="Reduce4"/>) with integer adds: lanes
    /// <c>[2·query + token]</c> of the eight accumulators' sums (the same shuffles, <c>vpaddd</c> instead of <c>vaddps</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ReduceInt(Vector256<int> a00, Vector256<int> a01, Vector256<int> a10, Vector256<int> a11,
        Vector256<int> a20, Vector256<int> a21, Vector256<int> a30, Vector256<int> a31)
    {
        var lo = Reduce4I(a00, a01, a10, a11);
        var hi = Reduce4I(a20, a21, a30, a31);
        return Avx2.Permute2x128(lo, hi, 0x20) + Avx2.Permute2x128(lo, hi, 0x31);
    }

    /// <summary><see cref="Reduce4"/> on int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Reduce4I(Vector256<int> x, Vector256<int> y, Vector256<int> z, Vector256<int> w)
    {
        var xy = Avx2.UnpackLow(x, y) + Avx2.UnpackHigh(x, y);
        var zw = Avx2.UnpackLow(z, w) + Avx2.UnpackHigh(z, w);
        return Avx.Shuffle(xy.AsSingle(), zw.AsSingle(), 0x44).AsInt32() + Avx.Shuffle(xy.AsSingle(), zw.AsSingle(), 0xEE).AsInt32();
    }

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
        var lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        var vlo = Vector256.Create(lo);
        var vhi = Vector256.Create(hi);
        var bit = Vector256.Create(1, 2, 4, 8, 16, 32, 64, 128);
        var bits0 = Vector256.Create((int)keep) & bit;
        var bits1 = Vector256.Create((int)(keep >> 8)) & bit;
        var live0 = (Vector256.GreaterThanOrEqual(lane, vlo) & Vector256.LessThan(lane, vhi) & Vector256.Equals(bits0, bit)).AsSingle();
        lane += Vector256.Create(8);
        var live1 = (Vector256.GreaterThanOrEqual(lane, vlo) & Vector256.LessThan(lane, vhi) & Vector256.Equals(bits1, bit)).AsSingle();
        var x0 = Vector256.Load(p);
        var x1 = Vector256.Load(p + 8);
        if (kmul != null)
        {
            x0 *= Vector256.Load(kmul);
            x1 *= Vector256.Load(kmul + 8);
        }
        var ninf = Vector256.Create(float.NegativeInfinity);
        x0 = Vector256.ConditionalSelect(live0, x0, ninf);
        x1 = Vector256.ConditionalSelect(live1, x1, ninf);
        var mx = Avx.Max(x0, x1);                                              // raw vmaxps: a NaN lane's exp is NaN anyway
        var m4 = Sse.Max(mx.GetLower(), mx.GetUpper());
        m4 = Sse.Max(m4, Sse.Shuffle(m4, m4, 0x4E));
        m4 = Sse.Max(m4, Sse.Shuffle(m4, m4, 0xB1));
        float tmax = m4.ToScalar();
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
        var mv = Vector256.Create(SoftmaxExp.Shift(m));
        var e0 = SoftmaxExp.Exp(x0 - mv);
        var e1 = SoftmaxExp.Exp(x1 - mv);
        var s = e0 + e1;
        l += Vector128.Sum(s.GetLower() + s.GetUpper());
        (e0 * Vector256.Load(vmul)).Store(p);
        (e1 * Vector256.Load(vmul + 8)).Store(p + 8);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate4<TL>(float** acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        float* a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        float* p0 = p; // query j's probabilities at p0 + j·Tile
        for (int i = 0; i < half; i += 8)
        {
            int j = half + i;
            var x0 = Vector256.Load(a0 + i);
            var x1 = Vector256.Load(a1 + i);
            var x2 = Vector256.Load(a2 + i);
            var x3 = Vector256.Load(a3 + i);
            var y0 = Vector256.Load(a0 + j);
            var y1 = Vector256.Load(a1 + j);
            var y2 = Vector256.Load(a2 + j);
            var y3 = Vector256.Load(a3 + j);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1); // spread over the first pass, one row per token
                TL.Load2(rows[t], i, half, TL.UsesZero ? Vector256.Create(zero[t]) : default, out var va, out var vb);
                float* pt = p0 + t; // the four queries' probabilities at constant offsets from one pointer
                Fma2(Vector256.Create(pt[0]), va, vb, ref x0, ref y0);
                Fma2(Vector256.Create(pt[Tile]), va, vb, ref x1, ref y1);
                Fma2(Vector256.Create(pt[2 * Tile]), va, vb, ref x2, ref y2);
                Fma2(Vector256.Create(pt[3 * Tile]), va, vb, ref x3, ref y3);
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
        for (int i = 0; i < half; i += 8)
        {
            var x = Vector256.Load(acc + i);
            var y = Vector256.Load(acc + half + i);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1);
                TL.Load2(rows[t], i, half, TL.UsesZero ? Vector256.Create(zero[t]) : default, out var va, out var vb);
                Fma2(Vector256.Create(p[t]), va, vb, ref x, ref y);
            }
            x.Store(acc + i);
            y.Store(acc + half + i);
        }
    }

    /// <summary>Four vectors x, y, z, w → one whose 128-bit block b is [Σ x_b, Σ y_b, Σ z_b, Σ w_b] (sums within block b).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Reduce4(Vector256<float> x, Vector256<float> y, Vector256<float> z, Vector256<float> w)
    {
        var xy = Avx.UnpackLow(x, y) + Avx.UnpackHigh(x, y);         // [x0+x2, y0+y2, x1+x3, y1+y3] per block
        var zw = Avx.UnpackLow(z, w) + Avx.UnpackHigh(z, w);
        return Avx.Shuffle(xy, zw, 0x44) + Avx.Shuffle(xy, zw, 0xEE); // [x, y, z, w] per block
    }

    /// <summary>Two <see cref="Reduce4"/> results → lanes [4g + j] = block 0 + block 1 of c_g[j] (<c>vperm2f128</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Reduce8(Vector256<float> c0, Vector256<float> c1) =>
        Avx.Permute2x128(c0, c1, 0x20) + Avx.Permute2x128(c0, c1, 0x31);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* acc, float f, int n)
    {
        var fv = Vector256.Create(f);
        for (int i = 0; i < n; i += 8) (Vector256.Load(acc + i) * fv).Store(acc + i);
    }

    /// <summary>The 128-bit version (<see cref="Tile128.QuantizeQuery"/>), bit-identical to
    /// <see cref="QueryQuantization.Quantize"/>: it runs once per query row and work item, so one portable implementation
    /// serves both widths (a 256-bit copy measured alike).</summary>
    /// <returns>The scale.</returns>
    public static float QuantizeQuery(float* q, int d, sbyte* codes, short* codes16, float* dequantized, out int sum) =>
        Tile128.QuantizeQuery(q, d, codes, codes16, dequantized, out sum);
}
