using Kernels.Attention.Paging;

namespace Kernels.Attention.Planning;

/// <summary>Builds <see cref="DecodePlan"/>s: validates the metadata once and decides the split-KV schedule.</summary>
/// <remarks>
/// <para>Work items are (sequence, chunk of pages), each carrying every query head (up to
/// <see cref="AttentionPlan.MaxQueriesPerItem"/>; more heads are split over items by kv head), so a kernel reads each page
/// front to back once and loads each K/V row once per GQA group.</para>
/// <para>Split-KV: with <c>P = Σ pages</c>, chunks are <c>max(MinChunkTokens / page_size, ceil(P / targetItems))</c>
/// pages, so a long sequence is cut into enough chunks to keep every core busy while short ones stay whole; a sequence
/// with one chunk writes its output directly. <c>targetItems</c> should be a few items per core or GPU multiprocessor:
/// each item costs a setup, a cold first page and a merge, so on 2 CPU cores 16 items (chunks of 128 pages at batch
/// 1 × 32k, page 16) ran fp16 decode 12–16 % faster than 64 (a scratch program, 2026-12-02). Pass the backend's
/// <see cref="IPagedAttentionOps.DecodeTargetItems"/>; the default, <see cref="TargetItems"/>, is a fallback for callers
/// that plan without one.
/// <c>fixedChunkPages</c> overrides the rule (FlashInfer's <c>fixed_split_size</c>) and <c>disableSplitKv</c> turns
/// splitting off.</para>
/// </remarks>
public static class DecodePlanner
{
    /// <summary>Split-KV aims at about this many work items unless the caller says otherwise.</summary>
    public const int TargetItems = 64;

    /// <summary>Smallest chunk, in tokens (a chunk shorter than this costs more to merge than it saves).</summary>
    public const int MinChunkTokens = 256;

    /// <summary>Plans batch decode.</summary>
    /// <param name="table">Pages of each sequence.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="numPages">Pages of the pool the plan will run on (every page id is checked against it).</param>
    /// <param name="workspace">Workspace for partial states; grown as needed.</param>
    /// <param name="options">Scale, soft cap, window; null for the defaults.</param>
    /// <param name="fixedChunkPages">Force this chunk size in pages (≥ 1), or null.</param>
    /// <param name="disableSplitKv">Never split.</param>
    /// <param name="targetItems">How many work items split-KV aims at (≥ 1): a few per core (the CPU backend's <c>DecodeTargetItems</c>: 4 × its threads), or a
    /// few per GPU multiprocessor. Ignored with <paramref name="fixedChunkPages"/> or <paramref name="disableSplitKv"/>.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">A page id is past the pool, an option is out of range, or a sequence is longer than
    /// the <see cref="AttentionOptions.Rope"/> table.</exception>
    public static DecodePlan Plan(PageTable table, AttentionShape shape, int numPages, AttentionWorkspace workspace,
        AttentionOptions? options = null, int? fixedChunkPages = null, bool disableSplitKv = false, int targetItems = TargetItems)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(workspace);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numPages);
        options ??= AttentionOptions.Default;
        options.Validate(shape);
        table.Validate(numPages);
        SplitKvLayout.CheckOptions(targetItems, fixedChunkPages);
        int batch = table.BatchSize, ps = table.PageSize;
        int chunk = disableSplitKv ? int.MaxValue : fixedChunkPages ?? SplitKvLayout.ChunkPages(table.Indices.Length, targetItems, ps);

        int gh = AttentionPlan.GroupHeadsPerItem(shape), g = shape.GroupSize;
        int kvPerItem = Math.Max(1, AttentionPlan.MaxQueriesPerItem / gh);
        var pageIds = table.Indices.ToArray();
        var tokens = new int[pageIds.Length];
        var keyStart = new int[pageIds.Length];
        var split = new SplitKvLayout(batch);
        var items = new List<AttentionWorkItem>();
        for (int b = 0; b < batch; b++)
        {
            int p0 = table.Indptr[b], n = table.PageCount(b), kvLen = table.KvLength(b);
            options.CheckRopePositions(kvLen == 0 ? 0 : 1, kvLen, b, nameof(table));
            for (int j = 0; j < n; j++)
            {
                tokens[p0 + j] = j == n - 1 ? table.LastPageLen[b] : ps;
                keyStart[p0 + j] = j * ps;
            }
            int chunks = n == 0 ? 0 : (int)((n + (long)chunk - 1) / chunk);
            int first = chunks > 1 ? split.Reserve(b, 1, chunks) : -1;
            if (chunks <= 1) split.Whole(b, 1, chunks);
            int itemChunks = Math.Max(chunks, 1); // an empty sequence still gets items that write 0 and −∞
            for (int c = 0; c < itemChunks; c++)
            {
                int pb = p0 + (int)Math.Min((long)c * chunk, n), pe = p0 + (int)Math.Min((long)(c + 1) * chunk, n);
                for (int kh = 0; kh < shape.KvHeads; kh += kvPerItem)
                    for (int h = 0; h < g; h += gh)
                        items.Add(new AttentionWorkItem(b, 1, 0, 1, kvLen, kh, Math.Min(kvPerItem, shape.KvHeads - kh), h, Math.Min(gh, g - h), pb, pe, chunks > 1 ? first + c : -1));
            }
        }
        var plan = new DecodePlan(shape, options, table, pageIds, tokens, keyStart, [.. items], disableSplitKv ? 0 : chunk, split, workspace);
        workspace.EnsureCapacity(plan.WorkspaceFloats);
        return plan;
    }
}
