using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Attention.Masks;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;

namespace Kernels.Cpu.Attention;

/// <summary>
/// The AVX-512 attention kernel: the work item of <see cref="PagedAttentionKernel"/> with K and V widened in registers, logits
/// of 16 tokens produced as one vector per query, and per-token dequantization folded into logits and probabilities.
/// </summary>
/// <remarks>
/// <para><b>Logits.</b> Per kv head and 16-token tile, a block of four queries × four tokens keeps 16 fp32 partial-sum registers
/// over head_dim (each K chunk is loaded and widened once for the four queries, each query chunk once for the four tokens);
/// a transpose-and-add tree (<c>vunpck{l,h}ps</c>, <c>vshufps</c>, <c>vshuff32x4</c>: 45 instructions for 16 dot products)
/// leaves the block's 16 sums in one register, and four blocks are transposed into one 16-token logit vector per query.
/// Query heads that do not fill a block of four (group size not a multiple of 4) take one query × 16 tokens.</para>
/// <para><b>Softmax.</b> Per query and tile, in registers: scale (sm_scale times the tile's per-token K scales), soft cap,
/// mask (page end, causal/window range), running max, <c>e^(x − max)</c>, running sum; the accumulator is rescaled only when
/// the maximum grows.</para>
/// <para><b>Output.</b> Four queries × 32 dims of accumulator stay in registers across the tile; each V chunk is widened once
/// and multiplied by the broadcast probability (folded with the token's V scale).</para>
/// <para><b>Folding.</b> int8/int4 rows are read as integer codes (<c>q − z</c> for int4, exact since zero points are
/// integers) and their scales multiply the logits and probabilities instead of every element. fp16 rows are read by a
/// 3-instruction shift that yields <c>h·2⁻¹¹²</c> exactly, so queries are pre-scaled by 2¹¹² (items whose queries reach
/// 2¹⁵ take the generic kernel) and probabilities by 2¹¹²; all these factors are powers of two or one multiply per token, so
/// products are the same as with widened rows up to rounding. Pages flagged as holding fp16 Inf/NaN
/// (<c>PagedKvCache.NonFinitePageArray</c>) are read with the Inf/NaN-aware loader.</para>
/// <para>Only live tokens are read: rows outside every query's key range are replaced by a zero row, and the V pass visits
/// the live range only. Results are deterministic for a given plan; they differ from the other ISA paths by rounding.</para>
/// </remarks>
internal static unsafe class PagedAttention512
{
    private const int Tile = PagedAttentionKernel.Tile;
    private const int MaxQ = AttentionPlan.MaxQueriesPerItem;
    private const int MaxD = AttentionLaunch.MaxHeadDim;

    // Per-thread scratch, in floats: pre-scaled queries [MaxQ][MaxD]; logits, then probabilities [MaxQ][Tile]; running max and
    // sum [MaxQ]; per kv head of the item and tile token: K multiplier, V multiplier, K zero, V zero [MaxQ][Tile] each; a zero row.
    private const int QsOffset = 0;
    private const int POffset = QsOffset + MaxQ * MaxD;
    private const int MOffset = POffset + MaxQ * Tile;
    private const int LOffset = MOffset + MaxQ;
    private const int KMulOffset = LOffset + MaxQ;
    private const int VMulOffset = KMulOffset + MaxQ * Tile;
    private const int KZeroOffset = VMulOffset + MaxQ * Tile;
    private const int VZeroOffset = KZeroOffset + MaxQ * Tile;
    private const int ZeroRowOffset = VZeroOffset + MaxQ * Tile;
    // QuantizedQueryDot: int8 codes [MaxQ][MaxD], the codes widened to int16 [MaxQ][MaxD], scale and code sum [MaxQ].
    private const int QCodesOffset = ZeroRowOffset + MaxD;
    private const int Q16Offset = QCodesOffset + MaxQ * MaxD / 4;
    private const int QScaleOffset = Q16Offset + MaxQ * MaxD / 2;
    private const int QSumOffset = QScaleOffset + MaxQ;
    private const int ScratchFloats = QSumOffset + MaxQ;

    private const int PrefetchPages = 1;                      // software prefetch distance, in pages of the item's list (1–8 measured)
    private const float TwoPow112 = 5.192296858534828E+33f; // 2^112, exact
    private const float F16QueryLimit = 32768f;               // |q|·2^112 must stay finite: |q| < 2^15

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>Runs work item <paramref name="index"/>; returns false (having written nothing) when the item needs the generic
    /// kernel: fp16 caches with a query element of magnitude ≥ 2¹⁵ or a non-finite query element.</summary>
    public static bool TryRun(ref PagedAttentionKernel.State s, int index)
    {
        switch (s.DType)
        {
            case DType.F32: Run<KvF32, KvF32>(ref s, index, 1f); return true;
            case DType.BF16: Run<KvBf16, KvBf16>(ref s, index, 1f); return true;
            case DType.I8: Run<KvI8, KvI8>(ref s, index, 1f); return true;
            case DType.I4: Run<KvI4, KvI4>(ref s, index, 1f); return true;
            default:
                if (!QueriesBelow(ref s, s.Items[index], F16QueryLimit)) return false;
                Run<KvF16, KvF16Special>(ref s, index, TwoPow112);
                return true;
        }
    }

    /// <summary>True when every query element of the item is finite with magnitude below <paramref name="limit"/>.</summary>
    private static bool QueriesBelow(ref PagedAttentionKernel.State s, AttentionWorkItem it, float limit)
    {
        int d = s.HeadDim;
        var lim = Vector512.Create(limit);
        var bad = Vector512<float>.Zero;
        for (int r = 0; r < it.QueryRows; r++)
            for (int kk = 0; kk < it.KvHeads; kk++)
            {
                int head = (it.KvHead + kk) * s.Group + it.GroupHead;
                float* q = s.Q + ((long)(it.QueryRow + r) * s.QoHeads + head) * d;
                for (int i = 0; i < it.GroupHeads * d; i += 16)
                    bad |= ~Vector512.LessThan(Vector512.Abs(Vector512.Load(q + i)), lim); // NaN compares false: bad
            }
        return bad == Vector512<float>.Zero;
    }

    /// <summary>The per-item state the tile passes share.</summary>
    private ref struct Item
    {
        public float* Qs, P, M, L, KMul, VMul, ZeroRow, QScale;
        public sbyte* QCodes;
        public short* Q16;
        public int* QSum;
        public bool IntDot;
        public int* KZero, VZero;
        public float** Acc;
        public int* Lo, Hi;
        public int QueryRows, KvHeads, GroupHeads, PerRow, Queries, KvHead, MinLo, MaxHi;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TL, TLSpecial>(ref PagedAttentionKernel.State s, int index, float qMul)
        where TL : unmanaged, IKvRow512 where TLSpecial : unmanaged, IKvRow512
    {
        AttentionWorkItem it = s.Items[index];
        int d = s.HeadDim;
        var a = t_scratch ??= GC.AllocateArray<float>(ScratchFloats, pinned: true);
        float* scratch = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a));
        float** acc = stackalloc float*[MaxQ];
        int* lo = stackalloc int[MaxQ];
        int* hi = stackalloc int[MaxQ];
        var c = new Item
        {
            Qs = scratch + QsOffset, P = scratch + POffset, M = scratch + MOffset, L = scratch + LOffset,
            QCodes = (sbyte*)(scratch + QCodesOffset), Q16 = (short*)(scratch + Q16Offset), QScale = scratch + QScaleOffset,
            QSum = (int*)(scratch + QSumOffset),
            IntDot = s.QuantizedQ && (s.DType == DType.I8 || s.HeadDim % 128 == 0),
            KMul = scratch + KMulOffset, VMul = scratch + VMulOffset, KZero = (int*)(scratch + KZeroOffset),
            VZero = (int*)(scratch + VZeroOffset), ZeroRow = scratch + ZeroRowOffset, Acc = acc, Lo = lo, Hi = hi,
            QueryRows = it.QueryRows, KvHeads = it.KvHeads, GroupHeads = it.GroupHeads, PerRow = it.KvHeads * it.GroupHeads,
            KvHead = it.KvHead, MinLo = int.MaxValue, MaxHi = int.MinValue,
        };
        c.Queries = c.QueryRows * c.PerRow;
        new Span<float>(c.ZeroRow, MaxD).Clear();

        // Query i = (r·KvHeads + kk)·GroupHeads + hh, as in the generic kernel.
        var qm = Vector512.Create(qMul);
        for (int r = 0; r < it.QueryRows; r++)
        {
            var (klo, khi) = AttentionMask.KeyRange(it.MaskQuery + r, it.MaskQoLen, it.MaskKvLen, s.Causal, s.WindowLeft);
            lo[r] = klo;
            hi[r] = khi;
            if (klo < khi)
            {
                c.MinLo = Math.Min(c.MinLo, klo);
                c.MaxHi = Math.Max(c.MaxHi, khi);
            }
            for (int kk = 0; kk < it.KvHeads; kk++)
                for (int hh = 0; hh < it.GroupHeads; hh++)
                {
                    int i = r * c.PerRow + kk * it.GroupHeads + hh;
                    int head = (it.KvHead + kk) * s.Group + it.GroupHead + hh;
                    long qRow = (long)(it.QueryRow + r) * s.QoHeads + head;
                    float* q = s.Q + qRow * d, qs = c.Qs + i * d;
                    if (s.QuantizedQ)
                    {
                        // int8 queries (QuantizedQueryDot): codes for the integer dot products, code·s for the float ones.
                        c.QScale[i] = QuantizeQuery(q, d, c.QCodes + i * d, c.Q16 + i * d, qs, out c.QSum[i]);
                    }
                    else
                    {
                        for (int j = 0; j < d; j += 16) (Vector512.Load(q + j) * qm).Store(qs + j); // exact: a power of two
                    }
                    acc[i] = it.PartialSlot < 0 ? s.Out + qRow * d : s.Work + s.PartialOut + ((long)it.PartialSlot * s.QoHeads + head) * d;
                    new Span<float>(acc[i], d).Clear();
                    c.M[i] = float.NegativeInfinity;
                    c.L[i] = 0;
                }
        }

        for (int p = it.PageBegin; p < it.PageEnd; p++)
        {
            int tokens = s.PageTokens[p], key0 = s.PageKeyStart[p];
            if (key0 >= c.MaxHi || key0 + tokens <= c.MinLo) continue; // wholly masked: never touched
            int pageId = s.PageIds[p];
            long pageRow = pageId * s.PageStride + (long)it.KvHead * s.HeadStride;
            bool special = typeof(TL) != typeof(TLSpecial) && s.PageFlags[pageId] != 0;
            for (int t0 = 0; t0 < tokens; t0 += Tile)
            {
                int tn = Math.Min(Tile, tokens - t0);
                // On a page's last tile, prefetch the page PrefetchPages ahead (pages are scattered: hardware prefetchers cannot follow).
                long next = t0 + Tile >= tokens && p + PrefetchPages < it.PageEnd ? s.PageIds[p + PrefetchPages] * s.PageStride + (long)it.KvHead * s.HeadStride : -1;
                if (special) TileStep<TLSpecial>(ref s, ref c, pageRow, next, t0, tn, key0 + t0, qMul);
                else TileStep<TL>(ref s, ref c, pageRow, next, t0, tn, key0 + t0, qMul);
            }
        }

        for (int r = 0; r < it.QueryRows; r++)
            for (int kk = 0; kk < it.KvHeads; kk++)
                for (int hh = 0; hh < it.GroupHeads; hh++)
                {
                    int i = r * c.PerRow + kk * it.GroupHeads + hh;
                    int head = (it.KvHead + kk) * s.Group + it.GroupHead + hh;
                    float lse;
                    float l = c.L[i];
                    if (l > 0)
                    {
                        Scale(acc[i], 1f / l, d);
                        lse = c.M[i] + MathF.Log(l);
                    }
                    else
                    {
                        new Span<float>(acc[i], d).Clear();
                        lse = float.NegativeInfinity;
                    }
                    if (it.PartialSlot >= 0) s.Work[s.PartialLse + (long)it.PartialSlot * s.QoHeads + head] = lse;
                    else if (s.Lse != null) s.Lse[(long)(it.QueryRow + r) * s.QoHeads + head] = lse;
                }
    }

    /// <summary>One tile of up to 16 tokens starting at page token <paramref name="t0"/> (keys <paramref name="k0"/>…);
    /// <paramref name="nextPageRow"/> ≥ 0 is the first row of the next tile's page, to prefetch (−1: none).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileStep<TL>(ref PagedAttentionKernel.State s, ref Item c, long pageRow, long nextPageRow, int t0, int tn, int k0, float qMul)
        where TL : unmanaged, IKvRow512
    {
        // Live tokens [tl, th): inside the tile and inside some query's key range.
        int tl = Math.Max(c.MinLo - k0, 0), th = Math.Min(c.MaxHi - k0, tn);
        if (tl >= th) return;
        int d = s.HeadDim, half = d / 2, gh = c.GroupHeads;
        byte** rows = stackalloc byte*[Tile];
        bool rowScales = s.KScale != null && !s.PerHeadScale, i4 = s.DType == DType.I4;
        float smScale = s.SmScale;

        // 1. Logits, one vector of 16 tokens per query, into c.P (raw dot products).
        long tokenBytes = (long)s.TokenStride * s.RowBytes;
        for (int kk = 0; kk < c.KvHeads; kk++)
        {
            float* kmul = c.KMul + kk * Tile, vmul = c.VMul + kk * Tile;
            int* kz = c.KZero + kk * Tile, vz = c.VZero + kk * Tile;
            long r0 = pageRow + (long)t0 * s.TokenStride + (long)kk * s.HeadStride; // row index of tile token 0
            SetRows(rows, s.K + r0 * s.RowBytes, tokenBytes, (byte*)c.ZeroRow, tl, th);
            var pfK = new PagePrefetch(nextPageRow >= 0 ? s.K + (nextPageRow + (long)kk * s.HeadStride) * s.RowBytes : null, tokenBytes, s.RowBytes);
            if (rowScales)
            {
                // Per-token scales (and int4 zero points); scalar loads: vgatherdps measured slower on this core.
                for (int t = tl; t < th; t++)
                {
                    long r = r0 + (long)t * s.TokenStride;
                    kmul[t] = smScale * s.KScale[r];
                    vmul[t] = s.VScale[r];
                    kz[t] = i4 ? (int)s.KZero[r] : 0;
                    vz[t] = i4 ? (int)s.VZero[r] : 0;
                }
                for (int t = 0; t < Tile; t++)
                {
                    if (t >= tl && t < th) continue;
                    kmul[t] = vmul[t] = 0f;
                    kz[t] = vz[t] = 0;
                }
            }
            else
            {
                // Per-head int8 scale, or fp16's 2^112 (probabilities × 2^112 against rows × 2^−112), or 1.
                float ks = s.PerHeadScale ? s.KScale[c.KvHead + kk] : 1f, vs = s.PerHeadScale ? s.VScale[c.KvHead + kk] : qMul;
                Vector512.Create(smScale * ks).Store(kmul);
                Vector512.Create(vs).Store(vmul);
                Vector512<int>.Zero.Store(kz);
                Vector512<int>.Zero.Store(vz);
            }
            for (int r = 0; r < c.QueryRows; r++)
            {
                int i = r * c.PerRow + kk * gh, ie = i + gh;
                if (k0 + tl >= c.Hi[r] || k0 + th <= c.Lo[r]) continue; // masked below
                if (c.IntDot)
                    for (; i + 4 <= ie; i += 4, pfK = default) Logits4Int<TL>(ref c, i, rows, kz, tl, th, d, half, pfK);
                for (; i + 4 <= ie; i += 4, pfK = default) Logits4<TL>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pfK);
                for (; i < ie; i++, pfK = default) Logits1<TL>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pfK);
            }
        }

        // 2. Online softmax per query; c.P becomes the probabilities times the token's V factor.
        var iota = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        var keys = Vector512.Create(k0) + iota;
        var negInf = Vector512.Create(float.NegativeInfinity);
        for (int r = 0; r < c.QueryRows; r++)
        {
            int klo = Math.Max(c.Lo[r], k0 + tl), khi = Math.Min(c.Hi[r], k0 + th);
            if (klo >= khi)
            {
                for (int j = 0; j < c.PerRow; j++) Vector512<float>.Zero.Store(c.P + (r * c.PerRow + j) * Tile);
                continue;
            }
            var live = (Vector512.GreaterThanOrEqual(keys, Vector512.Create(klo)) & Vector512.LessThan(keys, Vector512.Create(khi))).AsSingle();
            if (s.SoftCap > 0) SoftCapRow(ref c, r, s.SoftCap); // logits scaled and capped in place (rare: kept out of the loop below)
            for (int kk = 0; kk < c.KvHeads; kk++)
            {
                var kmul = s.SoftCap > 0 ? Vector512<float>.One : Vector512.Load(c.KMul + kk * Tile);
                var vmul = Vector512.Load(c.VMul + kk * Tile);
                for (int i = r * c.PerRow + kk * gh, ie = i + gh; i < ie; i++)
                {
                    float* pi = c.P + i * Tile;
                    var x = Vector512.ConditionalSelect(live, Vector512.Load(pi) * kmul, negInf);
                    float tmax = MaxAcross(x), m = c.M[i];
                    if (tmax > m)
                    {
                        if (c.L[i] > 0)
                        {
                            float f = MathF.Exp(m - tmax);
                            Scale(c.Acc[i], f, d);
                            c.L[i] *= f;
                        }
                        c.M[i] = m = tmax;
                    }
                    var e = SoftmaxExp.Exp(x - Vector512.Create(m)); // e^(−∞) = 0 for masked lanes
                    c.L[i] += SumAcross(e);
                    (e * vmul).Store(pi);
                }
            }
        }

        // 3. acc += Σ_t p_t·v_t over the live tokens.
        for (int kk = 0; kk < c.KvHeads; kk++)
        {
            SetRows(rows, s.V + (pageRow + (long)t0 * s.TokenStride + (long)kk * s.HeadStride) * s.RowBytes, tokenBytes, (byte*)c.ZeroRow, tl, th);
            var pfV = new PagePrefetch(nextPageRow >= 0 ? s.V + (nextPageRow + (long)kk * s.HeadStride) * s.RowBytes : null, tokenBytes, s.RowBytes);
            int* vz = c.VZero + kk * Tile;
            for (int r = 0; r < c.QueryRows; r++)
            {
                // This row's live tokens only: a masked token's V is never read (0·NaN would leak into the row).
                int rl = Math.Max(c.Lo[r] - k0, tl), rh = Math.Min(c.Hi[r] - k0, th);
                if (rl >= rh) continue;
                int i = r * c.PerRow + kk * gh, ie = i + gh;
                for (; i + 4 <= ie; i += 4)
                    Accumulate4<TL>(c.Acc + i, c.P + i * Tile, rows, vz, rl, rh, half, ref pfV);
                    pfV = default;
                for (; i < ie; i++)
                    Accumulate1<TL>(c.Acc[i], c.P + i * Tile, rows, vz, rl, rh, half, ref pfV);
                    pfV = default;
            }
        }
    }

    /// <summary>rows[t] = first + t·tokenBytes for live tokens [tl, th), else the zero row (two 8-lane 64-bit vectors).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SetRows(byte** rows, byte* first, long tokenBytes, byte* zeroRow, int tl, int th)
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
    /// four 16-token vectors at <paramref name="dst"/>. Token groups of four outside [tl, th) are skipped (their lanes are masked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Logits4<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow512
    {
        Vector512<float> r0 = default, r1 = default, r2 = default, r3 = default;
        for (int g = tl >> 2; g < 4 && 4 * g < th; g++)
        {
            pf.Rows(4 * g, 4);
            var block = Block4x4<TL>(q, rows + 4 * g, zero + 4 * g, d, half);
            switch (g)
            {
                case 0: r0 = block; break;
                case 1: r1 = block; break;
                case 2: r2 = block; break;
                default: r3 = block; break;
            }
        }
        // r_g lanes [4h + j] = query h, token 4g + j → query h's vector = 128-bit block h of r0..r3.
        var u0 = Avx512F.Shuffle4x128(r0, r1, 0x44);
        var u1 = Avx512F.Shuffle4x128(r0, r1, 0xEE);
        var u2 = Avx512F.Shuffle4x128(r2, r3, 0x44);
        var u3 = Avx512F.Shuffle4x128(r2, r3, 0xEE);
        Avx512F.Shuffle4x128(u0, u2, 0x88).Store(dst);
        Avx512F.Shuffle4x128(u0, u2, 0xDD).Store(dst + Tile);
        Avx512F.Shuffle4x128(u1, u3, 0x88).Store(dst + 2 * Tile);
        Avx512F.Shuffle4x128(u1, u3, 0xDD).Store(dst + 3 * Tile);
    }

    /// <summary>Four queries × four tokens: 16 register accumulators over head_dim, reduced to lanes <c>[4·query + token]</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector512<float> Block4x4<TL>(float* q, byte** rows, int* zero, int d, int half) where TL : unmanaged, IKvRow512
    {
        byte* k0 = rows[0], k1 = rows[1], k2 = rows[2], k3 = rows[3];
        var z0 = Vector512.Create(zero[0]);
        var z1 = Vector512.Create(zero[1]);
        var z2 = Vector512.Create(zero[2]);
        var z3 = Vector512.Create(zero[3]);
        float* q0 = q, q1 = q + d, q2 = q + 2 * d, q3 = q + 3 * d;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        for (int i = 0; i < half; i += 16)
        {
            TL.Load2(k0, i, half, z0, out var x0, out var w0);
            TL.Load2(k1, i, half, z1, out var x1, out var w1);
            TL.Load2(k2, i, half, z2, out var x2, out var w2);
            TL.Load2(k3, i, half, z3, out var x3, out var w3);
            Fma4(Vector512.Load(q0 + i), x0, x1, x2, x3, ref a00, ref a01, ref a02, ref a03);
            Fma4(Vector512.Load(q1 + i), x0, x1, x2, x3, ref a10, ref a11, ref a12, ref a13);
            Fma4(Vector512.Load(q2 + i), x0, x1, x2, x3, ref a20, ref a21, ref a22, ref a23);
            Fma4(Vector512.Load(q3 + i), x0, x1, x2, x3, ref a30, ref a31, ref a32, ref a33);
            Fma4(Vector512.Load(q0 + half + i), w0, w1, w2, w3, ref a00, ref a01, ref a02, ref a03);
            Fma4(Vector512.Load(q1 + half + i), w0, w1, w2, w3, ref a10, ref a11, ref a12, ref a13);
            Fma4(Vector512.Load(q2 + half + i), w0, w1, w2, w3, ref a20, ref a21, ref a22, ref a23);
            Fma4(Vector512.Load(q3 + half + i), w0, w1, w2, w3, ref a30, ref a31, ref a32, ref a33);
        }
        return Reduce16(
            Reduce4(a00, a01, a02, a03), Reduce4(a10, a11, a12, a13),
            Reduce4(a20, a21, a22, a23), Reduce4(a30, a31, a32, a33));
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
    private static void Logits1<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow512
    {
        Vector512<float> r0 = default, r1 = default, r2 = default, r3 = default;
        for (int g = tl >> 2; g < 4 && 4 * g < th; g++)
        {
            pf.Rows(4 * g, 4);
            byte* k0 = rows[4 * g], k1 = rows[4 * g + 1], k2 = rows[4 * g + 2], k3 = rows[4 * g + 3];
            var z0 = Vector512.Create(zero[4 * g]);
            var z1 = Vector512.Create(zero[4 * g + 1]);
            var z2 = Vector512.Create(zero[4 * g + 2]);
            var z3 = Vector512.Create(zero[4 * g + 3]);
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int i = 0; i < half; i += 16)
            {
                var y = Vector512.Load(q + i);
                var w = Vector512.Load(q + half + i);
                TL.Load2(k0, i, half, z0, out var x0, out var v0);
                a0 = Avx512F.FusedMultiplyAdd(w, v0, Avx512F.FusedMultiplyAdd(y, x0, a0));
                TL.Load2(k1, i, half, z1, out var x1, out var v1);
                a1 = Avx512F.FusedMultiplyAdd(w, v1, Avx512F.FusedMultiplyAdd(y, x1, a1));
                TL.Load2(k2, i, half, z2, out var x2, out var v2);
                a2 = Avx512F.FusedMultiplyAdd(w, v2, Avx512F.FusedMultiplyAdd(y, x2, a2));
                TL.Load2(k3, i, half, z3, out var x3, out var v3);
                a3 = Avx512F.FusedMultiplyAdd(w, v3, Avx512F.FusedMultiplyAdd(y, x3, a3));
            }
            var block = Reduce4(a0, a1, a2, a3); // 128-bit block b holds the four tokens' partial sums over lane block b
            switch (g)
            {
                case 0: r0 = block; break;
                case 1: r1 = block; break;
                case 2: r2 = block; break;
                default: r3 = block; break;
            }
        }
        Reduce16(r0, r1, r2, r3).Store(dst);
    }

    /// <summary><see cref="Logits4{TL}"/> for int8/int4 K with int8 queries (<c>QuantizedQueryDot</c>): exact int32 dot
    /// products <c>Σ code·(k − z) = Σ code·k − z·Σ code</c>, converted to fp32 (exact: |dot| &lt; 2²⁴) and multiplied by the
    /// query scale; the K scale and sm_scale follow in the softmax as for float queries.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Logits4Int<TL>(ref Item c, int i, byte** rows, int* zero, int tl, int th, int d, int half, PagePrefetch pf)
        where TL : unmanaged, IKvRow512
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
            switch (g)
            {
                case 0: r0 = block; break;
                case 1: r1 = block; break;
                case 2: r2 = block; break;
                default: r3 = block; break;
            }
        }
        float* dst = c.P + i * Tile;
        var u0 = Avx512F.Shuffle4x128(r0, r1, 0x44);
        var u1 = Avx512F.Shuffle4x128(r0, r1, 0xEE);
        var u2 = Avx512F.Shuffle4x128(r2, r3, 0x44);
        var u3 = Avx512F.Shuffle4x128(r2, r3, 0xEE);
        Avx512F.Shuffle4x128(u0, u2, 0x88).Store(dst);
        Avx512F.Shuffle4x128(u0, u2, 0xDD).Store(dst + Tile);
        Avx512F.Shuffle4x128(u1, u3, 0x88).Store(dst + 2 * Tile);
        Avx512F.Shuffle4x128(u1, u3, 0xDD).Store(dst + 3 * Tile);
    }

    /// <summary><see cref="QueryQuantization.Quantize"/> of one query row, vectorised and bit-identical to it (the same
    /// fp32 maximum, division and round-half-even), also writing the codes as int16, their sum and <c>code·s</c>.</summary>
    /// <returns>The scale.</returns>
    internal static float QuantizeQuery(float* q, int d, sbyte* codes, short* codes16, float* dequantized, out int sum)
    {
        var amax = Vector512<float>.Zero;
        for (int j = 0; j < d; j += 16) amax = Vector512.Max(amax, Vector512.Abs(Vector512.Load(q + j))); // IEEE max: NaN propagates
        float m = MaxAcross(amax);
        for (int j = 0; j < d && !float.IsNaN(m); j += 16)
            if (Vector512.IsNaN(Vector512.Load(q + j)) != Vector512<float>.Zero) m = float.NaN; // MaxAcross may drop a NaN lane
        if (!(m > 0) || float.IsPositiveInfinity(m))
        {
            float s0 = m == 0 ? 0f : float.NaN;
            for (int j = 0; j < d; j++)
            {
                codes[j] = 0;
                codes16[j] = 0;
                dequantized[j] = 0 * s0;
            }
            sum = 0;
            return s0;
        }
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
            var ql = Vector512.Load(q + i);
            var qh = Vector512.Load(q + half + i);
            a00 += Madd(l0, h0, ql, qh);
            a01 += Madd(l1, h1, ql, qh);
            a02 += Madd(l2, h2, ql, qh);
            a03 += Madd(l3, h3, ql, qh);
            ql = Vector512.Load(q + d + i);
            qh = Vector512.Load(q + d + half + i);
            a10 += Madd(l0, h0, ql, qh);
            a11 += Madd(l1, h1, ql, qh);
            a12 += Madd(l2, h2, ql, qh);
            a13 += Madd(l3, h3, ql, qh);
            ql = Vector512.Load(q + 2 * d + i);
            qh = Vector512.Load(q + 2 * d + half + i);
            a20 += Madd(l0, h0, ql, qh);
            a21 += Madd(l1, h1, ql, qh);
            a22 += Madd(l2, h2, ql, qh);
            a23 += Madd(l3, h3, ql, qh);
            ql = Vector512.Load(q + 3 * d + i);
            qh = Vector512.Load(q + 3 * d + half + i);
            a30 += Madd(l0, h0, ql, qh);
            a31 += Madd(l1, h1, ql, qh);
            a32 += Madd(l2, h2, ql, qh);
            a33 += Madd(l3, h3, ql, qh);
        }
        return Reduce16(
            Reduce4(a00.AsSingle(), a01.AsSingle(), a02.AsSingle(), a03.AsSingle(), true), Reduce4(a10.AsSingle(), a11.AsSingle(), a12.AsSingle(), a13.AsSingle(), true),
            Reduce4(a20.AsSingle(), a21.AsSingle(), a22.AsSingle(), a23.AsSingle(), true), Reduce4(a30.AsSingle(), a31.AsSingle(), a32.AsSingle(), a33.AsSingle(), true), true).AsInt32();
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
    private static void Accumulate4<TL>(float** acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow512
    {
        float* a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        float* p0 = p, p1 = p + Tile, p2 = p + 2 * Tile, p3 = p + 3 * Tile;
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
                var z = Vector512.Create(zero[t]);
                TL.Load2(rows[t], i, half, z, out var va, out var vc);
                TL.Load2(rows[t], i + 16, half, z, out var vb, out var vd);
                Fma4(Vector512.Create(p0[t]), va, vb, vc, vd, ref x0, ref y0, ref u0, ref w0);
                Fma4(Vector512.Create(p1[t]), va, vb, vc, vd, ref x1, ref y1, ref u1, ref w1);
                Fma4(Vector512.Create(p2[t]), va, vb, vc, vd, ref x2, ref y2, ref u2, ref w2);
                Fma4(Vector512.Create(p3[t]), va, vb, vc, vd, ref x3, ref y3, ref u3, ref w3);
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
                TL.Load2(rows[t], i, half, Vector512.Create(zero[t]), out var va, out var vb);
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
            y0.Store(a0 + half + i);
            y1.Store(a1 + half + i);
            y2.Store(a2 + half + i);
            y3.Store(a3 + half + i);
        }
    }

    /// <summary>acc[0..d) += Σ_t p[t]·v_t for one query.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate1<TL>(float* acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow512
    {
        for (int i = 0; i < half; i += 16)
        {
            var x = Vector512.Load(acc + i);
            var y = Vector512.Load(acc + half + i);
            for (int t = tl; t < th; t++)
            {
                if (i == 0) pf.Rows(t, 1); // spread over the first pass, one row per token
                TL.Load2(rows[t], i, half, Vector512.Create(zero[t]), out var va, out var vb);
                var b = Vector512.Create(p[t]);
                x = Avx512F.FusedMultiplyAdd(b, va, x);
                y = Avx512F.FusedMultiplyAdd(b, vb, y);
            }
            x.Store(acc + i);
            y.Store(acc + half + i);
        }
    }

    /// <summary>Row <paramref name="r"/>'s logits in place: times the K multiplier (sm_scale·scale), then <c>cap·tanh(x/cap)</c>
    /// lane by lane with <see cref="MathF.Tanh"/> (the generic kernel's arithmetic).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void SoftCapRow(ref Item c, int r, float cap)
    {
        for (int j = 0; j < c.PerRow; j++)
        {
            float* pi = c.P + (r * c.PerRow + j) * Tile, kmul = c.KMul + j / c.GroupHeads * Tile;
            for (int t = 0; t < Tile; t++) pi[t] = cap * MathF.Tanh(pi[t] * kmul[t] / cap);
        }
    }

    /// <summary>Prefetches rows of a page that a later tile will read (<c>prefetcht0</c>, every 64-byte line; every other
    /// line, or into L2 only, measured slower), a few rows at a time between the compute so the misses overlap with it
    /// instead of queueing up in one burst. A default instance does nothing.</summary>
    private readonly struct PagePrefetch(byte* first, long tokenBytes, int rowBytes)
    {
        private readonly byte* _first = first;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Rows(int t0, int n)
        {
            if (_first == null) return;
            for (int t = t0; t < t0 + n; t++)
            {
                byte* r = _first + t * tokenBytes;
                for (int b = 0; b < rowBytes; b += 64) Sse.Prefetch0(r + b);
            }
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
    private static void Scale(float* acc, float f, int n)
    {
        var fv = Vector512.Create(f);
        for (int i = 0; i < n; i += 16) (Vector512.Load(acc + i) * fv).Store(acc + i);
    }
}
