using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

// ILGPU emits launchers in a dynamic assembly named ILGPURuntime; it must see the internal argument struct below.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("ILGPURuntime")]

namespace Kernels.Gpu.Attention;

/// <summary>Geometry and options of one attention launch (offsets into the packed metadata and scale views).</summary>
internal struct AttentionLaunchArgs
{
    public long PageStride, PartialOut, PartialLse;
    public int TokenStride, HeadStride, RowBytes, HeadDim, QoHeads, Group, DType, PerHeadScale, Causal, WindowLeft, WriteLse, KeepEmpty;
    public float SmScale, SoftCap;
    // Offsets in the int metadata view.
    public int ItemsOffset, PageIdsOffset, PageTokensOffset, PageKeyOffset, UnitsOffset, UnitCount, SplitOffset, SplitRows, PageCapacity;
    // Custom mask (−1 without one): per query row (word offset, first kept key, one past the last), and the row-aligned bits.
    public int MaskRowOffset, MaskWordsOffset;
    // ALiBi slopes per query head as float bits in the metadata (−1 without).
    public int AlibiOffset;
    // Per query row, the query's key position (a cascade's shared levels; −1: bottom-right aligned per item).
    public int RowPosOffset;
    // Attention sinks per query head as float bits (−1 without).
    public int SinkOffset;
    // Offsets in the float scale view.
    public int KScaleOffset, VScaleOffset, KZeroOffset, VZeroOffset;
    // Unit tile: warp w serves query head h0 + w % UnitHeads of query row r0 + w / UnitHeads (Warps = UnitHeads · UnitRows).
    public int UnitHeads, UnitRows, Warps;
    // In-kernel RoPE (AttentionOptions.Rope): rotary_dim (0 = off), GPT-J pairs, and the positions the device table covers.
    public int RopeRotary, RopeInterleaved, RopeMaxPositions;
}

/// <summary>ILGPU paged attention: one thread group per unit, a tile of (query row, query head) pairs of one work item and one
/// kv head (up to 16 pairs: a decode row's query heads of that kv head, or for prefill its rows × those heads), streams
/// the item's pages in chunks of tokens staged in shared memory once for the whole tile.</summary>
/// <remarks>
/// <para>Per chunk (32 tokens for head_dim ≤ 128, else 16) the group's threads load the chunk's live K and V rows with
/// coalesced 4-byte loads, eight in flight per thread, dequantize them exactly as <c>PagedKvCache.ReadKey</c> into shared
/// memory (bank-conflict-free stores; K rows padded to <c>d + KeyLanes(d)</c> floats), and every warp then serves one
/// (query row, query head) pair from the same rows: <see cref="KeyLanes"/> lanes share each key's dot product with the
/// query held in registers, lane t ends with token t's, a warp reduction gives the chunk's maximum and
/// the online softmax runs once per chunk (one rescale of the accumulator, not one per token), and lanes accumulate
/// <c>Σ p_t·v_t</c> for their <c>d/32</c> dimensions from the staged V rows. So each K/V byte is read from memory once per
/// tile, not once per query head (GQA) and, for prefill, not once per query row: the query rows × group heads of a tile are
/// flattened into its warps as FlashInfer fuses GQA heads into the rows of a prefill tile. The staged keys are the union of
/// the tile rows' causal/window ranges; each warp weighs only its own row's keys (a key outside them is skipped, not
/// multiplied by 0, so an Inf/NaN V row of another row's key cannot reach it). Masked or excluded tokens are never loaded
/// (their rows are zero in shared memory). Non-finite values follow <c>AttentionReference</c>'s rule: the running maximum
/// shifts logits only once finite, weights below 2⁻¹²⁶ are 0, and a NaN normaliser gives NaN output and lse.</para>
/// <para>Work items come from the same plans as the CPU (<c>DecodePlanner</c>, <c>PrefillPlanner</c>): split-KV partials go
/// to the workspace and a second kernel merges them in chunk order. Not done: asynchronous copies overlapping the next
/// chunk's loads with this chunk's arithmetic, 16-byte loads, tensor cores.</para>
/// </remarks>
internal static class PagedAttentionKernels
{
    /// <summary>The largest group a launch uses (16 warps): the kernel is compiled for it (PTX <c>.maxntid</c>), so the
    /// register allocator keeps within the 128 registers per thread a 512-thread group may have.</summary>
    public const int MaxGroupThreads = 512;

    public const int ItemInts = 12; // QueryRow, QueryRows, MaskQuery, MaskQoLen, MaskKvLen, KvHead, KvHeads, GroupHead, GroupHeads, PageBegin, PageEnd, PartialSlot

    /// <summary>Ints per unit in the metadata: item index, first query row in the item, kv head in the item, first group head.</summary>
    public const int UnitInts = 4;

    /// <summary>Shared floats: K chunk [T][d + <see cref="KeyLanes"/>], V chunk [T][d], queries [pairs][d]: 10,496 floats
    /// (41 KB, under the 48 KB of static shared memory), enough for 16 pairs up to head_dim 128 (T = 32) and 8 pairs at
    /// head_dim 256 (T = 16).</summary>
    public const int SharedFloats = 32 * (2 * 128 + 8) + 16 * 128;

    /// <summary>Lanes that share one key's dot product in the logit pass at head_dim <paramref name="d"/> (a multiple of 32):
    /// the smallest power of two that leaves each lane at most 16 query elements (2 at d = 32, 8 at d = 128, 16 at d = 256).
    /// K rows are padded to <c>d + KeyLanes</c> floats, so the 32 / KeyLanes keys a warp reads at once fall in different banks.</summary>
    public static int KeyLanes(int d)
    {
        int lanes = 2;
        while (lanes * 16 < d) lanes *= 2;
        return lanes;
    }

    /// <summary>Tokens per chunk for head_dim <paramref name="d"/>: 32 up to 128, else 16 (the shared-memory budget).</summary>
    public static int ChunkTokens(int d) => d <= 128 ? 32 : 16;

    /// <summary>The most (query row, query head) pairs, one warp each, a unit may hold at head_dim <paramref name="d"/>: 16,
    /// fewer where the staged chunk and queries would pass <see cref="SharedFloats"/>.</summary>
    public static int MaxWarps(int d)
    {
        int t = ChunkTokens(d);
        return Math.Min(MaxGroupThreads / 32, (SharedFloats - t * (2 * d + KeyLanes(d))) / d);
    }

    /// <summary>One unit per group (grid = the plan's units, <c>32 · a.Warps</c> threads): writes its pairs' outputs and
    /// lse, or split-KV partials to <paramref name="work"/>.</summary>
    public static void Attend(ArrayView<float> q, ArrayView<float> output, ArrayView<float> lse, ArrayView<float> work,
        ArrayView<byte> k, ArrayView<byte> v, ArrayView<float> scales, ArrayView<int> meta, ArrayView<float> rope, AttentionLaunchArgs a)
    {
        var sh = SharedMemory.Allocate<float>(SharedFloats);
        var rowOf = SharedMemory.Allocate<long>(32); // chunk token → K/V row index, −1 when not staged
        var keyOf = SharedMemory.Allocate<int>(32);  // chunk token → key position, −1 when not staged
        var tokenScale = SharedMemory.Allocate<float>(4 * 32); // per-token K scale, V scale, K zero, V zero (int8 / int4)
        int threads = Group.DimX, tid = Group.IdxX, warp = tid / 32, lane = tid % 32;
        int ub = a.UnitsOffset + Grid.IdxX * UnitInts;
        int itemIndex = meta[ub], r0 = meta[ub + 1], kk = meta[ub + 2], h0 = meta[ub + 3];
        int ib = a.ItemsOffset + itemIndex * ItemInts;
        int queryRow = meta[ib], queryRows = meta[ib + 1], maskQuery = meta[ib + 2], maskQoLen = meta[ib + 3], maskKvLen = meta[ib + 4];
        int kvHead = meta[ib + 5] + kk, kvHeads = meta[ib + 6], groupHead = meta[ib + 7], groupHeads = meta[ib + 8];
        int pageBegin = meta[ib + 9], pageEnd = meta[ib + 10], slot = meta[ib + 11];
        int heads = XMath.Min(a.UnitHeads, groupHeads - h0), rows = XMath.Min(a.UnitRows, queryRows - r0);
        int d = a.HeadDim, per = d / 32, tokensPerChunk = ChunkTokens(d), keyLanes = KeyLanes(d), kRow = d + keyLanes;
        int vBase = tokensPerChunk * kRow, qBase = vBase + tokensPerChunk * d;

        // This warp's pair, and the key ranges: its own row's, and the union over the tile's rows that is staged.
        int wh = warp % a.UnitHeads, wr = warp / a.UnitHeads;
        bool active = wh < heads && wr < rows;
        int r = r0 + XMath.Min(wr, rows - 1);
        RowRange(a, meta, queryRow, r, maskQuery, maskQoLen, maskKvLen, out int queryPos, out int lo, out int hi);
        int head = kvHead * a.Group + groupHead + h0 + XMath.Min(wh, heads - 1); // idle warps read a real head's slope
        float slope = a.AlibiOffset >= 0 ? Interop.IntAsFloat((uint)meta[a.AlibiOffset + head]) : 0f;
        int maskWord = a.MaskRowOffset >= 0 ? a.MaskWordsOffset + meta[a.MaskRowOffset + 3 * (queryRow + r)] : 0;
        int unionLo, unionHi;
        if (a.MaskRowOffset < 0 && a.RowPosOffset < 0)
        {
            // Bottom-right aligned rows: both ends are non-decreasing in the row, so the first and last rows bound the tile.
            RowRange(a, meta, queryRow, r0, maskQuery, maskQoLen, maskKvLen, out int _, out unionLo, out int _);
            RowRange(a, meta, queryRow, r0 + rows - 1, maskQuery, maskQoLen, maskKvLen, out int _, out int _, out unionHi);
        }
        else
        {
            // Custom masks and given row positions (a cascade's shared level): the union row by row.
            unionLo = int.MaxValue;
            unionHi = int.MinValue;
            for (int i = 0; i < rows; i++)
            {
                RowRange(a, meta, queryRow, r0 + i, maskQuery, maskQoLen, maskKvLen, out int _, out int rl, out int rh);
                if (rl < rh)
                {
                    unionLo = XMath.Min(unionLo, rl);
                    unionHi = XMath.Max(unionHi, rh);
                }
            }
        }

        // The unit's queries, staged once: pair w's row at qBase + w·d (zeros for idle warps).
        for (int i = tid; i < a.Warps * d; i += threads)
        {
            int w = i / d, pr = w / a.UnitHeads, ph = w % a.UnitHeads;
            long qr = (long)(queryRow + r0 + pr) * a.QoHeads + (long)kvHead * a.Group + groupHead + h0 + ph;
            sh[qBase + i] = ph < heads && pr < rows ? q[qr * d + i % d] : 0f;
        }
        if (a.RopeRotary > 0)
        {
            // In-kernel RoPE: each staged query row rotated at its row's position (one thread per pair).
            Group.Barrier();
            int halfR = a.RopeRotary / 2;
            for (int i = tid; i < a.Warps * halfR; i += threads)
            {
                int w = i / halfR, pr = XMath.Min(w / a.UnitHeads, rows - 1);
                RowRange(a, meta, queryRow, r0 + pr, maskQuery, maskQoLen, maskKvLen, out int position, out int _, out int _);
                RotatePair(sh, qBase + w * d, i % halfR, rope, position, a);
            }
        }

        // This lane's slice of its pair's query for the logits: elements sub + keyLanes·i (see KeyDot).
        Group.Barrier(); // the staged (and rotated) queries are complete
        int sub = lane % keyLanes;
        var qs = QuerySlice.Load(sh, qBase + warp * d + sub, keyLanes, d / keyLanes);

        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        float m = float.NegativeInfinity, l = 0;
        int cap = a.PageCapacity;
        int positions = (pageEnd - pageBegin) * cap; // item token j = list entry pageBegin + j / cap, slot j % cap
        for (int j0 = 0; j0 < positions; j0 += tokensPerChunk)
        {
            // Skip a chunk none of whose pages is live, as every thread decides alike (no memory of it is touched).
            int e0 = pageBegin + j0 / cap, e1 = pageBegin + (XMath.Min(j0 + tokensPerChunk, positions) - 1) / cap;
            bool any = false;
            for (int e = e0; e <= e1; e++)
            {
                int key0 = meta[a.PageKeyOffset + e], n = meta[a.PageTokensOffset + e];
                if (n > 0 && key0 < unionHi && key0 + n > unionLo) any = true;
            }
            if (!any) continue;

            Group.Barrier(); // the previous chunk's readers are done with the shared rows
            if (tid < tokensPerChunk)
            {
                int j = j0 + tid;
                long row = -1;
                int staged = -1;
                if (j < positions)
                {
                    int e = pageBegin + j / cap, t = j % cap;
                    int key = meta[a.PageKeyOffset + e] + t;
                    if (t < meta[a.PageTokensOffset + e] && key >= unionLo && key < unionHi)
                    {
                        row = meta[a.PageIdsOffset + e] * a.PageStride + (long)kvHead * a.HeadStride + (long)t * a.TokenStride;
                        staged = key;
                    }
                }
                rowOf[tid] = row;
                keyOf[tid] = staged;
                if (a.DType == 4 || (a.DType == 3 && a.PerHeadScale == 0))
                {
                    // Per-token scales (and int4 zero points) read here, once per token and in parallel, rather than by
                    // every word's conversion after its load (a dependent round trip per word batch).
                    bool i4 = a.DType == 4;
                    tokenScale[tid] = row < 0 ? 0f : scales[a.KScaleOffset + row];
                    tokenScale[32 + tid] = row < 0 ? 0f : scales[a.VScaleOffset + row];
                    tokenScale[64 + tid] = row < 0 || !i4 ? 0f : scales[a.KZeroOffset + row];
                    tokenScale[96 + tid] = row < 0 || !i4 ? 0f : scales[a.VZeroOffset + row];
                }
            }
            Group.Barrier();
            StageKv(k, v, scales, tokenScale, a, rowOf, sh, kRow, vBase, kvHead, tid, threads, tokensPerChunk);
            Group.Barrier();
            if (a.RopeRotary > 0)
            {
                // In-kernel RoPE: each staged key rotated at its position (one thread per pair; rows not staged stay zero).
                int halfR = a.RopeRotary / 2;
                for (int i = tid; i < tokensPerChunk * halfR; i += threads)
                {
                    int t = i / halfR;
                    if (keyOf[t] >= 0) RotatePair(sh, t * kRow, i % halfR, rope, keyOf[t], a);
                }
                Group.Barrier();
            }
            if (!active) continue;

            // Logits: lane t ends with the dot product of chunk token t (KeyDot); it is a logit if the token is one of this
            // row's keys. Then the chunk's online-softmax step.
            float dot = KeyDot(sh, qs, kRow, keyLanes, d / keyLanes, sub, lane, tokensPerChunk);
            int myKey = lane < tokensPerChunk ? keyOf[lane] : -1;
            bool live = myKey >= lo && myKey < hi; // lo ≥ 0, so a token not staged (−1) is not live
            if (live && a.MaskRowOffset >= 0) live = ((meta[maskWord + (myKey >> 5)] >> (myKey & 31)) & 1) != 0;
            float logit = float.NegativeInfinity;
            if (live)
            {
                float x = a.SmScale * dot;
                if (a.AlibiOffset >= 0) x += slope * (myKey - queryPos);
                logit = a.SoftCap > 0 ? a.SoftCap * Tanh(x / a.SoftCap) : x;
            }
            float mNew = XMath.Max(m, WarpMax(logit));
            float f = l > 0 ? Weight(m - mNew) : 0f;
            // While every logit so far is −∞ the shift is 0, so they weigh e^(−∞) = 0, not NaN (AttentionReference's rule:
            // a −∞ logit weighs 0 and still multiplies its V row). Tokens that are not this row's keys are skipped below.
            float p = live ? Weight(logit - (mNew == float.NegativeInfinity ? 0f : mNew)) : 0f;
            l = l * f + WarpSum(p);
            m = mNew;
            a0 *= f; a1 *= f; a2 *= f; a3 *= f; a4 *= f; a5 *= f; a6 *= f; a7 *= f;
            float pLive = live ? p : -1f; // −1: not this row's key (a weight is ≥ 0 or NaN)
            for (int t = 0; t < tokensPerChunk; t++)
            {
                float pt = Warp.Shuffle(pLive, t); // the same for the whole warp: a uniform branch
                if (pt < 0f) continue;
                int vb = vBase + t * d + lane;
                a0 += pt * sh[vb];
                if (per > 1) a1 += pt * sh[vb + 32];
                if (per > 2) a2 += pt * sh[vb + 64];
                if (per > 3) a3 += pt * sh[vb + 96];
                if (per > 4) a4 += pt * sh[vb + 128];
                if (per > 5) a5 += pt * sh[vb + 160];
                if (per > 6) a6 += pt * sh[vb + 192];
                if (per > 7) a7 += pt * sh[vb + 224];
            }
        }
        if (!active) return;

        long qRow = (long)(queryRow + r) * a.QoHeads + head;
        // No weight (no live key, or every logit −∞): output 0 and lse −∞; a split chunk keeps 0·Σ v_j instead (0, or NaN
        // from an Inf/NaN V row of a −∞-logit key), which the merge carries on as the unsplit oracle's 0·NaN. A NaN sum (a
        // NaN or +∞ logit) gives NaN output and lse, as in the oracle.
        bool weighted = l != 0;
        bool partialSlot = slot >= 0;
        float inv = weighted ? 1f / l : 0f;
        if (!weighted && !partialSlot && a.KeepEmpty == 0) a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0;
        float outLse = weighted ? m + XMath.Log(l) : float.NegativeInfinity;
        long rowSlot = slot + (long)r; // SplitKvLayout: row r of the item's tile goes to the item's slot + r
        long ob = partialSlot ? a.PartialOut + (rowSlot * a.QoHeads + head) * d + lane : qRow * d + lane;
        var dst = partialSlot ? work : output;
        dst[ob] = a0 * inv;
        if (per > 1) dst[ob + 32] = a1 * inv;
        if (per > 2) dst[ob + 64] = a2 * inv;
        if (per > 3) dst[ob + 96] = a3 * inv;
        if (per > 4) dst[ob + 128] = a4 * inv;
        if (per > 5) dst[ob + 160] = a5 * inv;
        if (per > 6) dst[ob + 192] = a6 * inv;
        if (per > 7) dst[ob + 224] = a7 * inv;
        if (lane == 0)
        {
            if (partialSlot) work[a.PartialLse + rowSlot * a.QoHeads + head] = outLse;
            else if (a.WriteLse != 0) lse[qRow] = outLse;
        }
    }

    /// <summary>Rotates pair <paramref name="j"/> of the shared row at <paramref name="row"/> with the table's cos/sin at
    /// <paramref name="position"/> (pairs (j, j + rotary/2), or (2j, 2j + 1) for GPT-J), as the RoPE kernel does:
    /// <c>x1' = x1·c − x2·s</c>, <c>x2' = x2·c + x1·s</c>. A position outside the table (the planners reject them; a query
    /// of a sequence with no keys has position −1 and meets no key) leaves the pair as it is.</summary>
    private static void RotatePair(ArrayView<float> sh, int row, int j, ArrayView<float> table, int position, AttentionLaunchArgs a)
    {
        if ((uint)position >= (uint)a.RopeMaxPositions) return;
        RopeKernels.PairOffsets(j, a.RopeRotary / 2, a.RopeInterleaved != 0, out int o1, out int o2);
        RopeKernels.Rotate(table, position, a.RopeRotary, j, sh[row + o1], sh[row + o2], out float r1, out float r2);
        sh[row + o1] = r1;
        sh[row + o2] = r2;
    }

    /// <summary>Item row <paramref name="row"/>'s query position (bottom-right aligned in its request, or given per row for a
    /// cascade's shared level) and its kept key range [lo, hi) (<c>AttentionMask.KeyRangeAt</c>), narrowed to the custom
    /// mask's first..last kept key when there is one.</summary>
    private static void RowRange(AttentionLaunchArgs a, ArrayView<int> meta, int queryRow, int row, int maskQuery, int qoLen, int kvLen,
        out int position, out int lo, out int hi)
    {
        position = a.RowPosOffset >= 0 ? meta[a.RowPosOffset + queryRow + row] : kvLen - qoLen + maskQuery + row;
        long hiL = a.Causal != 0 ? XMath.Min((long)kvLen, (long)position + 1) : kvLen;
        long loL = a.WindowLeft >= 0 ? XMath.Max(0L, (long)position - a.WindowLeft) : 0;
        hi = (int)XMath.Max(hiL, 0L);
        lo = (int)XMath.Min(loL, (long)kvLen);
        if (a.MaskRowOffset >= 0)
        {
            int mb = a.MaskRowOffset + 3 * (queryRow + row);
            lo = XMath.Max(lo, meta[mb + 1]);
            hi = XMath.Min(hi, meta[mb + 2]);
        }
    }

    /// <summary>The dot products of a warp's query with the chunk's staged keys, returned to lane t for key t (lanes past the
    /// chunk get 0). <paramref name="keyLanes"/> lanes share a key, each holding <paramref name="n"/> query elements
    /// (<see cref="QuerySlice"/>, registers) and reading the key's elements <c>sub + keyLanes·i</c>; a pass covers
    /// <c>32 / keyLanes</c> keys, whose partial sums are added by a butterfly over the sharing lanes and handed to their
    /// lanes by one shuffle. Per key element this reads one shared-memory word (the 32 / keyLanes keys of a pass sit in
    /// different banks: rows padded to <c>d + keyLanes</c>), where a lane per key also re-read the query for every element,
    /// as a broadcast, until the eleventh session: half the logit pass's shared-memory wavefronts.</summary>
    private static float KeyDot(ArrayView<float> sh, QuerySlice qs, int kRow, int keyLanes, int n, int sub, int lane, int tokens)
    {
        int keysPerPass = 32 / keyLanes, mine = lane / keyLanes;
        float result = 0;
        for (int t0 = 0; t0 < tokens; t0 += keysPerPass)
        {
            float part = qs.Dot(sh, (t0 + mine) * kRow + sub, keyLanes, n);
            for (int o = 1; o < keyLanes; o <<= 1) part += Warp.ShuffleXor(part, o);
            // Lane t takes key t's sum from the first lane of the key's group in this pass.
            float got = Warp.Shuffle(part, ((lane - t0) & (keysPerPass - 1)) * keyLanes);
            if (lane >= t0 && lane < t0 + keysPerPass) result = got;
        }
        return result;
    }

    /// <summary>Loads the chunk's K rows (at 0, <paramref name="kRow"/> floats per token) and V rows (at
    /// <paramref name="vBase"/>, head_dim floats per token) into shared memory, dequantized exactly as
    /// <c>PagedKvCache.ReadKey</c>; rows that are not live (−1 in <paramref name="rowOf"/>) become zeros without being read.
    /// Consecutive threads take consecutive 4-byte words of a row, so a warp reads whole 128-byte lines. Each thread loads
    /// the K and V words of four positions (eight independent loads) before it converts any of them: a loop of load,
    /// convert and store, as until the eleventh session, has one load in flight per thread, and a decode group of 4 warps
    /// then keeps 512 bytes in flight, where HBM's latency needs tens of KB per SM (Little's law) to run at its bandwidth.</summary>
    private static void StageKv(ArrayView<byte> k, ArrayView<byte> v, ArrayView<float> scales, ArrayView<float> tokenScale, AttentionLaunchArgs a,
        ArrayView<long> rowOf, ArrayView<float> sh, int kRow, int vBase, int kvHead, int tid, int threads, int tokens)
    {
        int words = a.RowBytes / 4, d = a.HeadDim;
        var k32 = k.Cast<uint>();
        var v32 = v.Cast<uint>();
        // Position p = t·words + wi, stepped by the group's threads without a division per word (two at the start).
        int t = tid / words, wi = tid % words, stepT = threads / words, stepW = threads % words;
        while (t < tokens)
        {
            int t0 = t, w0 = wi;
            Step(ref t, ref wi, stepT, stepW, words);
            int t1 = t, w1 = wi;
            Step(ref t, ref wi, stepT, stepW, words);
            int t2 = t, w2 = wi;
            Step(ref t, ref wi, stepT, stepW, words);
            int t3 = t, w3 = wi;
            Step(ref t, ref wi, stepT, stepW, words);
            long r0 = rowOf[t0], r1 = t1 < tokens ? rowOf[t1] : -1, r2 = t2 < tokens ? rowOf[t2] : -1, r3 = t3 < tokens ? rowOf[t3] : -1;
            uint k0 = Word(k32, r0, words, w0), v0 = Word(v32, r0, words, w0);
            uint k1 = Word(k32, r1, words, w1), v1 = Word(v32, r1, words, w1);
            uint k2 = Word(k32, r2, words, w2), v2 = Word(v32, r2, words, w2);
            uint k3 = Word(k32, r3, words, w3), v3 = Word(v32, r3, words, w3);
            Put(k0, r0, w0, t0 * kRow, t0, 0, a.KScaleOffset, a, scales, tokenScale, sh, kvHead, d);
            Put(v0, r0, w0, vBase + t0 * d, t0, 32, a.VScaleOffset, a, scales, tokenScale, sh, kvHead, d);
            if (t1 >= tokens) break;
            Put(k1, r1, w1, t1 * kRow, t1, 0, a.KScaleOffset, a, scales, tokenScale, sh, kvHead, d);
            Put(v1, r1, w1, vBase + t1 * d, t1, 32, a.VScaleOffset, a, scales, tokenScale, sh, kvHead, d);
            if (t2 >= tokens) break;
            Put(k2, r2, w2, t2 * kRow, t2, 0, a.KScaleOffset, a, scales, tokenScale, sh, kvHead, d);
            Put(v2, r2, w2, vBase + t2 * d, t2, 32, a.VScaleOffset, a, scales, tokenScale, sh, kvHead, d);
            if (t3 >= tokens) break;
            Put(k3, r3, w3, t3 * kRow, t3, 0, a.KScaleOffset, a, scales, tokenScale, sh, kvHead, d);
            Put(v3, r3, w3, vBase + t3 * d, t3, 32, a.VScaleOffset, a, scales, tokenScale, sh, kvHead, d);
        }
    }

    /// <summary>The next position of a thread's sequence: <paramref name="stepT"/> tokens and <paramref name="stepW"/> words on.</summary>
    private static void Step(ref int t, ref int wi, int stepT, int stepW, int words)
    {
        t += stepT;
        wi += stepW;
        if (wi >= words)
        {
            wi -= words;
            t++;
        }
    }

    /// <summary>Word <paramref name="wi"/> of row <paramref name="row"/>, or 0 for a row that is not live (−1; not read).</summary>
    private static uint Word(ArrayView<uint> data, long row, int words, int wi) => row >= 0 ? data[row * words + wi] : 0u;

    /// <summary>Word <paramref name="wi"/> of a K or V row (<paramref name="bits"/>, read from row <paramref name="row"/> or 0
    /// when it is −1) dequantized into the row's shared-memory floats at <paramref name="o"/>. The elements of a word are
    /// stored in an order rotated by the word's index (for 2-element words, the high one first when bit 4 of the index is
    /// set; for 4-element words, element <c>(j + wi/8) mod 4</c> at step j): consecutive lanes hold consecutive words, so
    /// with the plain order each store would hit every other (or every fourth) bank twice (four times), and this way
    /// each store of a warp hits 32 different banks.</summary>
    private static void Put(uint bits, long row, int wi, int o, int t, int tokenScaleBase, int scaleOffset, AttentionLaunchArgs a,
        ArrayView<float> scales, ArrayView<float> tokenScale, ArrayView<float> sh, int kvHead, int d)
    {
        int r2 = (wi >> 4) & 1, r4 = (wi >> 3) & 3;
        switch (a.DType)
        {
            case 0: // F32
                sh[o + wi] = Interop.IntAsFloat(bits);
                break;
            case 1: // F16
                for (int j = 0; j < 2; j++)
                {
                    int e = j ^ r2;
                    sh[o + 2 * wi + e] = HalfToFloat((bits >> (16 * e)) & 0xFFFF);
                }
                break;
            case 2: // BF16
                for (int j = 0; j < 2; j++)
                {
                    int e = j ^ r2;
                    sh[o + 2 * wi + e] = Interop.IntAsFloat((bits >> (16 * e)) << 16);
                }
                break;
            case 3: // I8: code · scale (per head or per token)
                {
                    float s = row < 0 ? 0f : a.PerHeadScale != 0 ? scales[scaleOffset + kvHead] : tokenScale[tokenScaleBase + t];
                    for (int j = 0; j < 4; j++)
                    {
                        int e = (j + r4) & 3;
                        sh[o + 4 * wi + e] = (sbyte)(byte)(bits >> (8 * e)) * s;
                    }
                    break;
                }
            case 5: // F8E4M3 (times the head's scale, or 1)
                {
                    float s = a.PerHeadScale != 0 && row >= 0 ? scales[scaleOffset + kvHead] : 1f;
                    for (int j = 0; j < 4; j++)
                    {
                        int e = (j + r4) & 3;
                        sh[o + 4 * wi + e] = E4M3ToFloat((bits >> (8 * e)) & 0xFF) * s;
                    }
                    break;
                }
            case 6: // F8E5M2: the top byte of an fp16
                {
                    float s = a.PerHeadScale != 0 && row >= 0 ? scales[scaleOffset + kvHead] : 1f;
                    for (int j = 0; j < 4; j++)
                    {
                        int e = (j + r4) & 3;
                        sh[o + 4 * wi + e] = HalfToFloat(((bits >> (8 * e)) & 0xFF) << 8) * s;
                    }
                    break;
                }
            default: // I4: byte j holds element j (low nibble) and j + d/2 (high nibble); (code − zero) · scale
                {
                    float s = tokenScale[tokenScaleBase + t], z = tokenScale[tokenScaleBase + 64 + t]; // 0 for rows not staged
                    int half = d / 2;
                    for (int j = 0; j < 4; j++)
                    {
                        int e = (j + r4) & 3;
                        uint by = (bits >> (8 * e)) & 0xFF;
                        sh[o + 4 * wi + e] = ((int)(by & 0xF) - z) * s;
                        sh[o + 4 * wi + e + half] = ((int)(by >> 4) - z) * s;
                    }
                    break;
                }
        }
    }

    /// <summary>The int8 query quantization of <c>AttentionOptions.QuantizedQueryDot</c>, dequantized: row
    /// <paramref name="row"/> (head_dim <paramref name="d"/>) of <paramref name="q"/> becomes <c>code·s</c> in
    /// <paramref name="dst"/>, bit for bit as <c>QueryQuantization.Dequantized</c> computes it (<c>s = max|q|/127</c>,
    /// <c>code = clamp(round_half_even(q/s), −127, 127)</c>; a row with NaN or ±Inf becomes NaN, an all-zero row +0). The
    /// attention kernel then takes its dot products with these values, as the CPU paths without integer dot products do.
    /// One thread per row: a decode step has a few thousand rows of ≤ 256 elements.</summary>
    public static void DequantizeQueries(Index1D row, ArrayView<float> q, ArrayView<float> dst, int d)
    {
        long b = (long)(int)row * d;
        float amax = 0;
        int bad = 0;
        for (int i = 0; i < d; i++)
        {
            float a = XMath.Abs(q[b + i]);
            if (!(a <= float.MaxValue)) bad = 1; // NaN or ±Inf: the scale is NaN (a max.f32 reduction would drop a NaN)
            else if (a > amax) amax = a;
        }
        if (bad != 0 || amax == 0)
        {
            float fill = bad != 0 ? float.NaN : 0f; // codes 0 times a NaN scale, or 0 times 0
            for (int i = 0; i < d; i++) dst[b + i] = fill;
            return;
        }
        float s = amax / 127f;
        for (int i = 0; i < d; i++)
        {
            float c = XMath.RoundToEven(q[b + i] / s);
            c = XMath.Clamp(c, -127f, 127f);
            dst[b + i] = (int)c * s; // through int: a code of −0 is 0, as the sbyte code is
        }
    }

    /// <summary>Threads per merged state row: lane i takes elements i, i + 32, …, so a warp reads and writes whole lines.</summary>
    public const int MergeLanes = 32;

    /// <summary>Merges the split-KV partial states of each (query row, head) in one pass (<see cref="MergeLanes"/> threads per row;
    /// chunk c of a row is slot start + c · stride, from the metadata's three ints per row):
    /// with <c>m</c> the largest chunk lse, <c>o = Σ_c w_c·o_c / Σ_c w_c</c>, <c>w_c = e^(lse_c − m)</c> (0 below 2⁻¹²⁶, and 0
    /// for empty chunks, whose values then only add their NaN), <c>lse = m + ln Σ w_c</c>: the pairwise rule of
    /// <c>AttentionState</c> up to rounding, without a thread walking every chunk's row alone. A NaN chunk lse gives NaN; a row
    /// whose chunks are all empty is 0 (or keeps <c>Σ 0·o_c</c> for a cascade level) with lse −∞.</summary>
    public static void Merge(Index1D index, ArrayView<float> output, ArrayView<float> lse, ArrayView<float> work, ArrayView<int> meta, AttentionLaunchArgs a)
    {
        int row = index / MergeLanes, lane = index % MergeLanes;
        int b = row / a.QoHeads, h = row % a.QoHeads;
        int start = meta[a.SplitOffset + 3 * b], n = meta[a.SplitOffset + 3 * b + 1], stride = meta[a.SplitOffset + 3 * b + 2];
        if (n <= 1) return;
        int d = a.HeadDim;
        long o = (long)row * d;
        float mx = float.NegativeInfinity;
        bool nan = false;
        for (int c = 0; c < n; c++)
        {
            float sc = work[a.PartialLse + (start + c * (long)stride) * a.QoHeads + h];
            if (float.IsNaN(sc)) nan = true;
            else if (sc > mx) mx = sc;
        }
        float total = 0;
        for (int c = 0; c < n; c++) total += ChunkWeight(work[a.PartialLse + (start + c * (long)stride) * a.QoHeads + h], mx);
        if (nan) total = float.NaN;
        bool empty = mx == float.NegativeInfinity && !nan;
        float inv = empty ? 1f : 1f / total;
        for (int i = lane; i < d; i += MergeLanes)
        {
            float acc = 0;
            for (int c = 0; c < n; c++)
            {
                long slot = start + c * (long)stride;
                acc += ChunkWeight(work[a.PartialLse + slot * a.QoHeads + h], mx) * work[a.PartialOut + (slot * a.QoHeads + h) * d + i];
            }
            output[o + i] = empty && a.KeepEmpty == 0 ? 0f : acc * inv;
        }
        if (lane == 0 && a.WriteLse != 0) lse[row] = empty ? float.NegativeInfinity : mx + XMath.Log(total);
    }

    /// <summary>A chunk's weight against the largest chunk lse: 0 for an empty chunk (and for all when every chunk is empty),
    /// <see cref="Weight"/> otherwise (NaN for a NaN lse).</summary>
    private static float ChunkWeight(float lseChunk, float max) =>
        lseChunk == float.NegativeInfinity || max == float.NegativeInfinity ? 0f : Weight(lseChunk - max);

    /// <summary>Merges state row <c>index / 32</c> of (other, otherLse) into (v, lse) in place (<c>IPagedAttentionOps.MergeStates</c>,
    /// and the cascade's two levels), <see cref="MergeLanes"/> threads per row; with <paramref name="clearEmpty"/>, a row left
    /// with no weight becomes 0 (a final output, as the oracle's).</summary>
    public static void MergeStates(Index1D index, ArrayView<float> v, ArrayView<float> lse, ArrayView<float> other, ArrayView<float> otherLse, int d, int clearEmpty)
    {
        int row = index / MergeLanes, lane = index % MergeLanes;
        long o = (long)row * d;
        float s = lse[row];
        MergeCoefficients(ref s, otherLse[row], out float ca, out float cb);
        bool clear = clearEmpty != 0 && s == float.NegativeInfinity;
        for (int i = lane; i < d; i += MergeLanes) v[o + i] = clear ? 0f : v[o + i] * ca + other[o + i] * cb;
        Warp.Barrier(); // every lane has read lse[row] before lane 0 replaces it
        if (lane == 0) lse[row] = s;
    }

    /// <summary>Attention sinks on finished states, <see cref="MergeLanes"/> threads per (row, head) state: the merge with
    /// <c>(0, sink_h)</c> (<c>AttentionState.ApplySink</c>), the sinks as float bits at <paramref name="sinkOffset"/> of the
    /// plan metadata.</summary>
    public static void ApplySinks(Index1D index, ArrayView<float> v, ArrayView<float> lse, ArrayView<int> meta, int sinkOffset, int qoHeads, int d)
    {
        int row = index / MergeLanes, lane = index % MergeLanes;
        float s = lse[row];
        MergeCoefficients(ref s, Interop.IntAsFloat((uint)meta[sinkOffset + row % qoHeads]), out float ca, out float _);
        long o = (long)row * d;
        for (int i = lane; i < d; i += MergeLanes) v[o + i] *= ca;
        Warp.Barrier(); // every lane has read lse[row] before lane 0 replaces it
        if (lane == 0) lse[row] = s;
    }

    /// <summary>The coefficients of <c>v·ca + other·cb</c> and the merged lse (in <paramref name="s"/>): <c>AttentionState.MergeInPlace</c>,
    /// step for step (an empty side has weight 0, so only its NaN/Inf values survive).</summary>
    private static void MergeCoefficients(ref float s, float sLse, out float ca, out float cb)
    {
        bool empty = s == float.NegativeInfinity, otherEmpty = sLse == float.NegativeInfinity;
        if (empty || otherEmpty)
        {
            ca = empty ? 0f : 1f;
            cb = otherEmpty ? 0f : 1f;
            if (!otherEmpty) s = sLse;
            return;
        }
        float mx = XMath.Max(s, sLse);
        float wa = Weight(s - mx), wb = Weight(sLse - mx);
        float inv = 1f / (wa + wb);
        ca = wa * inv;
        cb = wb * inv;
        s = mx + XMath.Log(wa + wb);
    }

    /// <summary>fp16 bits → fp32: magnitude shifted into place times 2¹¹² (exact for normals and subnormals), Inf/NaN exponent forced.</summary>
    private static float HalfToFloat(uint h)
    {
        float f = Interop.IntAsFloat((h & 0x7FFF) << 13) * 5.192297e33f; // 2^112
        uint bits = Interop.FloatAsInt(f);
        if ((h & 0x7C00) == 0x7C00) bits |= 0x7F800000;
        return Interop.IntAsFloat(bits | ((h & 0x8000) << 16));
    }

    /// <summary>fp8 E4M3 bits → fp32: magnitude shifted into place times 2¹²⁰ (exact for normals and subnormals), S.1111.111
    /// forced to NaN.</summary>
    private static float E4M3ToFloat(uint b)
    {
        float f = Interop.IntAsFloat((b & 0x7F) << 20) * 1.329228E+36f; // 2^120
        uint bits = Interop.FloatAsInt(f);
        if ((b & 0x7F) == 0x7F) bits |= 0x7F800000;
        return Interop.IntAsFloat(bits | ((b & 0x80) << 24));
    }

    /// <summary>A softmax weight <c>e^x</c> (x ≤ 0): 0 below ln 2⁻¹²⁶, as on the CPU paths and in the oracle (a weight fp32
    /// cannot hold as a normal number is 0, also when it meets an Inf/NaN V row); NaN stays NaN.</summary>
    private static float Weight(float x) => x < Kernels.Attention.Reference.AttentionReference.SmallestWeightExponent ? 0f : XMath.Exp(x);

    /// <summary>tanh y as <c>1 − 2 / (e^(2y) + 1)</c>: within ≈ 1e-7 of tanh y in absolute terms (half the relative error of
    /// the exponential), and exact at ±∞ (±1) and for NaN (NaN). ILGPU compiles <c>XMath.Tanh</c> to PTX
    /// <c>tanh.approx.f32</c>, whose relative error reaches 2⁻¹¹: a soft cap of 50 would then move logits by up to 0.024.</summary>
    private static float Tanh(float y) => 1f - 2f / (XMath.Exp(2f * y) + 1f);

    /// <summary>The sum over the warp's lanes, in every lane.</summary>
    private static float WarpSum(float v)
    {
        for (int offset = 16; offset > 0; offset >>= 1) v += Warp.ShuffleXor(v, offset);
        return v;
    }

    /// <summary>The maximum over the warp's lanes, in every lane.</summary>
    private static float WarpMax(float v)
    {
        for (int offset = 16; offset > 0; offset >>= 1) v = XMath.Max(v, Warp.ShuffleXor(v, offset));
        return v;
    }
}

/// <summary>One lane's share of a query for <c>PagedAttentionKernels.KeyDot</c>: elements <c>sub + keyLanes·i</c> for
/// <c>i &lt; n</c> (n ≤ 16), in registers.</summary>
internal struct QuerySlice
{
    public float Q0, Q1, Q2, Q3, Q4, Q5, Q6, Q7, Q8, Q9, Q10, Q11, Q12, Q13, Q14, Q15;

    /// <summary>Reads the slice from shared memory at <paramref name="b"/> (the query row plus the lane's sub-index).</summary>
    public static QuerySlice Load(ArrayView<float> sh, int b, int step, int n)
    {
        var s = default(QuerySlice);
        s.Q0 = sh[b];
        s.Q1 = sh[b + step];
        s.Q2 = sh[b + 2 * step];
        s.Q3 = sh[b + 3 * step];
        s.Q4 = sh[b + 4 * step];
        s.Q5 = sh[b + 5 * step];
        s.Q6 = sh[b + 6 * step];
        s.Q7 = sh[b + 7 * step];
        s.Q8 = sh[b + 8 * step];
        s.Q9 = sh[b + 9 * step];
        if (n > 10) s.Q10 = sh[b + 10 * step];
        if (n > 11) s.Q11 = sh[b + 11 * step];
        if (n > 12) s.Q12 = sh[b + 12 * step];
        if (n > 13) s.Q13 = sh[b + 13 * step];
        if (n > 14) s.Q14 = sh[b + 14 * step];
        if (n > 15) s.Q15 = sh[b + 15 * step];
        return s;
    }

    /// <summary>Σ_i Q_i · sh[b + step·i] over i &lt; n (n ≥ 10: head_dim is a multiple of 32 and n = d / KeyLanes(d)).</summary>
    public readonly float Dot(ArrayView<float> sh, int b, int step, int n)
    {
        float s = Q0 * sh[b];
        s += Q1 * sh[b + step];
        s += Q2 * sh[b + 2 * step];
        s += Q3 * sh[b + 3 * step];
        s += Q4 * sh[b + 4 * step];
        s += Q5 * sh[b + 5 * step];
        s += Q6 * sh[b + 6 * step];
        s += Q7 * sh[b + 7 * step];
        s += Q8 * sh[b + 8 * step];
        s += Q9 * sh[b + 9 * step];
        if (n > 10) s += Q10 * sh[b + 10 * step];
        if (n > 11) s += Q11 * sh[b + 11 * step];
        if (n > 12) s += Q12 * sh[b + 12 * step];
        if (n > 13) s += Q13 * sh[b + 13 * step];
        if (n > 14) s += Q14 * sh[b + 14 * step];
        if (n > 15) s += Q15 * sh[b + 15 * step];
        return s;
    }
}
