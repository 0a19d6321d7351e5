using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Attention;

/// <summary>
/// AVX-512 logits and softmax of a prefill-type tile with the queries in the vector lanes: a GEMM micro-kernel over head_dim
/// instead of 4 × 4 blocks of dot products, and a softmax of vertical operations instead of per-query reductions.
/// </summary>
/// <remarks>
/// <para><b>Logits.</b> An item's queries (≥ 16, one kv head) are transposed once to <c>qt[dim][query]</c> (zero-padded to a
/// multiple of 16). Per tile, the K rows already widened to fp32 (<see cref="IAttentionTile.WidenRows{TL}"/>) are read one
/// element at a time as broadcasts: 32 queries × 8 tokens keep 16 accumulators, and each step over head_dim is 2 query
/// loads, 8 broadcasts and 16 FMAs, with no horizontal reduction (the 4 × 4 blocks spend a 45-instruction transpose-and-add
/// tree per 16 dot products). The result is a [token][query] tile.</para>
/// <para><b>Softmax.</b> On that tile, 16 queries per vector: × the token's K multiplier, the mask from each query's key range
/// (a compare of its row's bounds with the key index, and its row's custom-mask bit), the tile maximum by <c>vmaxps</c> down the 16 tokens, the running
/// maximum and sum as vectors, <c>e^(x − max)</c>, the sum down the tokens, × the token's V multiplier; then the
/// probabilities are transposed in 16 × 16 blocks into the per-query rows of 16 tokens that the output pass reads. The rules
/// are those of <see cref="Tile512.Softmax"/> lane by lane: masked lanes and lanes outside the tile's live tokens are −∞
/// (weight 0), the accumulator of a query is rescaled (by <see cref="SoftmaxExp.Weight"/>) only when its maximum grows and
/// its sum is positive, the shift is 0 while the maximum is −∞, and NaN or +∞ logits make the sum NaN.</para>
/// <para>Each logit is a sequential fp32 sum over head_dim (within the kernels' stated bound of <c>1.01·d·2⁻²⁴</c> relative
/// to <c>Σ|q·k|</c>), and each sum a sequential sum over the tile's tokens. Tokens outside the tile's live range read stale
/// scratch rows; the softmax replaces their lanes. Soft-capped logits use the other kernels.</para>
/// </remarks>
internal static unsafe class QueryLanes
{
    private const int Tile = PagedAttentionKernel.Tile;
    private const int AttentionPlanMaxQ = Kernels.Attention.Planning.AttentionPlan.MaxQueriesPerItem;

    /// <summary>True when the hardware has the 512-bit instructions used here.</summary>
    public static bool IsSupported => Avx512F.IsSupported;

    /// <summary>Sets up an item: queries <c>[n][d]</c> (row i at <c>qs + i·d</c>, room for <paramref name="padded"/> rows, the
    /// ones past n set to zero here) → <c>qt[j][i]</c> by 16 × 16 transposes, and each query lane's key range (that of its
    /// row <c>i / groupHeads</c>; padding lanes get an empty range).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Prepare(float* qs, int n, int d, float* qt, int padded, int* rowLo, int* rowHi, int groupHeads, int* laneLo, int* laneHi)
    {
        new Span<float>(qs + (long)n * d, (padded - n) * d).Clear();
        for (int i = 0; i < padded; i += 16)
            for (int j = 0; j < d; j += 16) Transpose16(qs + (long)i * d + j, d, qt + (long)j * padded + i, padded);
        for (int i = 0; i < padded; i++)
        {
            laneLo[i] = i < n ? rowLo[i / groupHeads] : int.MaxValue;
            laneHi[i] = i < n ? rowHi[i / groupHeads] : int.MinValue;
        }
    }

    /// <summary>Logits of <paramref name="padded"/> queries (a multiple of 16) with the 16 fp32 rows at <paramref name="k"/>
    /// (row t at <c>k + t·d</c>), written as the tile <c>s[t·padded + i]</c>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Logits(float* qt, int padded, float* k, int d, int tl, int th, float* s)
    {
        int t1 = th > 8 ? Tile : 8; // token halves with a live token
        int t0Start = tl >= 8 ? 8 : 0;
        int j = 0;
        for (; j + 32 <= padded; j += 32)
            for (int t0 = t0Start; t0 < t1; t0 += 8) Block32x8(qt + j, padded, k + t0 * d, d, s + t0 * padded + j);
        for (; j < padded; j += 16)
            for (int t0 = t0Start; t0 < t1; t0 += 8) Block16x8(qt + j, padded, k + t0 * d, d, s + t0 * padded + j);
    }

    /// <summary>The online softmax of the item's queries over the tile of logits <c>c.LaneLogits</c> (keys <paramref name="k0"/>…,
    /// live tokens [tl, th)); leaves the probabilities × the V multipliers in the per-query rows <c>c.P + i·16</c>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Softmax(ref TileItem c, int k0, int tl, int th, int d)
    {
        int padded = c.QueriesPadded;
        float* s = c.LaneLogits, kmul = c.KMul, vmul = c.VMul;
        var ninf = Vector512.Create(float.NegativeInfinity);
        // Custom mask: each lane's row's 16 bits for the tile (bit t: token t), once per row; all set without a mask.
        int* laneKeep = stackalloc int[AttentionPlanMaxQ];
        if (c.MaskRow != null)
        {
            for (int r = 0, i = 0; r < c.QueryRows; r++)
            {
                int bits = (int)PagedAttentionTiled<Tile512>.KeepBits(ref c, r, k0);
                for (int h = 0; h < c.GroupHeads; h++) laneKeep[i++] = bits;
            }
            new Span<int>(laneKeep + c.Queries, padded - c.Queries).Clear();
        }
        for (int j = 0; j < padded; j += 16)
        {
            var lo = Vector512.Load(c.LaneLo + j);
            var hi = Vector512.Load(c.LaneHi + j);
            var keep = c.MaskRow != null ? Vector512.Load(laneKeep + j) : Vector512.Create(0xFFFF);
            var tmax = ninf;
            for (int t = tl; t < th; t++)
            {
                var key = Vector512.Create(k0 + t);
                var kept = Vector512.Equals(Vector512.ShiftRightLogical(keep, t) & Vector512<int>.One, Vector512<int>.One);
                var live = (Vector512.GreaterThanOrEqual(key, lo) & Vector512.LessThan(key, hi) & kept).AsSingle();
                var x = Vector512.ConditionalSelect(live, Vector512.Load(s + t * padded + j) * Vector512.Create(kmul[t]), ninf);
                x.Store(s + t * padded + j);
                tmax = Avx512F.Max(tmax, x); // vmaxps keeps x when it is NaN; a NaN may drop later, as in Tile512.Softmax
            }
            var m = Vector512.Load(c.M + j);
            var grown = Vector512.GreaterThan(tmax, m);
            if (grown != Vector512<float>.Zero)
            {
                // Rare once the maxima settle: per query, as Tile512.Softmax does it.
                uint bits = (uint)grown.ExtractMostSignificantBits();
                while (bits != 0)
                {
                    int b = System.Numerics.BitOperations.TrailingZeroCount(bits);
                    bits &= bits - 1;
                    int i = j + b;
                    float newMax = tmax.GetElement(b);
                    if (c.L[i] > 0)
                    {
                        float f = SoftmaxExp.Weight(c.M[i] - newMax);
                        Tile512.Scale(c.Acc[i], f, d);
                        c.L[i] *= f;
                    }
                    c.M[i] = newMax;
                }
                m = Vector512.Load(c.M + j);
            }
            var shift = Vector512.ConditionalSelect(Vector512.Equals(m, ninf), Vector512<float>.Zero, m); // SoftmaxExp.Shift
            var sum = Vector512<float>.Zero;
            for (int t = 0; t < Tile; t++)
            {
                float* row = s + t * padded + j;
                if (t < tl || t >= th)
                {
                    Vector512<float>.Zero.Store(row);
                    continue;
                }
                var e = SoftmaxExp.Exp(Vector512.Load(row) - shift); // e^(−∞) = 0 for masked lanes
                sum += e;
                (e * Vector512.Create(vmul[t])).Store(row);
            }
            (Vector512.Load(c.L + j) + sum).Store(c.L + j);
        }
        for (int j = 0; j < padded; j += 16) Transpose16(s + j, padded, c.P + j * Tile, Tile);
    }

    /// <summary>32 queries (two lane vectors) × 8 tokens over head_dim, stored as <c>s[t·padded + 0..32)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Block32x8(float* qt, int padded, float* k, int d, float* s)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default, b7 = default;
        float* k0 = k, k1 = k + d, k2 = k + 2 * d, k3 = k + 3 * d, k4 = k + 4 * d, k5 = k + 5 * d, k6 = k + 6 * d, k7 = k + 7 * d;
        float* q = qt;
        for (int j = 0; j < d; j++, q += padded)
        {
            var x = Vector512.Load(q);
            var y = Vector512.Load(q + 16);
            var c = Vector512.Create(k0[j]);
            a0 = Avx512F.FusedMultiplyAdd(x, c, a0);
            b0 = Avx512F.FusedMultiplyAdd(y, c, b0);
            c = Vector512.Create(k1[j]);
            a1 = Avx512F.FusedMultiplyAdd(x, c, a1);
            b1 = Avx512F.FusedMultiplyAdd(y, c, b1);
            c = Vector512.Create(k2[j]);
            a2 = Avx512F.FusedMultiplyAdd(x, c, a2);
            b2 = Avx512F.FusedMultiplyAdd(y, c, b2);
            c = Vector512.Create(k3[j]);
            a3 = Avx512F.FusedMultiplyAdd(x, c, a3);
            b3 = Avx512F.FusedMultiplyAdd(y, c, b3);
            c = Vector512.Create(k4[j]);
            a4 = Avx512F.FusedMultiplyAdd(x, c, a4);
            b4 = Avx512F.FusedMultiplyAdd(y, c, b4);
            c = Vector512.Create(k5[j]);
            a5 = Avx512F.FusedMultiplyAdd(x, c, a5);
            b5 = Avx512F.FusedMultiplyAdd(y, c, b5);
            c = Vector512.Create(k6[j]);
            a6 = Avx512F.FusedMultiplyAdd(x, c, a6);
            b6 = Avx512F.FusedMultiplyAdd(y, c, b6);
            c = Vector512.Create(k7[j]);
            a7 = Avx512F.FusedMultiplyAdd(x, c, a7);
            b7 = Avx512F.FusedMultiplyAdd(y, c, b7);
        }
        a0.Store(s); b0.Store(s + 16);
        a1.Store(s + padded); b1.Store(s + padded + 16);
        a2.Store(s + 2 * padded); b2.Store(s + 2 * padded + 16);
        a3.Store(s + 3 * padded); b3.Store(s + 3 * padded + 16);
        a4.Store(s + 4 * padded); b4.Store(s + 4 * padded + 16);
        a5.Store(s + 5 * padded); b5.Store(s + 5 * padded + 16);
        a6.Store(s + 6 * padded); b6.Store(s + 6 * padded + 16);
        a7.Store(s + 7 * padded); b7.Store(s + 7 * padded + 16);
    }

    /// <summary>16 queries × 8 tokens: the remainder when the padded query count is an odd multiple of 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Block16x8(float* qt, int padded, float* k, int d, float* s)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        float* q = qt;
        for (int j = 0; j < d; j++, q += padded)
        {
            var x = Vector512.Load(q);
            a0 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[j]), a0);
            a1 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[d + j]), a1);
            a2 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[2 * d + j]), a2);
            a3 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[3 * d + j]), a3);
            a4 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[4 * d + j]), a4);
            a5 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[5 * d + j]), a5);
            a6 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[6 * d + j]), a6);
            a7 = Avx512F.FusedMultiplyAdd(x, Vector512.Create(k[7 * d + j]), a7);
        }
        a0.Store(s);
        a1.Store(s + padded);
        a2.Store(s + 2 * padded);
        a3.Store(s + 3 * padded);
        a4.Store(s + 4 * padded);
        a5.Store(s + 5 * padded);
        a6.Store(s + 6 * padded);
        a7.Store(s + 7 * padded);
    }

    /// <summary>The 16 × 16 block at <paramref name="src"/> (row r at <c>src + r·stride</c>) transposed into the rows
    /// <c>dst + c·dstStride</c>: <c>vunpck{l,h}ps</c>, <c>vunpck{l,h}pd</c>, then two rounds of <c>vshuff32x4</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose16(float* src, int stride, float* dst, int dstStride)
    {
        var r0 = Vector512.Load(src);
        var r1 = Vector512.Load(src + stride);
        var r2 = Vector512.Load(src + 2 * stride);
        var r3 = Vector512.Load(src + 3 * stride);
        var r4 = Vector512.Load(src + 4 * stride);
        var r5 = Vector512.Load(src + 5 * stride);
        var r6 = Vector512.Load(src + 6 * stride);
        var r7 = Vector512.Load(src + 7 * stride);
        var r8 = Vector512.Load(src + 8 * stride);
        var r9 = Vector512.Load(src + 9 * stride);
        var r10 = Vector512.Load(src + 10 * stride);
        var r11 = Vector512.Load(src + 11 * stride);
        var r12 = Vector512.Load(src + 12 * stride);
        var r13 = Vector512.Load(src + 13 * stride);
        var r14 = Vector512.Load(src + 14 * stride);
        var r15 = Vector512.Load(src + 15 * stride);
        // Rows a..p. Round 1: per 128-bit lane, (a0 b0 a1 b1), (a2 b2 a3 b3), … for row pairs.
        var t0 = Avx512F.UnpackLow(r0, r1); var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3); var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5); var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7); var t7 = Avx512F.UnpackHigh(r6, r7);
        var t8 = Avx512F.UnpackLow(r8, r9); var t9 = Avx512F.UnpackHigh(r8, r9);
        var t10 = Avx512F.UnpackLow(r10, r11); var t11 = Avx512F.UnpackHigh(r10, r11);
        var t12 = Avx512F.UnpackLow(r12, r13); var t13 = Avx512F.UnpackHigh(r12, r13);
        var t14 = Avx512F.UnpackLow(r14, r15); var t15 = Avx512F.UnpackHigh(r14, r15);
        // Round 2: (a0 b0 c0 d0) per lane: column c of four rows in 128-bit lane c / 4.
        r0 = Lo(t0, t2); r1 = Hi(t0, t2); r2 = Lo(t1, t3); r3 = Hi(t1, t3);
        r4 = Lo(t4, t6); r5 = Hi(t4, t6); r6 = Lo(t5, t7); r7 = Hi(t5, t7);
        r8 = Lo(t8, t10); r9 = Hi(t8, t10); r10 = Lo(t9, t11); r11 = Hi(t9, t11);
        r12 = Lo(t12, t14); r13 = Hi(t12, t14); r14 = Lo(t13, t15); r15 = Hi(t13, t15);
        // Rounds 3 and 4: gather the four 128-bit pieces of each column.
        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88); t1 = Avx512F.Shuffle4x128(r1, r5, 0x88);
        t2 = Avx512F.Shuffle4x128(r2, r6, 0x88); t3 = Avx512F.Shuffle4x128(r3, r7, 0x88);
        t4 = Avx512F.Shuffle4x128(r0, r4, 0xDD); t5 = Avx512F.Shuffle4x128(r1, r5, 0xDD);
        t6 = Avx512F.Shuffle4x128(r2, r6, 0xDD); t7 = Avx512F.Shuffle4x128(r3, r7, 0xDD);
        t8 = Avx512F.Shuffle4x128(r8, r12, 0x88); t9 = Avx512F.Shuffle4x128(r9, r13, 0x88);
        t10 = Avx512F.Shuffle4x128(r10, r14, 0x88); t11 = Avx512F.Shuffle4x128(r11, r15, 0x88);
        t12 = Avx512F.Shuffle4x128(r8, r12, 0xDD); t13 = Avx512F.Shuffle4x128(r9, r13, 0xDD);
        t14 = Avx512F.Shuffle4x128(r10, r14, 0xDD); t15 = Avx512F.Shuffle4x128(r11, r15, 0xDD);
        Avx512F.Shuffle4x128(t0, t8, 0x88).Store(dst);
        Avx512F.Shuffle4x128(t1, t9, 0x88).Store(dst + dstStride);
        Avx512F.Shuffle4x128(t2, t10, 0x88).Store(dst + 2 * dstStride);
        Avx512F.Shuffle4x128(t3, t11, 0x88).Store(dst + 3 * dstStride);
        Avx512F.Shuffle4x128(t4, t12, 0x88).Store(dst + 4 * dstStride);
        Avx512F.Shuffle4x128(t5, t13, 0x88).Store(dst + 5 * dstStride);
        Avx512F.Shuffle4x128(t6, t14, 0x88).Store(dst + 6 * dstStride);
        Avx512F.Shuffle4x128(t7, t15, 0x88).Store(dst + 7 * dstStride);
        Avx512F.Shuffle4x128(t0, t8, 0xDD).Store(dst + 8 * dstStride);
        Avx512F.Shuffle4x128(t1, t9, 0xDD).Store(dst + 9 * dstStride);
        Avx512F.Shuffle4x128(t2, t10, 0xDD).Store(dst + 10 * dstStride);
        Avx512F.Shuffle4x128(t3, t11, 0xDD).Store(dst + 11 * dstStride);
        Avx512F.Shuffle4x128(t4, t12, 0xDD).Store(dst + 12 * dstStride);
        Avx512F.Shuffle4x128(t5, t13, 0xDD).Store(dst + 13 * dstStride);
        Avx512F.Shuffle4x128(t6, t14, 0xDD).Store(dst + 14 * dstStride);
        Avx512F.Shuffle4x128(t7, t15, 0xDD).Store(dst + 15 * dstStride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Lo(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackLow(a.AsDouble(), b.AsDouble()).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Hi(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackHigh(a.AsDouble(), b.AsDouble()).AsSingle();
}
