using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Attention.Masks;
using Kernels.Attention.Planning;

namespace Kernels.Cpu.Attention;

/// <summary>
/// The register-tiled attention kernel (AVX-512 with <see cref="Tile512"/>, AVX2 with <see cref="Tile256"/>, 128-bit with
/// <see cref="Tile128"/>): the work item of
/// <see cref="PagedAttentionKernel"/> with K and V widened in registers, logits of 16 tokens produced as one row per query,
/// and per-token dequantization folded into logits and probabilities.
/// </summary>
/// <remarks>
/// <para><b>Logits.</b> Per kv head and 16-token tile, blocks of four queries × a few tokens keep fp32 partial sums in
/// registers over head_dim (each K chunk is loaded and widened once for the four queries, each query chunk once for the
/// block's tokens); a transpose-and-add tree leaves the block's dot products in one register. Query heads that do not fill a
/// block of four take one query at a time. (AVX-512: 4 × 4 tokens, 16 accumulators; AVX2, 16 registers: 4 × 2.)</para>
/// <para><b>Softmax.</b> Per query and tile, in registers: scale (sm_scale times the tile's per-token K scales), soft cap,
/// mask (page end, causal/window range), running max, <c>e^(x − max)</c>, running sum; the accumulator is rescaled only when
/// the maximum grows.</para>
/// <para><b>Output.</b> Four queries × a slice of head_dim stay in registers across the tile; each V chunk is widened once
/// and multiplied by the broadcast probability (folded with the token's V scale).</para>
/// <para><b>Folding.</b> int8/int4 rows are read as integer codes (<c>q − z</c> for int4, exact since zero points are
/// integers) and their scales multiply the logits and probabilities instead of every element. fp16 rows are read by a
/// 3-instruction shift that yields <c>h·2⁻¹¹²</c> exactly, so queries are pre-scaled by 2¹¹² (items whose queries reach
/// 2¹⁵ read rows at their true value instead) and probabilities by 2¹¹²; all these factors are powers of two or one multiply per token, so
/// products are the same as with widened rows up to rounding. Pages flagged as holding fp16 Inf/NaN
/// (<c>PagedKvCache.NonFinitePageArray</c>) are read with the Inf/NaN-aware loader.</para>
/// <para><b>Prefill-type items</b> (several query rows, ≥ 8 queries per kv head: prefill, cascade prefixes, block-sparse) widen
/// each tile's K and V rows to fp32 scratch once (<see cref="IAttentionTile.WidenRows{TL}"/>) and run the passes on those
/// rows; on AVX-512, with ≥ 16 queries and no soft cap, logits and softmax take the queries in the vector lanes
/// (<see cref="QueryLanes"/>).</para>
/// <para>Only live tokens are read: rows outside every query's key range are replaced by a zero row, and the V pass visits
/// the live range only. Results are deterministic for a given plan; they differ from the other ISA paths by rounding.</para>
/// </remarks>
internal static unsafe class PagedAttentionTiled<TTile> where TTile : struct, IAttentionTile
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
    // Output accumulators [MaxQ][MaxD], 64-byte aligned: thread-private, so two threads never share an accumulator's cache line
    // (the destination rows of neighbouring heads may share one; they are written once, at the end of the item).
    private const int AccOffset = (QSumOffset + MaxQ + 15) & ~15;
    // Prefill-type items (several query rows): the tile's K and V rows of one kv head widened to fp32 once [Tile][MaxD] each.
    private const int KWideOffset = AccOffset + MaxQ * MaxD;
    private const int VWideOffset = KWideOffset + Tile * MaxD;
    // AVX-512 prefill-type items with ≥ 16 queries: the queries transposed [MaxD][MaxQ], and the logits as [Tile][MaxQ].
    private const int QtOffset = VWideOffset + Tile * MaxD;
    private const int LanesOffset = QtOffset + MaxD * MaxQ;
    private const int LaneLoOffset = LanesOffset + Tile * MaxQ;
    private const int LaneHiOffset = LaneLoOffset + MaxQ;
    private const int ScratchFloats = LaneHiOffset + MaxQ + 16;

    private const int TlbPages = 2;                           // TLB warm-up distance, in pages of the item's list (1–3 measured alike)
    private const int PrefetchPages = 1;                      // software prefetch distance, in pages of the item's list (1–8 measured)
    private const float TwoPow112 = 5.192296858534828E+33f; // 2^112, exact
    private const float F16QueryLimit = 32768f;               // |q|·2^112 must stay finite: |q| < 2^15
    private const float TwoPow120 = 1.329227995784916E+36f;  // 2^120, exact (fp8 E4M3)
    private const float E4M3QueryLimit = 256f;                // |q|·2^120 must stay finite: |q| < 2^8

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>Tokens a page holds: its rows over the kv heads, in either layout. (The token stride alone is not enough: an
    /// HND pool with one-token pages has token and head strides of 1, like NHD with one head.)</summary>
    internal static int PageCapacity(in PagedAttentionKernel.State s) => (int)(s.PageStride / (s.QoHeads / s.Group));

    /// <summary>Runs work item <paramref name="index"/>.</summary>
    public static void Run(ref PagedAttentionKernel.State s, int index)
    {
        switch (s.DType)
        {
            case DType.F32: Run<KvF32, KvF32>(ref s, index, 1f); break;
            case DType.BF16: Run<KvBf16, KvBf16>(ref s, index, 1f); break;
            case DType.I8: Run<KvI8, KvI8>(ref s, index, 1f); break;
            case DType.I4: Run<KvI4, KvI4>(ref s, index, 1f); break;
            // fp16 and fp8 rows come in ×2^−112 (E4M3: ×2^−120) and queries are pre-scaled to match, unless a query is too
            // large (or not finite); the probabilities take the same factor for V.
            case DType.F8E5M2:
                if (QueriesBelow(ref s, s.Items[index], F16QueryLimit) && HeadScalesBelow(ref s, s.Items[index], F16QueryLimit))
                    Run<KvF8<E5M2>, KvF8<E5M2Special>>(ref s, index, TwoPow112);
                else Run<KvF8<E5M2Exact>, KvF8<E5M2Exact>>(ref s, index, 1f);
                break;
            case DType.F8E4M3:
                if (QueriesBelow(ref s, s.Items[index], E4M3QueryLimit) && HeadScalesBelow(ref s, s.Items[index], E4M3QueryLimit))
                    Run<KvF8<E4M3>, KvF8<E4M3Special>>(ref s, index, TwoPow120);
                else Run<KvF8<E4M3Exact>, KvF8<E4M3Exact>>(ref s, index, 1f);
                break;
            default:
                if (QueriesBelow(ref s, s.Items[index], F16QueryLimit)) Run<KvF16, KvF16Special>(ref s, index, TwoPow112);
                else Run<KvF16Exact, KvF16Exact>(ref s, index, 1f);
                break;
        }
    }

    /// <summary>True without per-head scales, or when the V scales of the item's kv heads are below <paramref name="limit"/>
    /// (an fp8 probability multiplier is the scale times 2^112 or 2^120, which must stay finite).</summary>
    private static bool HeadScalesBelow(ref PagedAttentionKernel.State s, AttentionWorkItem it, float limit)
    {
        if (!s.PerHeadScale) return true;
        for (int kk = 0; kk < it.KvHeads; kk++)
            if (!(s.VScale[it.KvHead + kk] < limit)) return false;
        return true;
    }

    /// <summary>True when every query element of the item is finite with magnitude below <paramref name="limit"/>.</summary>
    /// <remarks>Fully optimised from the first call, like the kernel: it runs once per work item, so a decode step calls it a
    /// handful of times, and its tier-0 code cost 6 µs per item (32 queries) in a scratch benchmark, half of a 16-token call.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static bool QueriesBelow(ref PagedAttentionKernel.State s, AttentionWorkItem it, float limit)
    {
        if (s.Rope != null) limit /= 2; // a rotated element is at most |x1| + |x2|
        int d = s.HeadDim;
        var lim = Vector128.Create(limit);
        var bad = Vector128<float>.Zero;
        for (int r = 0; r < it.QueryRows; r++)
            for (int kk = 0; kk < it.KvHeads; kk++)
            {
                int head = (it.KvHead + kk) * s.Group + it.GroupHead;
                float* q = s.Q + ((long)(it.QueryRow + r) * s.QoHeads + head) * d;
                for (int i = 0; i < it.GroupHeads * d; i += 4)
                    bad |= ~Vector128.LessThan(Vector128.Abs(Vector128.Load(q + i)), lim); // NaN compares false: bad
            }
        return bad == Vector128<float>.Zero;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TL, TLSpecial>(ref PagedAttentionKernel.State s, int index, float qMul)
        where TL : unmanaged, IKvRow where TLSpecial : unmanaged, IKvRow
    {
        AttentionWorkItem it = s.Items[index];
        int d = s.HeadDim;
        var a = t_scratch ??= GC.AllocateArray<float>(ScratchFloats, pinned: true);
        float* scratch = (float*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a)) + 63) & ~(nint)63);
        float** acc = stackalloc float*[MaxQ];
        int* lo = stackalloc int[MaxQ];
        int* hi = stackalloc int[MaxQ];
        uint** maskRow = stackalloc uint*[MaxQ];
        byte** maskedRows = stackalloc byte*[Tile];
        int* queryPos = stackalloc int[MaxQ];
        var c = new TileItem
        {
            Qs = scratch + QsOffset, P = scratch + POffset, M = scratch + MOffset, L = scratch + LOffset,
            QCodes = (sbyte*)(scratch + QCodesOffset), Q16 = (short*)(scratch + Q16Offset), QScale = scratch + QScaleOffset,
            QSum = (int*)(scratch + QSumOffset),
            IntDot = s.QuantizedQ && TTile.SupportsIntDot && (s.DType == DType.I8 || s.HeadDim % 128 == 0),
            KMul = scratch + KMulOffset, VMul = scratch + VMulOffset, KZero = (int*)(scratch + KZeroOffset),
            VZero = (int*)(scratch + VZeroOffset), ZeroRow = scratch + ZeroRowOffset, Acc = acc, Lo = lo, Hi = hi,
            MaskRow = s.MaskWords == null ? null : maskRow, MaskedRows = maskedRows,
            Alibi = s.Alibi, Group = s.Group, GroupHead = it.GroupHead, QueryPos = queryPos,
            KWide = scratch + KWideOffset, VWide = scratch + VWideOffset, Qt = scratch + QtOffset, LaneLogits = scratch + LanesOffset,
            LaneLo = (int*)(scratch + LaneLoOffset), LaneHi = (int*)(scratch + LaneHiOffset),
            QueryRows = it.QueryRows, KvHeads = it.KvHeads, GroupHeads = it.GroupHeads, PerRow = it.KvHeads * it.GroupHeads,
            KvHead = it.KvHead, MinLo = int.MaxValue, MaxHi = int.MinValue,
            Rope = s.Rope, RopeRotary = s.RopeRotary, RopeInterleaved = s.RopeInterleaved, Isa = s.Isa,
        };
        if (c.Rope != null) c.IntDot = false; // rotated keys are not integer codes (the options reject the pair anyway)
        c.Queries = c.QueryRows * c.PerRow;
        // Widen each K/V row once per tile when it feeds ≥ 8 queries of several rows (prefill, cascade prefixes, block-sparse):
        // otherwise every block of four queries widens it again. Decode (one row) keeps reading the rows in place.
        bool prefillType = c.QueryRows > 1 && c.QueryRows * c.GroupHeads >= 8;
        c.WidenV = typeof(TL) != typeof(KvF32) && !c.IntDot && prefillType;
        // In-kernel RoPE: AVX-512 and AVX2 decode-type items with NeoX pairs over the whole row rotate each K chunk in
        // registers inside the logit blocks (Tile512/Tile256.Logits4Neox); otherwise K is widened to fp32 rows, rotated
        // there, and read back (fp32 rows too). Prefill-type items widen anyway, and rotating once per tile beats once per
        // block of four queries. V is not rotated.
        c.RopeInLogits = c.Rope != null && TTile.RotatesInLogits && !c.RopeInterleaved && c.RopeRotary == d && !prefillType;
        c.Widen = (c.Rope != null && !c.RopeInLogits) || c.WidenV;
        new Span<float>(c.ZeroRow, MaxD).Clear();

        // The item's first page has no previous tile to prefetch it: start its K and V lines before the
        // query setup below, which then overlaps the misses.
        if (it.PageBegin < it.PageEnd)
        {
            long row0 = s.PageIds[it.PageBegin] * s.PageStride + (long)it.KvHead * s.HeadStride, tokenBytes = (long)s.TokenStride * s.RowBytes;
            int n = Math.Min(Tile, s.PageTokens[it.PageBegin]);
            for (int kk = 0; kk < it.KvHeads; kk++)
            {
                long r = row0 + (long)kk * s.HeadStride;
                new PagePrefetch(s.K + r * s.RowBytes, tokenBytes, s.RowBytes).Rows(0, n);
                new PagePrefetch(s.V + r * s.RowBytes, tokenBytes, s.RowBytes).Rows(0, n);
            }
        }

        // Query i = (r·KvHeads + kk)·GroupHeads + hh, as in the generic kernel.
        var qm = Vector128.Create(qMul);
        for (int r = 0; r < it.QueryRows; r++)
        {
            queryPos[r] = PagedAttentionKernel.QueryPosition(ref s, it, r);
            var (klo, khi) = AttentionMask.KeyRangeAt(queryPos[r], it.MaskKvLen, s.Causal, s.WindowLeft);
            if (s.MaskWords != null)
            {
                // Custom mask: only keys between the row's first and last kept key are visited; the bits mask the rest.
                int row = it.QueryRow + r;
                klo = Math.Max(klo, s.MaskRowLo[row]);
                khi = Math.Min(khi, s.MaskRowHi[row]);
                maskRow[r] = s.MaskWords + s.MaskRowWord[row];
            }
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
                        c.QScale[i] = TTile.QuantizeQuery(q, d, c.QCodes + i * d, c.Q16 + i * d, qs, out c.QSum[i]);
                    }
                    else if (c.Rope != null && queryPos[r] >= 0) // (a query with no keys, kv_len 0, has position −1 and no use)
                    {
                        // Rotated at the query's position (as ApplyRope would), then scaled (exact: a power of two).
                        new ReadOnlySpan<float>(q, d).CopyTo(new Span<float>(qs, d));
                        RopeKernel.RotateRow(qs, c.Rope + (long)queryPos[r] * c.RopeRotary, c.RopeRotary, c.RopeInterleaved, c.Isa);
                        for (int j = 0; j < d; j += 4) (Vector128.Load(qs + j) * qm).Store(qs + j);
                    }
                    else
                    {
                        for (int j = 0; j < d; j += 4) (Vector128.Load(q + j) * qm).Store(qs + j); // exact: a power of two
                    }
                    acc[i] = scratch + AccOffset + i * d;
                    new Span<float>(acc[i], d).Clear();
                    c.M[i] = float.NegativeInfinity;
                    c.L[i] = 0;
                }
        }

        // AVX-512 prefill-type items of one kv head and ≥ 16 queries take logits and softmax with the queries in the lanes.
        c.QueryLanes = c.Widen && typeof(TTile) == typeof(Tile512) && QueryLanes.IsSupported && c.KvHeads == 1 && c.Queries >= 16
            && s.SoftCap == 0 && s.Alibi == null;
        if (c.QueryLanes)
        {
            c.QueriesPadded = (c.Queries + 15) & ~15;
            QueryLanes.Prepare(c.Qs, c.Queries, d, c.Qt, c.QueriesPadded, lo, hi, c.GroupHeads, c.LaneLo, c.LaneHi);
        }

        if (s.KScale == null || s.PerHeadScale)
        {
            // The same multipliers for every token of the item, set once: a per-head int8 or fp8 scale, fp16's 2^112
            // (probabilities × 2^112 against rows × 2^−112; fp8: 2^112 or 2^120, times the head's scale), or 1. (Per-token
            // scales are read per tile in TileStep.)
            for (int kk = 0; kk < c.KvHeads; kk++)
            {
                float ks = s.PerHeadScale ? s.KScale[c.KvHead + kk] : 1f, vs = s.PerHeadScale ? s.VScale[c.KvHead + kk] * qMul : qMul;
                new Span<float>(c.KMul + kk * Tile, Tile).Fill(s.SmScale * ks);
                new Span<float>(c.VMul + kk * Tile, Tile).Fill(vs);
            }
        }
        // Zero points: none but int4's (int8 per-token tiles leave them as they are here).
        new Span<int>(c.KZero, c.KvHeads * Tile).Clear();
        new Span<int>(c.VZero, c.KvHeads * Tile).Clear();
        int pageTokens = PageCapacity(in s);

        for (int p = it.PageBegin; p < it.PageEnd; p++)
        {
            int tokens = s.PageTokens[p], key0 = s.PageKeyStart[p];
            if (key0 >= c.MaxHi || key0 + tokens <= c.MinLo) continue; // wholly masked: never touched
            int pageId = s.PageIds[p];
            long pageRow = pageId * s.PageStride + (long)it.KvHead * s.HeadStride;
            bool special = typeof(TL) != typeof(TLSpecial) && s.PageFlags[pageId] != 0;
            if (p + TlbPages < it.PageEnd && (s.HeadStride != 1 || s.PageIds[p + TlbPages] != pageId + TlbPages))
                WarmTlb(ref s, ref c, s.PageIds[p + TlbPages]);
            for (int t0 = 0; t0 < tokens; t0 += Tile)
            {
                int tn = Math.Min(Tile, tokens - t0);
                // Prefetch the next tile's rows: the same page's next 16 tokens, or on a page's last tile the first tile of the page
                // PrefetchPages ahead (pages are scattered: hardware prefetchers cannot follow; NHD rows are strided by all heads).
                long next = t0 + Tile < tokens ? pageRow + (long)(t0 + Tile) * s.TokenStride
                    : p + PrefetchPages < it.PageEnd ? s.PageIds[p + PrefetchPages] * s.PageStride + (long)it.KvHead * s.HeadStride : -1;
                bool fullTile = t0 + Tile <= pageTokens; // all 16 rows are in the page (read by the vector scale path)
                if (special) TileStep<TLSpecial>(ref s, ref c, pageRow, next, t0, tn, key0 + t0, fullTile);
                else TileStep<TL>(ref s, ref c, pageRow, next, t0, tn, key0 + t0, fullTile);
            }
        }

        for (int r = 0; r < it.QueryRows; r++)
            for (int kk = 0; kk < it.KvHeads; kk++)
                for (int hh = 0; hh < it.GroupHeads; hh++)
                {
                    int i = r * c.PerRow + kk * it.GroupHeads + hh;
                    int head = (it.KvHead + kk) * s.Group + it.GroupHead + hh;
                    long qRow = (long)(it.QueryRow + r) * s.QoHeads + head;
                    float* dst = it.PartialSlot < 0 ? s.Out + qRow * d : s.Work + s.PartialOut + ((long)(it.PartialSlot + r) * s.QoHeads + head) * d;
                    float lse;
                    float l = c.L[i];
                    if (l != 0) // > 0, or NaN (a NaN or +∞ logit): NaN output and lse, as the oracle
                    {
                        TTile.Scale(acc[i], 1f / l, d);
                        new ReadOnlySpan<float>(acc[i], d).CopyTo(new Span<float>(dst, d));
                        lse = c.M[i] + MathF.Log(l);
                    }
                    else
                    {
                        // No weight. A split chunk keeps Σ 0·v_j (0, or NaN from an Inf/NaN V row of a key whose logit was
                        // −∞), which the merge carries into the sequence's result as the unsplit oracle's 0·NaN; a final
                        // output is 0.
                        if (it.PartialSlot >= 0 || s.KeepEmpty) new ReadOnlySpan<float>(acc[i], d).CopyTo(new Span<float>(dst, d));
                        else new Span<float>(dst, d).Clear();
                        lse = float.NegativeInfinity;
                    }
                    if (it.PartialSlot >= 0) s.Work[s.PartialLse + (long)(it.PartialSlot + r) * s.QoHeads + head] = lse;
                    else if (s.Lse != null) s.Lse[(long)(it.QueryRow + r) * s.QoHeads + head] = lse;
                }
    }

    /// <summary>One tile of up to 16 tokens starting at page token <paramref name="t0"/> (keys <paramref name="k0"/>…);
    /// <paramref name="nextPageRow"/> ≥ 0 is the row of the next tile's first token (same page or the next page), to prefetch (−1: none).
    /// <paramref name="fullTile"/>: the page holds all 16 rows of the tile, live or not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileStep<TL>(ref PagedAttentionKernel.State s, ref TileItem c, long pageRow, long nextPageRow, int t0, int tn, int k0, bool fullTile)
        where TL : unmanaged, IKvRow
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
        // NHD with every kv head in the item: the next tile's rows of all heads are one contiguous block (16 tokens × all heads),
        // so kv head kk's passes prefetch the kk-th 16-row share of it, in address order, instead of its own rows 2 KB apart
        // (scratch, fp16 32k on two threads: contiguous +18 %, paged +7 %). Otherwise (HND, a subset of the heads, pages of fewer
        // than 16 tokens) each head prefetches its own rows.
        bool wholeRows = s.HeadStride == 1 && c.KvHeads == s.TokenStride && s.PageStride >= (long)Tile * s.TokenStride;
        if (rowScales && nextPageRow >= 0) PrefetchScales(ref s, nextPageRow, i4);
        if (rowScales && fullTile)
        {
            // Per-token scales (and int4 zero points) of all heads, as whole vectors where the tile's layout allows.
            long r0 = pageRow + (long)t0 * s.TokenStride;
            if (TTile.TileScales(s.KScale + r0, s.TokenStride, s.HeadStride, c.KvHeads, smScale, tl, th, c.KMul, toInt: false))
            {
                TTile.TileScales(s.VScale + r0, s.TokenStride, s.HeadStride, c.KvHeads, 1f, tl, th, c.VMul, toInt: false);
                if (i4)
                {
                    TTile.TileScales(s.KZero + r0, s.TokenStride, s.HeadStride, c.KvHeads, 1f, tl, th, c.KZero, toInt: true);
                    TTile.TileScales(s.VZero + r0, s.TokenStride, s.HeadStride, c.KvHeads, 1f, tl, th, c.VZero, toInt: true);
                }
                rowScales = false; // done
            }
        }
        for (int kk = 0; kk < c.KvHeads; kk++)
        {
            float* kmul = c.KMul + kk * Tile, vmul = c.VMul + kk * Tile;
            int* kz = c.KZero + kk * Tile, vz = c.VZero + kk * Tile;
            long r0 = pageRow + (long)t0 * s.TokenStride + (long)kk * s.HeadStride; // row index of tile token 0
            TTile.SetRows(rows, s.K + r0 * s.RowBytes, tokenBytes, (byte*)c.ZeroRow, tl, th);
            var pfK = Prefetch(ref s, s.K, nextPageRow, kk, wholeRows);
            if (rowScales)
            {
                // Per-token scales (and int4 zero points), one by one: other layouts and widths, and pages' partial tiles.
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
            if (c.Widen)
            {
                WideLogits<TL>(ref c, rows, kz, kk, tl, th, k0, d, pfK);
                continue;
            }
            for (int r = 0; r < c.QueryRows; r++)
            {
                int i = r * c.PerRow + kk * gh, ie = i + gh;
                if (k0 + tl >= c.Hi[r] || k0 + th <= c.Lo[r]) continue; // masked below
                if (c.IntDot)
                    for (; i + 4 <= ie; i += 4, pfK = default) TTile.Logits4Int<TL>(ref c, i, rows, kz, tl, th, d, half, pfK);
                if (TTile.RotatesInLogits && c.RopeInLogits)
                {
                    float* cos = c.Rope + (long)k0 * d; // key k0 + t at its index (rotary_dim = d)
                    for (; i + 4 <= ie; i += 4, pfK = default) TTile.Logits4Neox<TL>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pfK, cos);
                    for (; i < ie; i++, pfK = default) TTile.Logits1Neox<TL>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pfK, cos);
                }
                for (; i + 4 <= ie; i += 4, pfK = default) TTile.Logits4<TL>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pfK);
                for (; i < ie; i++, pfK = default) TTile.Logits1<TL>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pfK);
            }
        }

        // 2. Online softmax per query; c.P becomes the probabilities times the token's V factor.
        if (c.QueryLanes) QueryLanes.Softmax(ref c, k0, tl, th, d);
        else for (int r = 0; r < c.QueryRows; r++)
        {
            int lo = Math.Max(c.Lo[r], k0 + tl) - k0, hi = Math.Min(c.Hi[r], k0 + th) - k0; // this row's live lanes
            if (lo >= hi)
            {
                new Span<float>(c.P + r * c.PerRow * Tile, c.PerRow * Tile).Clear();
                continue;
            }
            // Soft cap or ALiBi: logits scaled, biased and capped in place (rare: kept out of the loop below).
            bool transformed = s.SoftCap > 0 || s.Alibi != null;
            if (transformed) TransformRow(ref c, r, k0, s.SoftCap);
            uint keep = KeepBits(ref c, r, k0);
            for (int kk = 0; kk < c.KvHeads; kk++)
            {
                float* kmul = transformed ? null : c.KMul + kk * Tile, vmul = c.VMul + kk * Tile;
                int i = r * c.PerRow + kk * gh, ie = i + gh;
                for (; i + 4 <= ie; i += 4) TTile.Softmax4(c.P + i * Tile, kmul, vmul, lo, hi, keep, c.M + i, c.L + i, c.Acc + i, d);
                for (; i < ie; i++) TTile.Softmax(c.P + i * Tile, kmul, vmul, lo, hi, keep, ref c.M[i], ref c.L[i], c.Acc[i], d);
            }
        }

        // 3. acc += Σ_t p_t·v_t over the live tokens.
        for (int kk = 0; kk < c.KvHeads; kk++)
        {
            TTile.SetRows(rows, s.V + (pageRow + (long)t0 * s.TokenStride + (long)kk * s.HeadStride) * s.RowBytes, tokenBytes, (byte*)c.ZeroRow, tl, th);
            var pfV = Prefetch(ref s, s.V, nextPageRow, kk, wholeRows);
            int* vz = c.VZero + kk * Tile;
            if (c.WidenV)
            {
                WideOutput<TL>(ref c, rows, vz, kk, tl, th, k0, d, pfV);
                continue;
            }
            for (int r = 0; r < c.QueryRows; r++)
            {
                // This row's live tokens only: a masked token's V is never read (0·NaN would leak into the row).
                int rl = Math.Max(c.Lo[r] - k0, tl), rh = Math.Min(c.Hi[r] - k0, th);
                if (rl >= rh) continue;
                byte** rr = c.MaskRow == null ? rows : MaskedRows(ref c, r, k0, rows, rl, rh);
                int i = r * c.PerRow + kk * gh, ie = i + gh;
                for (; i + 4 <= ie; i += 4, pfV = default) TTile.Accumulate4<TL>(c.Acc + i, c.P + i * Tile, rr, vz, rl, rh, half, ref pfV);
                for (; i < ie; i++, pfV = default) TTile.Accumulate1<TL>(c.Acc[i], c.P + i * Tile, rr, vz, rl, rh, half, ref pfV);
            }
        }
    }

    /// <summary>Step 1 of <see cref="TileStep{TL}"/> for a prefill-type item (<see cref="TileItem.Widen"/>): kv head
    /// <paramref name="kk"/>'s rows widened to fp32 once, then every query's logits from those rows. Kept out of the tile step,
    /// whose inlining budget the decode path needs (with these loops inside, a prefetcher constructor stayed a call).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void WideLogits<TL>(ref TileItem c, byte** rows, int* kz, int kk, int tl, int th, int k0, int d, PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        int half = d / 2, gh = c.GroupHeads;
        if (c.Rope == null) TTile.WidenRows<TL>(rows, kz, tl, th, half, c.KWide);
        else if (typeof(TTile) == typeof(Tile512) && !c.RopeInterleaved && c.RopeRotary == d)
            Tile512.WidenRowsNeox<TL>(rows, kz, tl, th, half, c.KWide, c.Rope + (long)k0 * d); // widened and rotated in one pass
        else
        {
            // Key k0 + t at its position (rows outside [tl, th) are the zero row).
            TTile.WidenRows<TL>(rows, kz, tl, th, half, c.KWide);
            RopeKernel.RotateRows(c.KWide + tl * d, d, th - tl, c.Rope + (long)(k0 + tl) * c.RopeRotary, c.RopeRotary, c.RopeInterleaved, c.Isa);
        }
        if (c.QueryLanes)
        {
            pf.Rows(0, Tile); // the next tile's K rows (the other kernels spread these over their blocks)
            QueryLanes.Logits(c.Qt, c.QueriesPadded, c.KWide, d, tl, th, c.LaneLogits);
            return;
        }
        TTile.SetRows(rows, (byte*)c.KWide, d * sizeof(float), (byte*)c.ZeroRow, tl, th);
        for (int r = 0; r < c.QueryRows; r++)
        {
            int i = r * c.PerRow + kk * gh, ie = i + gh;
            if (k0 + tl >= c.Hi[r] || k0 + th <= c.Lo[r]) continue; // masked in the softmax
            for (; i + 4 <= ie; i += 4, pf = default) TTile.Logits4<KvF32>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pf);
            for (; i < ie; i++, pf = default) TTile.Logits1<KvF32>(c.Qs + i * d, rows, kz, tl, th, d, half, c.P + i * Tile, pf);
        }
    }

    /// <summary>Step 3 of <see cref="TileStep{TL}"/> for a prefill-type item: kv head <paramref name="kk"/>'s V rows widened
    /// once, then each query row's live tokens accumulated from them.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void WideOutput<TL>(ref TileItem c, byte** rows, int* vz, int kk, int tl, int th, int k0, int d, PagePrefetch pf)
        where TL : unmanaged, IKvRow
    {
        int half = d / 2, gh = c.GroupHeads;
        TTile.WidenRows<TL>(rows, vz, tl, th, half, c.VWide);
        TTile.SetRows(rows, (byte*)c.VWide, d * sizeof(float), (byte*)c.ZeroRow, tl, th);
        for (int r = 0; r < c.QueryRows; r++)
        {
            // This row's live tokens only: a masked token's V is never used (0·NaN would leak into the row).
            int rl = Math.Max(c.Lo[r] - k0, tl), rh = Math.Min(c.Hi[r] - k0, th);
            if (rl >= rh) continue;
            byte** rr = c.MaskRow == null ? rows : MaskedRows(ref c, r, k0, rows, rl, rh);
            int i = r * c.PerRow + kk * gh, ie = i + gh;
            for (; i + 4 <= ie; i += 4, pf = default) TTile.Accumulate4<KvF32>(c.Acc + i, c.P + i * Tile, rr, vz, rl, rh, half, ref pf);
            for (; i < ie; i++, pf = default) TTile.Accumulate1<KvF32>(c.Acc[i], c.P + i * Tile, rr, vz, rl, rh, half, ref pf);
        }
    }

    /// <summary>Kv head <paramref name="kk"/>'s share of the prefetch of the tile whose token 0 is at row <paramref name="row"/>
    /// of <paramref name="pool"/> (K or V): with <paramref name="wholeRows"/> the kk-th 16-row slice of the tile's block, in
    /// address order, else the head's own rows; nothing when <paramref name="row"/> is −1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static PagePrefetch Prefetch(ref PagedAttentionKernel.State s, byte* pool, long row, int kk, bool wholeRows) =>
        row < 0 ? default
        : wholeRows ? new PagePrefetch(pool + (row + (long)kk * Tile) * s.RowBytes, s.RowBytes, s.RowBytes)
        : new PagePrefetch(pool + (row + (long)kk * s.HeadStride) * s.RowBytes, (long)s.TokenStride * s.RowBytes, s.RowBytes);

    /// <summary>Starts the address translations of page <paramref name="pageId"/>'s rows of the item two pages before they
    /// are read: one <c>prefetcht0</c> per 4 KB of its K and V rows (and one line of each scale array). Scattered pages miss
    /// the TLB on every 4 KB; the data prefetch one tile ahead then waited for the page walk. In NHD it is skipped when the
    /// page follows the current one in the pool (sequential pages measured ≈ 4 % slower with it); in HND, where each head's
    /// rows are a separate 4 KB run per page, it also pays for sequential pages. Scratch, fp16 32k on two threads: NHD paged
    /// +14 % at batch 1 and +10–17 % at batch 8 (1 GB pools); HND contiguous +20 %.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WarmTlb(ref PagedAttentionKernel.State s, ref TileItem c, int pageId)
    {
        if (!Sse.IsSupported) return;
        long row = pageId * s.PageStride + (long)c.KvHead * s.HeadStride;
        long pageSize = PageCapacity(in s);
        long bytes = ((long)(c.KvHeads - 1) * s.HeadStride + (pageSize - 1) * s.TokenStride + 1) * s.RowBytes; // the item's rows
        byte* k = s.K + row * s.RowBytes, v = s.V + row * s.RowBytes;
        for (long b = 0; b < bytes; b += 4096)
        {
            Sse.Prefetch0(k + b);
            Sse.Prefetch0(v + b);
        }
        if (s.KScale != null && !s.PerHeadScale)
        {
            Sse.Prefetch0(s.KScale + row);
            Sse.Prefetch0(s.VScale + row);
            if (s.DType == DType.I4)
            {
                Sse.Prefetch0(s.KZero + row);
                Sse.Prefetch0(s.VZero + row);
            }
        }
    }

    /// <summary>Prefetches the per-row scales (and int4 zero points) of a page's rows from <paramref name="row"/> on: they sit
    /// beside the rows' page in the scale arrays, as scattered as the pages themselves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs a few times per call: never worth tier-0 code
    private static void PrefetchScales(ref PagedAttentionKernel.State s, long row, bool zeros)
    {
        if (!Sse.IsSupported) return;
        long n = s.PageStride * sizeof(float);
        for (long b = 0; b < n; b += 64)
        {
            Sse.Prefetch0((byte*)(s.KScale + row) + b);
            Sse.Prefetch0((byte*)(s.VScale + row) + b);
            if (zeros)
            {
                Sse.Prefetch0((byte*)(s.KZero + row) + b);
                Sse.Prefetch0((byte*)(s.VZero + row) + b);
            }
        }
    }

    /// <summary>The custom mask's bits of item row <paramref name="r"/> for keys <paramref name="k0"/> … + 15 (bit t: key
    /// k0 + t), or all 16 set without a mask. Reads two words: the row's bits are followed by another row's or the padding word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint KeepBits(ref TileItem c, int r, int k0)
    {
        if (c.MaskRow == null) return 0xFFFF;
        uint* w = c.MaskRow[r] + (k0 >> 5);
        ulong x = w[0] | ((ulong)w[1] << 32);
        return (uint)(x >> (k0 & 31)) & 0xFFFF;
    }

    /// <summary>Item row <paramref name="r"/>'s rows for the output pass: <paramref name="rows"/> itself without a custom mask
    /// or when the mask keeps every token in [rl, rh); else a copy in <see cref="TileItem.MaskedRows"/> with the excluded tokens' rows
    /// replaced by the zero row, so an excluded key's V row is never read (its Inf/NaN would leak through the zero weight).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static byte** MaskedRows(ref TileItem c, int r, int k0, byte** rows, int rl, int rh)
    {
        byte** dst = c.MaskedRows;
        uint keep = KeepBits(ref c, r, k0), span = (uint)(((1 << rh) - 1) & ~((1 << rl) - 1));
        if ((keep & span) == span) return rows;
        for (int t = 0; t < Tile; t++) dst[t] = (keep >> t & 1) != 0 ? rows[t] : (byte*)c.ZeroRow;
        return dst;
    }

    /// <summary>Row <paramref name="r"/>'s logits in place (keys <paramref name="k0"/> … + 15): times the K multiplier
    /// (sm_scale·scale), plus the ALiBi bias <c>slope·(key − query position)</c> if any, then <c>cap·tanh(x/cap)</c> lane by
    /// lane with <see cref="MathF.Tanh"/> when <paramref name="cap"/> &gt; 0 (the generic kernel's arithmetic).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void TransformRow(ref TileItem c, int r, int k0, float cap)
    {
        float d0 = k0 - c.QueryPos[r]; // distance of tile token 0 from the row's query position (exact below 2^24)
        var lane = Vector128.Create(0f, 1f, 2f, 3f);
        for (int j = 0; j < c.PerRow; j++)
        {
            int kk = j / c.GroupHeads;
            float* pi = c.P + (r * c.PerRow + j) * Tile, kmul = c.KMul + kk * Tile;
            float slope = c.Alibi == null ? 0f : c.Alibi[(c.KvHead + kk) * c.Group + c.GroupHead + j % c.GroupHeads];
            var vs = Vector128.Create(slope);
            for (int t = 0; t < Tile; t += 4)
            {
                var x = Vector128.Load(pi + t) * Vector128.Load(kmul + t);
                if (c.Alibi != null) x += vs * (Vector128.Create(d0 + t) + lane);
                x.Store(pi + t);
            }
            if (cap > 0)
                for (int t = 0; t < Tile; t++) pi[t] = cap * MathF.Tanh(pi[t] / cap);
        }
    }

}
