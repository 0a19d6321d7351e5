using System.Runtime.CompilerServices;
using Kernels.Attention.Masks;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Threading;

namespace Kernels.Cpu.Attention;

/// <summary>
/// The work-item dispatcher behind paged decode, paged prefill and block-sparse attention, and the kernel of the scalar path:
/// a work item's queries (query rows × the query heads of its kv heads) stream the item's pages once, with online softmax.
/// The vector paths (AVX-512, AVX2, Vector128) run <see cref="PagedAttentionTiled{TTile}"/> instead.
/// </summary>
/// <remarks>
/// <para>Per page, in tiles of up to 16 tokens: each K row is widened to fp32 once and dotted with every query of the item
/// (GQA: K/V traffic once per group, not once per query head), four queries × two tokens per block; logits are masked to each query's causal/window key
/// range, the running maximum is raised once per tile (rescaling the accumulator only when it grows), the tile's
/// probabilities are exponentiated as one vector, and each V row is widened once and accumulated into every query.
/// Pages outside every query's key range are skipped without reading them, which is also how block-sparse masks skip
/// excluded blocks. A split-KV item stores its normalised partial state and log-sum-exp in the workspace.</para>
/// <para>Accumulation order: dot products in <c>Count</c>-lane FMA partial sums (blocks of four queries) or <c>2·Count</c>
/// (remaining queries) then a halving lane reduction; the output sums tiles in key order. Results are deterministic for a
/// given ISA path, plan and head count (the split is in the plan, not the thread count), and differ across ISA paths by
/// rounding only.</para>
/// </remarks>
internal static unsafe class PagedAttentionKernel
{
    /// <summary>Tokens per tile (one 512-bit vector of logits per query).</summary>
    internal const int Tile = 16;

    internal struct State : IChunkKernel<State>
    {
        public float* Q, Out, Lse, Work;
        public byte* K, V;
        public float* KScale, VScale, KZero, VZero;
        public AttentionWorkItem* Items;
        public int* PageIds, PageTokens, PageKeyStart;
        public byte* PageFlags;
        // Custom mask (null without one): row-aligned bits, and per query row its word offset and kept key range.
        public uint* MaskWords;
        public float* Alibi; // ALiBi slopes per query head, or null
        public int* RowPosition; // per query row, the query's key position (a cascade's shared levels), or null
        public float* Rope;      // in-kernel RoPE: the table's cos/sin rows [position][rotary], or null
        public int RopeRotary;
        public bool RopeInterleaved;
        public int* MaskRowWord, MaskRowLo, MaskRowHi;
        public long PageStride, PartialOut, PartialLse;
        public int TokenStride, HeadStride, RowBytes, HeadDim, QoHeads, Group;
        public DType DType;
        public bool PerHeadScale, Causal, QuantizedQ, KeepEmpty;
        public int WindowLeft;
        public float SmScale, SoftCap;
        public IsaPath Isa;

        public static void Execute(ref State s, int chunk)
        {
            switch (s.Isa)
            {
                case IsaPath.Avx512: PagedAttentionTiled<Tile512>.Run(ref s, chunk); break;
                case IsaPath.Avx2: PagedAttentionTiled<Tile256>.Run(ref s, chunk); break;
                case IsaPath.Vector128: PagedAttentionTiled<Tile128>.Run(ref s, chunk); break;
                default: Scalar(ref s, chunk); break;
            }
        }
    }

    /// <summary>The scalar path.</summary>
    [SkipLocalsInit]
    internal static void Scalar(ref State s, int item) => Run<AttentionScalar>(ref s, item);

    /// <summary>Floats of per-thread scratch: the logit tile, running max and sum, the widened K/V rows of a tile, a zero row, the
    /// dequantized queries and the output accumulators (plus 16 floats of alignment slack).</summary>
    private const int ScratchFloats = AttentionPlan.MaxQueriesPerItem * Tile + 2 * AttentionPlan.MaxQueriesPerItem + (Tile + 1) * 256
        + 2 * AttentionPlan.MaxQueriesPerItem * 256 + 16;

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>This thread's pinned scratch, 64-byte aligned (allocated once per thread, never per call).</summary>
    private static float* Scratch()
    {
        var a = t_scratch ??= GC.AllocateArray<float>(ScratchFloats, pinned: true);
        return (float*)(((nint)Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(a)) + 63) & ~(nint)63);
    }

    // Fully optimised on first call: a decode step is a handful of calls, too few for tiered compilation to reach tier 1.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TV>(ref State s, int index) where TV : struct, IAttentionSimd<TV>
    {
        const int MaxQ = AttentionPlan.MaxQueriesPerItem;
        AttentionWorkItem it = s.Items[index];
        int d = s.HeadDim, nkv = it.KvHeads, gh = it.GroupHeads, perRow = nkv * gh, nq = it.QueryRows * perRow;
        float* logits = Scratch();               // [query][tile token]
        float* m = logits + MaxQ * Tile;         // running max per query
        float* l = m + MaxQ;                     // running Σ e^(logit − max) per query
        float* tile = l + MaxQ;                  // the tile's widened K (then V) rows [Tile][256], then one zero row
        float* zero = tile + Tile * 256;
        float* qDeq = zero + 256;                // QuantizedQueryDot: the dequantized int8 queries; RoPE: the rotated ones [query][256]
        float* accs = qDeq + MaxQ * 256;         // output accumulators [query][256]: thread-private, so no cache line is shared
        sbyte* codes = stackalloc sbyte[256];
        new Span<float>(zero, 256).Clear();
        float** rows = stackalloc float*[Tile];
        float** rowsMasked = stackalloc float*[Tile];
        float* slopeOf = stackalloc float[MaxQ]; // ALiBi slope per query (0 without)
        float* dots = stackalloc float[8];
        int* lo = stackalloc int[MaxQ];
        int* hi = stackalloc int[MaxQ];
        float** qp = stackalloc float*[MaxQ];
        float** acc = stackalloc float*[MaxQ];

        // Query i = (r·KvHeads + kk)·GroupHeads + hh: row r, kv head KvHead + kk, query head (KvHead + kk)·group + GroupHead + hh.
        int minLo = int.MaxValue, maxHi = int.MinValue;
        for (int r = 0; r < it.QueryRows; r++)
        {
            int position = QueryPosition(ref s, it, r);
            var (klo, khi) = AttentionMask.KeyRangeAt(position, it.MaskKvLen, s.Causal, s.WindowLeft);
            if (s.MaskWords != null)
            {
                klo = Math.Max(klo, s.MaskRowLo[it.QueryRow + r]);
                khi = Math.Min(khi, s.MaskRowHi[it.QueryRow + r]);
            }
            for (int kk = 0; kk < nkv; kk++)
                for (int hh = 0; hh < gh; hh++)
                {
                    int i = r * perRow + kk * gh + hh;
                    int head = (it.KvHead + kk) * s.Group + it.GroupHead + hh;
                    long qRow = (long)(it.QueryRow + r) * s.QoHeads + head;
                    qp[i] = s.Q + qRow * d;
                    slopeOf[i] = s.Alibi == null ? 0f : s.Alibi[head];
                    if (s.QuantizedQ)
                    {
                        float* qd = qDeq + i * 256;
                        float sq = QueryQuantization.Quantize(new ReadOnlySpan<float>(qp[i], d), new Span<sbyte>(codes, d));
                        for (int c = 0; c < d; c++) qd[c] = codes[c] * sq;
                        qp[i] = qd;
                    }
                    else if (s.Rope != null && position >= 0) // kv_len 0: position −1, no keys to meet
                    {
                        float* qr = qDeq + i * 256;
                        new ReadOnlySpan<float>(qp[i], d).CopyTo(new Span<float>(qr, d));
                        RopeKernel.RotateRow(qr, s.Rope + (long)position * s.RopeRotary, s.RopeRotary, s.RopeInterleaved, IsaPath.Scalar);
                        qp[i] = qr;
                    }
                    acc[i] = accs + i * 256;
                    new Span<float>(acc[i], d).Clear();
                    m[i] = float.NegativeInfinity;
                    l[i] = 0;
                    lo[i] = klo;
                    hi[i] = khi;
                }
            if (klo < khi)
            {
                minLo = Math.Min(minLo, klo);
                maxHi = Math.Max(maxHi, khi);
            }
        }

        for (int p = it.PageBegin; p < it.PageEnd; p++)
        {
            int tokens = s.PageTokens[p], key0 = s.PageKeyStart[p];
            if (key0 >= maxHi || key0 + tokens <= minLo) continue; // wholly masked: never touched
            long pageRow = s.PageIds[p] * s.PageStride + (long)it.KvHead * s.HeadStride;
            for (int t0 = 0; t0 < tokens; t0 += Tile)
            {
                int tn = Math.Min(Tile, tokens - t0);
                int k0 = key0 + t0;
                if (k0 >= maxHi || k0 + tn <= minLo) continue;

                // 1. logits[i, t] for every query, −∞ where masked. Per kv head the tile's K rows are widened once (token-major,
                //    so an NHD page is read in order), then four queries × two tokens at a time take their dot products.
                for (int kk = 0; kk < nkv; kk++)
                {
                    bool any = false;
                    for (int t = 0; t < Tile; t++)
                    {
                        int key = k0 + t;
                        bool live = t < tn && key >= minLo && key < maxHi;
                        any |= live;
                        rows[t] = live
                            ? Widen<TV>(ref s, s.K, s.KScale, s.KZero, pageRow + (long)(t0 + t) * s.TokenStride + (long)kk * s.HeadStride, it.KvHead + kk, tile + t * 256)
                            : zero;
                        if (live && s.Rope != null) // the widened copy rotated at the key's position
                        {
                            if (rows[t] != tile + t * 256) new ReadOnlySpan<float>(rows[t], d).CopyTo(new Span<float>(tile + t * 256, d));
                            rows[t] = tile + t * 256;
                            RopeKernel.RotateRow(rows[t], s.Rope + (long)key * s.RopeRotary, s.RopeRotary, s.RopeInterleaved, IsaPath.Scalar);
                        }
                    }
                    for (int r = 0; r < it.QueryRows; r++)
                    {
                        int i = r * perRow + kk * gh, ie = i + gh;
                        int klo = lo[i], khi = hi[i];
                        float d0 = k0 - QueryPosition(ref s, it, r); // ALiBi distance of tile token 0
                        if (!any || k0 >= khi || k0 + tn <= klo)
                        {
                            new Span<float>(logits + i * Tile, gh * Tile).Fill(float.NegativeInfinity);
                            continue;
                        }
                        for (; i + 4 <= ie; i += 4)
                            for (int t = 0; t < Tile; t += 2)
                            {
                                TV.Dot4x2(qp[i], qp[i + 1], qp[i + 2], qp[i + 3], rows[t], rows[t + 1], d, dots);
                                for (int j = 0; j < 4; j++)
                                {
                                    logits[(i + j) * Tile + t] = Logit(ref s, dots[j], slopeOf[i + j] * (d0 + t));
                                    logits[(i + j) * Tile + t + 1] = Logit(ref s, dots[4 + j], slopeOf[i + j] * (d0 + t + 1));
                                }
                            }
                        for (; i < ie; i++)
                            for (int t = 0; t < Tile; t++) logits[i * Tile + t] = Logit(ref s, TV.Dot(qp[i], rows[t], d), slopeOf[i] * (d0 + t));
                        // Mask: tokens past the page, outside this row's causal/window range, or excluded by the custom mask.
                        for (int t = 0; t < Tile; t++)
                        {
                            int key = k0 + t;
                            if (t < tn && key >= klo && key < khi && Kept(ref s, it.QueryRow + r, key)) continue;
                            for (int j = r * perRow + kk * gh; j < ie; j++) logits[j * Tile + t] = float.NegativeInfinity;
                        }
                    }
                }

                // 2. online softmax per query: raise the max once per tile (rescaling only then), p = e^(logit − max).
                for (int i = 0; i < nq; i++)
                {
                    float* li = logits + i * Tile;
                    float tmax = TV.Max16(li); // may skip a NaN lane: its e^(NaN) below still makes the sum NaN
                    if (tmax > m[i])
                    {
                        if (l[i] > 0)
                        {
                            float f = SoftmaxExp.Weight(m[i] - tmax);
                            TV.Scale(acc[i], f, d);
                            l[i] *= f;
                        }
                        m[i] = tmax;
                    }
                    l[i] += TV.ExpShift16(li, SoftmaxExp.Shift(m[i]));
                }

                // 3. acc[i] += Σ_t p[i, t]·v_t: per kv head, the tile's V rows are widened once, then four queries at a time
                //    accumulate across the row's own tokens (a −∞ logit's weight 0 still multiplies its row, as in the oracle).
                for (int kk = 0; kk < nkv; kk++)
                {
                    for (int t = 0; t < Tile; t++)
                    {
                        int key = k0 + t;
                        rows[t] = t < tn && key >= minLo && key < maxHi
                            ? Widen<TV>(ref s, s.V, s.VScale, s.VZero, pageRow + (long)(t0 + t) * s.TokenStride + (long)kk * s.HeadStride, it.KvHead + kk, tile + t * 256)
                            : zero;
                    }
                    for (int r = 0; r < it.QueryRows; r++)
                    {
                        int i = r * perRow + kk * gh, ie = i + gh;
                        // This row's tokens only: a token masked for it (past the page, or outside its causal/window range) is
                        // never read, so its V cannot leak a NaN through a zero weight.
                        int rl = Math.Max(lo[i] - k0, 0), rh = Math.Min(hi[i] - k0, tn);
                        if (rl >= rh) continue;
                        float** rr = rows;
                        if (s.MaskWords != null)
                        {
                            // Keys the custom mask excludes for this row read the zero row instead.
                            for (int t = 0; t < Tile; t++) rowsMasked[t] = t >= rl && t < rh && !Kept(ref s, it.QueryRow + r, k0 + t) ? zero : rows[t];
                            rr = rowsMasked;
                        }
                        for (; i + 4 <= ie; i += 4)
                            TV.Accumulate4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3],
                                logits + i * Tile, logits + (i + 1) * Tile, logits + (i + 2) * Tile, logits + (i + 3) * Tile, rr, d, rl, rh);
                        for (; i < ie; i++) TV.Accumulate1(acc[i], logits + i * Tile, rr, d, rl, rh);
                    }
                }
            }
        }

        for (int r = 0; r < it.QueryRows; r++)
            for (int kk = 0; kk < nkv; kk++)
                for (int hh = 0; hh < gh; hh++)
                {
                    int i = r * perRow + kk * gh + hh;
                    int head = (it.KvHead + kk) * s.Group + it.GroupHead + hh;
                    long qRow = (long)(it.QueryRow + r) * s.QoHeads + head;
                    float* dst = it.PartialSlot < 0 ? s.Out + qRow * d : s.Work + s.PartialOut + ((long)(it.PartialSlot + r) * s.QoHeads + head) * d;
                    float lse;
                    if (l[i] != 0) // > 0, or NaN (a NaN or +∞ logit): NaN output and lse, as the oracle
                    {
                        TV.Scale(acc[i], 1f / l[i], d);
                        new ReadOnlySpan<float>(acc[i], d).CopyTo(new Span<float>(dst, d));
                        lse = m[i] + MathF.Log(l[i]);
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

    /// <summary>dst[i] = table[src[i]]·scale (fp8: the code's exact value times the head's scale, or 1) for n bytes.</summary>
    private static void WidenByTable(byte* src, ReadOnlySpan<float> table, float scale, float* dst, int n)
    {
        for (int i = 0; i < n; i++) dst[i] = table[src[i]] * scale;
    }

    /// <summary>Row <paramref name="r"/>'s query position: bottom-right aligned in its request, or given per row (a cascade's shared level).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int QueryPosition(ref State s, AttentionWorkItem it, int r) =>
        s.RowPosition != null ? s.RowPosition[it.QueryRow + r] : it.MaskKvLen - it.MaskQoLen + it.MaskQuery + r;

    /// <summary>Whether the custom mask (if any) keeps key <paramref name="key"/> for query row <paramref name="row"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Kept(ref State s, int row, int key) =>
        s.MaskWords == null || ((s.MaskWords[s.MaskRowWord[row] + (key >> 5)] >> (key & 31)) & 1) != 0;

    /// <summary><c>c·tanh((sm_scale·dot + bias) / c)</c> with a soft cap, else <c>sm_scale·dot + bias</c> (bias: ALiBi's, or 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Logit(ref State s, float dot, float bias)
    {
        float x = s.SmScale * dot + bias;
        return s.SoftCap > 0 ? s.SoftCap * MathF.Tanh(x / s.SoftCap) : x;
    }

    /// <summary>Returns row <paramref name="r"/> as fp32: the row itself for fp32 caches, else widened into <paramref name="scratch"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Widen<TV>(ref State s, byte* data, float* scale, float* zero, long r, int kvHead, float* scratch)
        where TV : struct, IAttentionSimd<TV>
    {
        byte* src = data + r * s.RowBytes;
        switch (s.DType)
        {
            case DType.F32: return (float*)src;
            case DType.F16: TV.WidenF16((ushort*)src, scratch, s.HeadDim); break;
            case DType.BF16: TV.WidenBf16((ushort*)src, scratch, s.HeadDim); break;
            case DType.I8: TV.WidenI8((sbyte*)src, s.PerHeadScale ? scale[kvHead] : scale[r], scratch, s.HeadDim); break;
            case DType.F8E4M3: WidenByTable(src, Float8.E4M3Values, s.PerHeadScale ? scale[kvHead] : 1f, scratch, s.HeadDim); break;
            case DType.F8E5M2: WidenByTable(src, Float8.E5M2Values, s.PerHeadScale ? scale[kvHead] : 1f, scratch, s.HeadDim); break;
            default: TV.WidenI4(src, scale[r], zero[r], scratch, s.HeadDim); break;
        }
        return scratch;
    }
}
