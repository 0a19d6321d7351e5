using Kernels.Attention.Masks;
using Kernels.Attention.Paging;

namespace Kernels.Attention.Planning;

/// <summary>Builds <see cref="PrefillPlan"/>s for ragged paged prefill and for block-sparse attention.</summary>
public static class PrefillPlanner
{
    /// <summary>Plans batch prefill: request <c>i</c> has queries <c>[qoIndptr[i], qoIndptr[i+1])</c> (the last <c>qo_len</c>
    /// positions of its <c>kv_len</c> keys) and the pages of <paramref name="table"/>.</summary>
    /// <param name="qoIndptr"><c>batch + 1</c> query offsets: starts at 0, non-decreasing.</param>
    /// <param name="table">Pages of each request.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="numPages">Pages of the pool (every page id is checked against it).</param>
    /// <param name="options">Scale, soft cap, window, causal; null for the defaults.</param>
    /// <param name="customMask">An element-wise (query, key) mask ANDed with the options' causal/window masks (FlashInfer's
    /// <c>custom_mask</c>, which replaces causal: pass <c>Causal = false</c> for that), made for the same query offsets and the
    /// table's key lengths; null for none.</param>
    /// <param name="workspace">Workspace for split-KV partial states (grown as needed), or null never to split.</param>
    /// <param name="targetItems">How many work items split-KV aims at (≥ 1), as for <see cref="DecodePlanner.Plan"/>: pass the
    /// backend's <see cref="IPagedAttentionOps.DecodeTargetItems"/>. A plan that already has this many items is not split.</param>
    /// <param name="fixedChunkPages">Force this chunk size in pages (≥ 1; FlashInfer's <c>fixed_split_size</c>), or null.
    /// Needs <paramref name="workspace"/>.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">qoIndptr is malformed or disagrees with the table, its query rows × qo_heads ×
    /// head_dim exceed <see cref="int.MaxValue"/> (the largest span of q or output), a page id is past the pool, a
    /// request does not fit the <see cref="AttentionOptions.Rope"/> table (kv_len past it, or qo_len &gt; kv_len), an option is
    /// out of range, the custom mask was made for other query or key lengths, or a split option is out of range.</exception>
    public static PrefillPlan Plan(ReadOnlySpan<int> qoIndptr, PageTable table, AttentionShape shape, int numPages, AttentionOptions? options = null,
        CustomMask? customMask = null, AttentionWorkspace? workspace = null, int targetItems = DecodePlanner.TargetItems, int? fixedChunkPages = null) =>
        PlanRequests(qoIndptr, table, shape, numPages, options, customMask, bottomRightRows: true, SplitRequest.Checked(workspace, targetItems, fixedChunkPages));

    /// <summary>A cascade's shared level: the rows' positions are set afterwards (<see cref="AttentionPlan.RowPosition"/>), so
    /// the bottom-right alignment that the RoPE position check and the split's key ranges assume does not apply.</summary>
    internal static PrefillPlan PlanLevel(ReadOnlySpan<int> qoIndptr, PageTable table, AttentionShape shape, int numPages, AttentionOptions options,
        AttentionWorkspace workspace, int targetItems) =>
        PlanRequests(qoIndptr, table, shape, numPages, options, null, bottomRightRows: false, SplitRequest.Checked(workspace, targetItems, null));

    private static PrefillPlan PlanRequests(ReadOnlySpan<int> qoIndptr, PageTable table, AttentionShape shape, int numPages, AttentionOptions? options,
        CustomMask? customMask, bool bottomRightRows, SplitRequest split)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numPages);
        options ??= AttentionOptions.Default;
        options.Validate(shape);
        table.Validate(numPages);
        int batch = table.BatchSize;
        ThrowHelper.ThrowIfLengthMismatch(nameof(qoIndptr), qoIndptr.Length, batch + 1);
        ThrowHelper.ThrowIfNotOffsets(nameof(qoIndptr), qoIndptr);
        CheckRows(qoIndptr[batch], shape, nameof(qoIndptr));
        customMask?.CheckMatches(qoIndptr, table, nameof(customMask));
        int ps = table.PageSize;
        var pageIds = table.Indices.ToArray();
        var tokens = new int[pageIds.Length];
        var keyStart = new int[pageIds.Length];
        var tiles = new List<Tile>();
        for (int b = 0; b < batch; b++)
        {
            int p0 = table.Indptr[b], n = table.PageCount(b), kvLen = table.KvLength(b);
            if (bottomRightRows) options.CheckRopePositions(qoIndptr[b + 1] - qoIndptr[b], kvLen, b, nameof(qoIndptr));
            for (int j = 0; j < n; j++)
            {
                tokens[p0 + j] = j == n - 1 ? table.LastPageLen[b] : ps;
                keyStart[p0 + j] = j * ps;
            }
            AddTiles(tiles, shape, qoIndptr[b], qoIndptr[b + 1] - qoIndptr[b], 0, qoIndptr[b + 1] - qoIndptr[b], kvLen, p0, p0 + n,
                split.Workspace is not null);
        }
        var (items, layout, chunk) = MakeItems(tiles, shape, options, customMask, bottomRightRows, tokens, keyStart, qoIndptr[batch], ps, split);
        var plan = new PrefillPlan(shape, options, ps, table.MaxPageId, qoIndptr[batch], batch, pageIds, tokens, keyStart, items, blockSparse: false,
            customMask, layout, split.Workspace, chunk);
        split.Workspace?.EnsureCapacity(plan.WorkspaceFloats);
        return plan;
    }

    /// <summary>Plans block-sparse attention (FlashInfer's mapping onto paged prefill): the keys live in a cache with page size
    /// <c>C</c> whose page <c>j</c> is key block <c>j</c>; block row <c>i</c> is a request with queries <c>[i·R, min((i+1)·R, M))</c>
    /// and the pages its mask row lists. The options' causal/window mask applies on top with <c>qo_len = M</c>, <c>kv_len = N</c>.</summary>
    /// <param name="mask">The block mask.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="numPages">Pages of the pool (must cover every key block: ≥ <c>ceil(N/C)</c>).</param>
    /// <param name="options">Options; null for the defaults (causal!). Pass <c>Causal = false</c> for a pure block mask.</param>
    /// <param name="elementMask">An element-wise mask inside the blocks (<see cref="BlockSparseMask.ElementMask"/>, or any
    /// <see cref="CustomMask"/> over one request of M queries and N keys), ANDed with the block mask; null for none.</param>
    /// <param name="workspace">Workspace for split-KV partial states (grown as needed), or null never to split: a block row
    /// whose kept blocks hold many pages is cut into chunks when the plan has fewer than <paramref name="targetItems"/> items.</param>
    /// <param name="targetItems">How many work items split-KV aims at (≥ 1); see <see cref="Plan"/>.</param>
    /// <param name="fixedChunkPages">Force this chunk size in key blocks (≥ 1), or null. Needs <paramref name="workspace"/>.</param>
    /// <returns>The plan; q/output rows are the M queries.</returns>
    /// <exception cref="ArgumentException">The pool is smaller than the key blocks, M × qo_heads × head_dim exceeds
    /// <see cref="int.MaxValue"/>, an option is out of range, M &gt; N or N is
    /// past the <see cref="AttentionOptions.Rope"/> table, the element
    /// mask is not M × N, or a split option is out of range.</exception>
    public static PrefillPlan PlanBlockSparse(BlockSparseMask mask, AttentionShape shape, int numPages, AttentionOptions? options = null,
        CustomMask? elementMask = null, AttentionWorkspace? workspace = null, int targetItems = DecodePlanner.TargetItems, int? fixedChunkPages = null)
    {
        ArgumentNullException.ThrowIfNull(mask);
        ArgumentNullException.ThrowIfNull(shape);
        options ??= AttentionOptions.Default;
        options.Validate(shape);
        if (elementMask is not null && (elementMask.Requests != 1 || elementMask.QueryRows != mask.M || elementMask.KvLengths[0] != mask.N))
            ThrowHelper.Argument(nameof(elementMask),
                $"The element mask must be one request of {mask.M} queries × {mask.N} keys; it has {elementMask.Requests} requests, {elementMask.QueryRows} rows.");
        options.CheckRopePositions(mask.M, mask.N, 0, nameof(mask));
        CheckRows(mask.M, shape, nameof(mask));
        var split = SplitRequest.Checked(workspace, targetItems, fixedChunkPages);
        if (numPages < mask.BlockColumns)
            ThrowHelper.Argument(nameof(numPages), $"The pool has {numPages} pages; the mask has {mask.BlockColumns} key blocks of {mask.C}.");
        var pageIds = mask.Indices.ToArray();
        var tokens = new int[pageIds.Length];
        var keyStart = new int[pageIds.Length];
        for (int j = 0; j < pageIds.Length; j++)
        {
            tokens[j] = mask.ColumnLength(pageIds[j]);
            keyStart[j] = pageIds[j] * mask.C;
        }
        var tiles = new List<Tile>();
        for (int i = 0; i < mask.BlockRows; i++)
        {
            int r0 = i * mask.R, rows = Math.Min(mask.R, mask.M - r0);
            AddTiles(tiles, shape, r0, rows, r0, mask.M, mask.N, mask.Indptr[i], mask.Indptr[i + 1], workspace is not null);
        }
        int maxPage = pageIds.Length == 0 ? -1 : pageIds.Max();
        var (items, layout, chunk) = MakeItems(tiles, shape, options, elementMask, bottomRightRows: true, tokens, keyStart, mask.M, mask.C, split);
        var plan = new PrefillPlan(shape, options, mask.C, maxPage, mask.M, mask.BlockRows, pageIds, tokens, keyStart, items, blockSparse: true,
            elementMask, layout, workspace, chunk);
        workspace?.EnsureCapacity(plan.WorkspaceFloats);
        return plan;
    }

    /// <summary>Throws unless <paramref name="rows"/> query rows fit the spans the run takes: q and the output hold
    /// <c>rows·qo_heads·head_dim</c> floats, at most <see cref="int.MaxValue"/>. A plan for more could never run, and
    /// planning it would allocate tiles for every row first (a corrupted <c>qoIndptr[^1]</c> of 2³¹ − 1 ran the machine
    /// out of memory in the input fuzz).</summary>
    private static void CheckRows(int rows, AttentionShape shape, string paramName)
    {
        long elements = (long)rows * shape.QoHeads * shape.HeadDim;
        if (elements > int.MaxValue)
            ThrowHelper.Argument(paramName,
                $"{rows} query rows × {shape.QoHeads} heads × head_dim {shape.HeadDim} = {elements} floats of q and of the output; a span holds at most {int.MaxValue}.");
    }

    /// <summary>The caller's split-KV request: a workspace (null: never split), the item target and a forced chunk size.</summary>
    private readonly record struct SplitRequest(AttentionWorkspace? Workspace, int TargetItems, int? FixedChunkPages)
    {
        /// <summary>The request, once its values are checked.</summary>
        public static SplitRequest Checked(AttentionWorkspace? workspace, int targetItems, int? fixedChunkPages)
        {
            SplitKvLayout.CheckOptions(targetItems, fixedChunkPages);
            if (fixedChunkPages is not null && workspace is null)
                throw new ArgumentException("fixedChunkPages needs a workspace for the partial states.", nameof(workspace));
            return new SplitRequest(workspace, targetItems, fixedChunkPages);
        }
    }

    /// <summary>A tile of query rows of one request over its page-list entries <c>[PageBegin, PageEnd)</c>; its work items take
    /// <see cref="KvPerItem"/> kv heads and a block of their query heads each.</summary>
    private readonly record struct Tile(int Row, int Rows, int MaskQuery, int MaskQoLen, int MaskKvLen, int PageBegin, int PageEnd, int KvPerItem)
    {
        /// <summary>Work items per chunk of the tile.</summary>
        public int Items(AttentionShape shape, int groupHeads) =>
            (shape.KvHeads + KvPerItem - 1) / KvPerItem * ((shape.GroupSize + groupHeads - 1) / groupHeads);
    }

    private static void AddTiles(List<Tile> tiles, AttentionShape shape, int row0, int rows, int maskQuery0, int maskQoLen, int maskKvLen,
        int pageBegin, int pageEnd, bool splits)
    {
        // Prefill is compute-bound: one kv head per item and as many query rows as fit, so each K/V row feeds many dots. A
        // request of one query row (a decode step in a mixed batch or with a custom mask, block-sparse decode, a one-sequence
        // cascade group) is memory-bound like decode: planned with a workspace, its items take every kv head that fits 64
        // queries, so an NHD page is read front to back once rather than as one strided row per kv head, and split-KV
        // gives the cores their items back. Without a workspace the kv heads stay the parallelism.
        int gh = AttentionPlan.GroupHeadsPerItem(shape);
        int rowsPerTile = Math.Max(1, AttentionPlan.MaxQueriesPerItem / gh);
        int kvPerItem = rows == 1 && splits ? Math.Max(1, AttentionPlan.MaxQueriesPerItem / gh) : 1;
        for (int r = 0; r < rows; r += rowsPerTile)
            tiles.Add(new Tile(row0 + r, Math.Min(rowsPerTile, rows - r), maskQuery0 + r, maskQoLen, maskKvLen, pageBegin, pageEnd, kvPerItem));
    }

    /// <summary>The work items of <paramref name="tiles"/>: one per (tile, kv heads, block of query heads), and with split-KV one
    /// per chunk of the tile's live pages (those some row of the tile keeps a key of) for tiles with more than a chunk.</summary>
    /// <remarks>A plan splits when it has a workspace and either a forced chunk size or fewer items than the target: chunks are
    /// at most <see cref="SplitKvLayout.ChunkPages"/> of the live pages summed over the items (at least 256 tokens), as decode's,
    /// and a tile's chunks are of equal size up to one page.
    /// Page-list entries of a tile are in key order (pages of a request; block-sparse indices strictly increase), so its live
    /// pages are one run of entries. Unsplit tiles keep their whole page range, which the kernels skip through as before.</remarks>
    private static (AttentionWorkItem[] Items, SplitKvLayout? Layout, int ChunkPages) MakeItems(List<Tile> tiles, AttentionShape shape,
        AttentionOptions options, CustomMask? mask, bool bottomRightRows, int[] tokens, int[] keyStart, int queryRows, int pageSize, SplitRequest split)
    {
        int g = shape.GroupSize, gh = AttentionPlan.GroupHeadsPerItem(shape);
        var live = new (int Begin, int End)[tiles.Count];
        long pageWork = 0, baseItems = 0;
        for (int t = 0; t < tiles.Count; t++)
        {
            live[t] = LivePages(tiles[t], options, mask, bottomRightRows, tokens, keyStart);
            int n = tiles[t].Items(shape, gh);
            pageWork += (long)(live[t].End - live[t].Begin) * n;
            baseItems += n;
        }
        SplitKvLayout? layout = split.Workspace is null ? null : new SplitKvLayout(queryRows);
        int chunk = int.MaxValue;
        if (layout is not null && (split.FixedChunkPages is not null || baseItems < split.TargetItems))
            chunk = split.FixedChunkPages ?? SplitKvLayout.ChunkPages(pageWork, split.TargetItems, pageSize);
        var items = new List<AttentionWorkItem>((int)Math.Min(baseItems, 1 << 20));
        bool anySplit = false;
        for (int t = 0; t < tiles.Count; t++)
        {
            var tile = tiles[t];
            int n = live[t].End - live[t].Begin;
            int chunks = n > chunk ? (int)(((long)n + chunk - 1) / chunk) : 1;
            int size = (int)(((long)n + chunks - 1) / chunks); // balanced: 133 pages in chunks of ≤ 129 are 67 + 66, not 129 + 4
            int first = chunks > 1 ? layout!.Reserve(tile.Row, tile.Rows, chunks) : -1;
            anySplit |= chunks > 1;
            for (int c = 0; c < chunks; c++)
            {
                int pb = tile.PageBegin, pe = tile.PageEnd, slot = -1;
                if (chunks > 1)
                {
                    pb = live[t].Begin + c * size;
                    pe = (int)Math.Min(live[t].End, (long)pb + size);
                    slot = first + c * tile.Rows;
                }
                for (int kh = 0; kh < shape.KvHeads; kh += tile.KvPerItem)
                    for (int h = 0; h < g; h += gh)
                        items.Add(new AttentionWorkItem(tile.Row, tile.Rows, tile.MaskQuery, tile.MaskQoLen, tile.MaskKvLen, kh,
                            Math.Min(tile.KvPerItem, shape.KvHeads - kh), h, Math.Min(gh, g - h), pb, pe, slot));
            }
        }
        return ([.. items], layout, anySplit ? chunk : 0);
    }

    /// <summary>The run of a tile's page-list entries that hold a key some row of the tile keeps (causal/window for
    /// bottom-right aligned rows, and the custom mask's first and last kept key per row); the whole range for a cascade
    /// level, whose row positions are set later.</summary>
    private static (int Begin, int End) LivePages(Tile tile, AttentionOptions options, CustomMask? mask, bool bottomRightRows, int[] tokens, int[] keyStart)
    {
        if (!bottomRightRows) return (tile.PageBegin, tile.PageEnd);
        long lo = long.MaxValue, hi = long.MinValue;
        for (int r = 0; r < tile.Rows; r++)
        {
            var (start, end) = AttentionMask.KeyRange(tile.MaskQuery + r, tile.MaskQoLen, tile.MaskKvLen, options.Causal, options.WindowLeft);
            if (mask is not null)
            {
                start = Math.Max(start, mask.RowLo[tile.Row + r]);
                end = Math.Min(end, mask.RowHi[tile.Row + r]);
            }
            if (start >= end) continue;
            lo = Math.Min(lo, start);
            hi = Math.Max(hi, end);
        }
        int b = tile.PageBegin, e = tile.PageEnd;
        if (lo >= hi) return (b, b);
        while (b < e && keyStart[b] + tokens[b] <= lo) b++;
        while (e > b && keyStart[e - 1] >= hi) e--;
        return (b, e);
    }
}
