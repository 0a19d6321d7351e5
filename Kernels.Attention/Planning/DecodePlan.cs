using Kernels.Attention.Paging;

namespace Kernels.Attention.Planning;

/// <summary>An immutable batch-decode schedule: one query token per sequence, split-KV decided, workspace offsets assigned.</summary>
/// <remarks>
/// Made by <see cref="DecodePlanner.Plan"/>; reuse it for every layer with the same page table. Sequences with
/// <see cref="SplitCount"/> &gt; 1 are processed in chunks of <see cref="ChunkPages"/> pages whose partial states go to the
/// workspace at <see cref="PartialOutputOffset"/> (<c>[slot, qo_heads, head_dim]</c>) and <see cref="PartialLseOffset"/>
/// (<c>[slot, qo_heads]</c>), then are merged in chunk order with <c>AttentionState</c> merging. The split depends only on the
/// page table and shape (not on the thread count), so results are reproducible across machines.
/// </remarks>
public sealed class DecodePlan : AttentionPlan
{
    private readonly int[] _splitStart, _splitCount;

    internal DecodePlan(AttentionShape shape, AttentionOptions options, PageTable table, int[] pageIds, int[] pageTokens, int[] pageKeyStart,
        AttentionWorkItem[] items, int chunkPages, int[] splitStart, int[] splitCount, int totalSlots, AttentionWorkspace workspace)
        : base(shape, options, table.PageSize, table.MaxPageId, table.BatchSize, pageIds, pageTokens, pageKeyStart, items)
    {
        BatchSize = table.BatchSize;
        ChunkPages = chunkPages;
        _splitStart = splitStart;
        _splitCount = splitCount;
        PartialSlots = totalSlots;
        Workspace = workspace;
        PartialOutputOffset = 0;
        PartialLseOffset = (long)totalSlots * shape.QoHeads * shape.HeadDim;
        WorkspaceFloats = PartialLseOffset + (long)totalSlots * shape.QoHeads;
        long tokens = 0;
        for (int b = 0; b < table.BatchSize; b++) tokens += table.KvLength(b);
        TotalKvTokens = tokens;
    }

    /// <summary>Sequences.</summary>
    public int BatchSize { get; }

    internal int[] SplitStarts => _splitStart;
    internal int[] SplitCounts => _splitCount;

    /// <summary>Pages per split-KV chunk.</summary>
    public int ChunkPages { get; }

    /// <summary>Workspace slots for partial states (0 when nothing is split).</summary>
    public int PartialSlots { get; }

    /// <summary>Offset (floats) of the partial outputs in the workspace.</summary>
    public long PartialOutputOffset { get; }

    /// <summary>Offset (floats) of the partial log-sum-exps in the workspace.</summary>
    public long PartialLseOffset { get; }

    /// <summary>Floats of workspace this plan uses.</summary>
    public long WorkspaceFloats { get; }

    /// <summary>Keys over the whole batch.</summary>
    public long TotalKvTokens { get; }

    /// <summary>The workspace the plan's offsets refer to.</summary>
    public AttentionWorkspace Workspace { get; }

    /// <summary>Chunks sequence <paramref name="sequence"/> is split into (1 = not split, 0 = empty).</summary>
    /// <param name="sequence">Sequence.</param>
    /// <returns>The chunk count.</returns>
    public int SplitCount(int sequence) => _splitCount[sequence];

    /// <summary>First workspace slot of sequence <paramref name="sequence"/> (meaningful when split).</summary>
    /// <param name="sequence">Sequence.</param>
    /// <returns>The slot.</returns>
    public int SplitStart(int sequence) => _splitStart[sequence];
}
