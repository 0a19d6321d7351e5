namespace Kernels.Attention.Planning;

/// <summary>What every attention plan holds: validated metadata flattened into work items over a page list.</summary>
/// <remarks>
/// The page list gives, per entry, the page id, its token count and the key index of its first token (so the same kernels
/// run paged decode, paged prefill and block-sparse attention). Plans are immutable and may be reused for every layer
/// whose cache has the same page table.
/// </remarks>
public abstract class AttentionPlan
{
    private protected AttentionPlan(AttentionShape shape, AttentionOptions options, int pageSize, int maxPageId, int queryRows,
        int[] pageIds, int[] pageTokens, int[] pageKeyStart, AttentionWorkItem[] items, SplitKvLayout? split = null, AttentionWorkspace? workspace = null)
    {
        Shape = shape;
        Options = options;
        PageSize = pageSize;
        MaxPageId = maxPageId;
        QueryRows = queryRows;
        PageIds = pageIds;
        PageTokens = pageTokens;
        PageKeyStart = pageKeyStart;
        WorkItems = items;
        AlibiSlopes = options.AlibiArray();
        Sinks = options.AttentionSinks?.ToArray();
        Split = split;
        SplitWorkspace = workspace;
        PartialSlots = split?.Slots ?? 0;
        PartialLseOffset = (long)PartialSlots * shape.QoHeads * shape.HeadDim;
        WorkspaceFloats = PartialLseOffset + (long)PartialSlots * shape.QoHeads;
    }

    /// <summary>Heads and head_dim.</summary>
    public AttentionShape Shape { get; }

    /// <summary>Scale, soft cap, window, causal.</summary>
    public AttentionOptions Options { get; }

    /// <summary>The page size a cache must have.</summary>
    public int PageSize { get; }

    /// <summary>The largest page id used; a cache must have more pages than this.</summary>
    public int MaxPageId { get; }

    /// <summary>Query (and output) rows: q is <c>[QueryRows, qo_heads, head_dim]</c>.</summary>
    public int QueryRows { get; }

    /// <summary>Checks, before any memory is touched, that a cache and the q/output/lse lengths fit this plan (both backends
    /// call it): the cache's page size and heads match, every page id of the plan is in the pool, q and output hold
    /// <c>QueryRows × qo_heads × head_dim</c> floats and lse (when given, <paramref name="lseLength"/> ≥ 0)
    /// <c>QueryRows × qo_heads</c>.</summary>
    /// <exception cref="ArgumentException">A buffer or the cache does not match the plan; the message names it and the sizes.</exception>
    internal void CheckRun(Paging.PagedKvCache cache, long qLength, long outputLength, long lseLength)
    {
        ArgumentNullException.ThrowIfNull(cache);
        if (cache.PageSize != PageSize || cache.KvHeads != Shape.KvHeads || cache.HeadDim != Shape.HeadDim)
            throw new ArgumentException(
                $"The cache (page_size {cache.PageSize}, kv_heads {cache.KvHeads}, head_dim {cache.HeadDim}) does not match the plan (page_size {PageSize}, kv_heads {Shape.KvHeads}, head_dim {Shape.HeadDim}).", nameof(cache));
        if (cache.NumPages <= MaxPageId)
            throw new ArgumentException($"The plan uses page {MaxPageId} but the cache has {cache.NumPages} pages.", nameof(cache));
        long rows = (long)QueryRows * Shape.QoHeads;
        if (qLength != rows * Shape.HeadDim)
            throw new ArgumentException($"q has {qLength} elements; the plan needs {QueryRows}×{Shape.QoHeads}×{Shape.HeadDim} = {rows * Shape.HeadDim}.", "q");
        if (outputLength != rows * Shape.HeadDim)
            throw new ArgumentException($"output has {outputLength} elements; the plan needs {rows * Shape.HeadDim}.", "output");
        if (lseLength >= 0 && lseLength != rows)
            throw new ArgumentException($"lse has {lseLength} elements; the plan needs {rows} (or pass none).", "lse");
    }

    /// <summary>The softmax scale in use.</summary>
    public float SmScale => Options.ScaleFor(Shape.HeadDim);

    /// <summary>Set on the levels of a <see cref="CascadePlan"/>: a row with no weight keeps <c>Σ 0·v_j</c> (0, or NaN from an
    /// Inf/NaN V row of a key whose logit was −∞) with lse −∞ instead of writing 0, as split-KV chunks do, so that the merge
    /// of the levels carries the unsplit oracle's 0·NaN; the cascade clears rows left empty after the merge.</summary>
    internal bool KeepsEmptyStates { get; set; }

    /// <summary>Per query row, the query's own key position in the plan's key coordinates, overriding the bottom-right
    /// alignment of the work items (<c>kv_len − qo_len + query index</c>) for masks and ALiBi; null to use that. Set on a
    /// cascade's shared levels, whose keys are the first keys of sequences whose queries come after the level.</summary>
    internal int[]? RowPosition { get; set; }

    /// <summary>The ALiBi slopes per query head, copied from the options when the plan was made; null without ALiBi.</summary>
    internal float[]? AlibiSlopes { get; }

    /// <summary>The attention-sink logits per query head, copied from the options; null without sinks.</summary>
    internal float[]? Sinks { get; }

    /// <summary>Workspace slots for split-KV partial states (0 when nothing is split): a slot is one query row's
    /// <c>qo_heads</c> states.</summary>
    public int PartialSlots { get; }

    /// <summary>Offset (floats) of the partial outputs in the workspace: <c>[slot, qo_heads, head_dim]</c>.</summary>
    public long PartialOutputOffset => 0;

    /// <summary>Offset (floats) of the partial log-sum-exps in the workspace: <c>[slot, qo_heads]</c>.</summary>
    public long PartialLseOffset { get; }

    /// <summary>Floats of workspace this plan uses (0 when nothing is split).</summary>
    public long WorkspaceFloats { get; }

    /// <summary>Which slots hold each query row's split-KV chunks (null for plans made without a workspace).</summary>
    internal SplitKvLayout? Split { get; }

    /// <summary>The workspace the partial states go to (null for plans made without one).</summary>
    internal AttentionWorkspace? SplitWorkspace { get; }

    internal int[] PageIds { get; }
    internal int[] PageTokens { get; }
    internal int[] PageKeyStart { get; }
    internal AttentionWorkItem[] WorkItems { get; }

    /// <summary>Work items (the parallel grain).</summary>
    public int WorkItemCount => WorkItems.Length;

    /// <summary>The work items, for backends.</summary>
    public ReadOnlySpan<AttentionWorkItem> Items => WorkItems;

    /// <summary>Page ids of the page list.</summary>
    public ReadOnlySpan<int> PageList => PageIds;

    /// <summary>Tokens per page-list entry.</summary>
    public ReadOnlySpan<int> PageListTokens => PageTokens;

    /// <summary>Key index of each page-list entry's first token.</summary>
    public ReadOnlySpan<int> PageListKeyStart => PageKeyStart;

    /// <summary>Queries (query rows × query heads) per work item at most (the kernels' per-thread logit tile).</summary>
    public const int MaxQueriesPerItem = 64;

    /// <summary>Query heads of one kv head that one item takes (the whole group unless it exceeds the tile).</summary>
    internal static int GroupHeadsPerItem(AttentionShape shape) => Math.Min(shape.GroupSize, MaxQueriesPerItem);
}
