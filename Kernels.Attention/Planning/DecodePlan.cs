using Kernels.Attention.Paging;

namespace Kernels.Attention.Planning;

/// <summary>An immutable batch-decode schedule: one query token per sequence, split-KV decided, workspace offsets assigned.</summary>
/// <remarks>
/// Made by <see cref="DecodePlanner.Plan"/>; reuse it for every layer with the same page table. Sequences with
/// <see cref="SplitCount"/> &gt; 1 are processed in chunks of <see cref="ChunkPages"/> pages whose partial states go to the
/// workspace at <see cref="AttentionPlan.PartialOutputOffset"/> (<c>[slot, qo_heads, head_dim]</c>) and <see cref="AttentionPlan.PartialLseOffset"/>
/// (<c>[slot, qo_heads]</c>), then are merged in chunk order with <c>AttentionState</c> merging. The split depends only on the
/// page table and shape (not on the thread count), so results are reproducible across machines.
/// </remarks>
public sealed class DecodePlan : AttentionPlan
{
    internal DecodePlan(AttentionShape shape, AttentionOptions options, PageTable table, int[] pageIds, int[] pageTokens, int[] pageKeyStart,
        AttentionWorkItem[] items, int chunkPages, SplitKvLayout split, AttentionWorkspace workspace)
        : base(shape, options, table.PageSize, table.MaxPageId, table.BatchSize, pageIds, pageTokens, pageKeyStart, items, split, workspace)
    {
        BatchSize = table.BatchSize;
        ChunkPages = chunkPages;
        long tokens = 0;
        for (int b = 0; b < table.BatchSize; b++) tokens += table.KvLength(b);
        TotalKvTokens = tokens;
    }

    /// <summary>Sequences.</summary>
    public int BatchSize { get; }

    /// <summary>Pages per split-KV chunk.</summary>
    public int ChunkPages { get; }

    /// <summary>Keys over the whole batch.</summary>
    public long TotalKvTokens { get; }

    /// <summary>The workspace the plan's offsets refer to.</summary>
    public AttentionWorkspace Workspace => SplitWorkspace!; // always given to DecodePlanner

    /// <summary>Chunks sequence <paramref name="sequence"/> is split into (1 = not split, 0 = empty).</summary>
    /// <param name="sequence">Sequence.</param>
    /// <returns>The chunk count.</returns>
    public int SplitCount(int sequence) => Split!.Count[sequence];

    /// <summary>First workspace slot of sequence <paramref name="sequence"/> (meaningful when split).</summary>
    /// <param name="sequence">Sequence.</param>
    /// <returns>The slot.</returns>
    public int SplitStart(int sequence) => Split!.Start[sequence];
}
