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
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">qoIndptr is malformed or disagrees with the table, a page id is past the pool, a
    /// request does not fit the <see cref="AttentionOptions.Rope"/> table (kv_len past it, or qo_len &gt; kv_len), an option is
    /// out of range, or the custom mask was made for other query or key lengths.</exception>
    public static PrefillPlan Plan(ReadOnlySpan<int> qoIndptr, PageTable table, AttentionShape shape, int numPages, AttentionOptions? options = null,
        CustomMask? customMask = null) => PlanRequests(qoIndptr, table, shape, numPages, options, customMask, bottomRightRows: true);

    /// <summary>A cascade's shared level: the rows' positions are set afterwards (<see cref="AttentionPlan.RowPosition"/>), so
    /// the bottom-right alignment that the RoPE position check assumes does not apply.</summary>
    internal static PrefillPlan PlanLevel(ReadOnlySpan<int> qoIndptr, PageTable table, AttentionShape shape, int numPages, AttentionOptions options) =>
        PlanRequests(qoIndptr, table, shape, numPages, options, null, bottomRightRows: false);

    private static PrefillPlan PlanRequests(ReadOnlySpan<int> qoIndptr, PageTable table, AttentionShape shape, int numPages, AttentionOptions? options,
        CustomMask? customMask, bool bottomRightRows)
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
        customMask?.CheckMatches(qoIndptr, table, nameof(customMask));
        int ps = table.PageSize;
        var pageIds = table.Indices.ToArray();
        var tokens = new int[pageIds.Length];
        var keyStart = new int[pageIds.Length];
        var items = new List<AttentionWorkItem>();
        for (int b = 0; b < batch; b++)
        {
            int p0 = table.Indptr[b], n = table.PageCount(b), kvLen = table.KvLength(b);
            if (bottomRightRows) options.CheckRopePositions(qoIndptr[b + 1] - qoIndptr[b], kvLen, b, nameof(qoIndptr));
            for (int j = 0; j < n; j++)
            {
                tokens[p0 + j] = j == n - 1 ? table.LastPageLen[b] : ps;
                keyStart[p0 + j] = j * ps;
            }
            AddTiles(items, shape, qoIndptr[b], qoIndptr[b + 1] - qoIndptr[b], 0, qoIndptr[b + 1] - qoIndptr[b], kvLen, p0, p0 + n);
        }
        return new PrefillPlan(shape, options, ps, table.MaxPageId, qoIndptr[batch], batch, pageIds, tokens, keyStart, [.. items], blockSparse: false,
            customMask);
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
    /// <returns>The plan; q/output rows are the M queries.</returns>
    /// <exception cref="ArgumentException">The pool is smaller than the key blocks, an option is out of range, M &gt; N or N is
    /// past the <see cref="AttentionOptions.Rope"/> table, or the element
    /// mask is not M × N.</exception>
    public static PrefillPlan PlanBlockSparse(BlockSparseMask mask, AttentionShape shape, int numPages, AttentionOptions? options = null,
        CustomMask? elementMask = null)
    {
        ArgumentNullException.ThrowIfNull(mask);
        ArgumentNullException.ThrowIfNull(shape);
        options ??= AttentionOptions.Default;
        options.Validate(shape);
        if (elementMask is not null && (elementMask.Requests != 1 || elementMask.QueryRows != mask.M || elementMask.KvLengths[0] != mask.N))
            ThrowHelper.Argument(nameof(elementMask),
                $"The element mask must be one request of {mask.M} queries × {mask.N} keys; it has {elementMask.Requests} requests, {elementMask.QueryRows} rows.");
        options.CheckRopePositions(mask.M, mask.N, 0, nameof(mask));
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
        var items = new List<AttentionWorkItem>();
        for (int i = 0; i < mask.BlockRows; i++)
        {
            int r0 = i * mask.R, rows = Math.Min(mask.R, mask.M - r0);
            AddTiles(items, shape, r0, rows, r0, mask.M, mask.N, mask.Indptr[i], mask.Indptr[i + 1]);
        }
        int maxPage = pageIds.Length == 0 ? -1 : pageIds.Max();
        return new PrefillPlan(shape, options, mask.C, maxPage, mask.M, mask.BlockRows, pageIds, tokens, keyStart, [.. items], blockSparse: true,
            elementMask);
    }

    private static void AddTiles(List<AttentionWorkItem> items, AttentionShape shape, int row0, int rows, int maskQuery0, int maskQoLen, int maskKvLen,
        int pageBegin, int pageEnd)
    {
        // Prefill is compute-bound: one kv head per item and as many query rows as fit, so each K/V row feeds many dots.
        int g = shape.GroupSize, gh = AttentionPlan.GroupHeadsPerItem(shape);
        int rowsPerTile = Math.Max(1, AttentionPlan.MaxQueriesPerItem / gh);
        for (int r = 0; r < rows; r += rowsPerTile)
        {
            int n = Math.Min(rowsPerTile, rows - r);
            for (int kh = 0; kh < shape.KvHeads; kh++)
                for (int h = 0; h < g; h += gh)
                    items.Add(new AttentionWorkItem(row0 + r, n, maskQuery0 + r, maskQoLen, maskKvLen, kh, 1, h, Math.Min(gh, g - h), pageBegin, pageEnd, -1));
        }
    }
}
