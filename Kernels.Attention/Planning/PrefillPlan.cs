namespace Kernels.Attention.Planning;

/// <summary>An immutable prefill (or block-sparse) schedule: ragged query rows over paged keys, split-KV when planned with a workspace.</summary>
/// <remarks>
/// Made by <see cref="PrefillPlanner.Plan"/> or <see cref="PrefillPlanner.PlanBlockSparse"/>. Work items are tiles of query rows
/// (× the query heads of one kv head, at most <see cref="AttentionPlan.MaxQueriesPerItem"/> queries) over the request's pages;
/// pages that lie wholly outside every row's causal/window range, and (block-sparse) blocks the mask excludes, are never read.
/// Planned with a workspace, a request of one query row (a decode step) takes every kv head that fits the tile per item, as
/// decode items do; and with fewer items than the backend wants (few requests or kv heads over long keys: tree verification
/// or chunked prefill at long context, block-sparse decode, a cascade's shared prompt), a tile's live pages are cut into
/// chunks of at most <see cref="ChunkPages"/> pages whose partial states go to the workspace (<see cref="AttentionPlan.PartialOutputOffset"/>,
/// <see cref="AttentionPlan.PartialLseOffset"/>) and are merged per (row, head) in chunk order, as decode's.
/// </remarks>
public sealed class PrefillPlan : AttentionPlan
{
    internal PrefillPlan(AttentionShape shape, AttentionOptions options, int pageSize, int maxPageId, int queryRows, int requests,
        int[] pageIds, int[] pageTokens, int[] pageKeyStart, AttentionWorkItem[] items, bool blockSparse, Masks.CustomMask? customMask = null,
        SplitKvLayout? split = null, AttentionWorkspace? workspace = null, int chunkPages = 0)
        : base(shape, options, pageSize, maxPageId, queryRows, pageIds, pageTokens, pageKeyStart, items, split, workspace)
    {
        ChunkPages = chunkPages;
        Requests = requests;
        IsBlockSparse = blockSparse;
        CustomMask = customMask;
    }

    /// <summary>The element-wise mask the plan applies on top of the options' causal/window masks, or null.</summary>
    public Masks.CustomMask? CustomMask { get; }

    /// <summary>Requests (sequences, or block rows for block-sparse plans).</summary>
    public int Requests { get; }

    /// <summary>The workspace split-KV partial states go to (null for a plan made without one).</summary>
    public AttentionWorkspace? Workspace => SplitWorkspace;

    /// <summary>Pages per split-KV chunk at most (a tile's chunks are balanced to within one page), or 0 when no tile is split.</summary>
    public int ChunkPages { get; }

    /// <summary>True for a plan made from a <see cref="Masks.BlockSparseMask"/>.</summary>
    public bool IsBlockSparse { get; }
}
