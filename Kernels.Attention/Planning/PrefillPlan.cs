namespace Kernels.Attention.Planning;

/// <summary>An immutable prefill (or block-sparse) schedule: ragged query rows over paged keys, no split-KV.</summary>
/// <remarks>
/// Made by <see cref="PrefillPlanner.Plan"/> or <see cref="PrefillPlanner.PlanBlockSparse"/>. Work items are tiles of query rows
/// (× the query heads of one kv head, at most <see cref="AttentionPlan.MaxQueriesPerItem"/> queries) over the request's pages;
/// pages that lie wholly outside every row's causal/window range, and (block-sparse) blocks the mask excludes, are never read.
/// </remarks>
public sealed class PrefillPlan : AttentionPlan
{
    internal PrefillPlan(AttentionShape shape, AttentionOptions options, int pageSize, int maxPageId, int queryRows, int requests,
        int[] pageIds, int[] pageTokens, int[] pageKeyStart, AttentionWorkItem[] items, bool blockSparse, Masks.CustomMask? customMask = null)
        : base(shape, options, pageSize, maxPageId, queryRows, pageIds, pageTokens, pageKeyStart, items)
    {
        Requests = requests;
        IsBlockSparse = blockSparse;
        CustomMask = customMask;
    }

    /// <summary>The element-wise mask the plan applies on top of the options' causal/window masks, or null.</summary>
    public Masks.CustomMask? CustomMask { get; }

    /// <summary>Requests (sequences, or block rows for block-sparse plans).</summary>
    public int Requests { get; }

    /// <summary>True for a plan made from a <see cref="Masks.BlockSparseMask"/>.</summary>
    public bool IsBlockSparse { get; }
}
