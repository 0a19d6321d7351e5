using Kernels.Attention.Paging;

namespace Kernels.Attention.Planning;

/// <summary>One shared level of a cascade (FlashInfer's multi-level cascade): the batch's sequences in groups of consecutive
/// sequences, and the pages each group shares at this level.</summary>
/// <remarks>A sequence's keys are, in order, its group's pages at every shared level (level 0 first), then its own pages.
/// Typical levels: a system prompt shared by the whole batch (one group), then each conversation's or beam's prefix
/// shared by its forks, then each sequence's own tokens (<see cref="PageAllocator.BuildCascadeLevels"/> derives them from
/// forked sequences).</remarks>
public sealed class CascadeLevel
{
    private readonly int[] _groupIndptr;

    /// <summary>Creates a level.</summary>
    /// <param name="groupIndptr"><c>groups + 1</c> sequence offsets: group <c>g</c> is sequences
    /// <c>[groupIndptr[g], groupIndptr[g+1])</c>; starts at 0, non-decreasing (checked against the batch by the planner).</param>
    /// <param name="pages">The shared pages of each group (one entry per group; an empty entry is allowed).</param>
    /// <exception cref="ArgumentException">groupIndptr's length is not the table's batch size + 1, it does not start at 0, or
    /// it is not monotone.</exception>
    public CascadeLevel(ReadOnlySpan<int> groupIndptr, PageTable pages)
    {
        ArgumentNullException.ThrowIfNull(pages);
        int groups = pages.BatchSize;
        ThrowHelper.ThrowIfLengthMismatch(nameof(groupIndptr), groupIndptr.Length, groups + 1);
        ThrowHelper.ThrowIfNotOffsets(nameof(groupIndptr), groupIndptr);
        _groupIndptr = groupIndptr.ToArray();
        Pages = pages;
    }

    /// <summary><c>groups + 1</c> sequence offsets.</summary>
    public ReadOnlySpan<int> GroupIndptr => _groupIndptr;

    /// <summary>The shared pages of each group.</summary>
    public PageTable Pages { get; }

    /// <summary>Groups at this level.</summary>
    public int Groups => _groupIndptr.Length - 1;

    /// <summary>The sequences the level covers: <c>GroupIndptr[^1]</c>.</summary>
    public int BatchSize => _groupIndptr[^1];

    /// <summary>The group of sequence <paramref name="sequence"/>.</summary>
    /// <param name="sequence">A sequence index in <c>[0, BatchSize)</c>.</param>
    /// <returns>The group index.</returns>
    public int GroupOf(int sequence) => GroupOf(_groupIndptr, sequence);

    /// <summary>The group of <paramref name="sequence"/> under offsets <paramref name="groupIndptr"/> (the last group whose
    /// start is at or before it, so empty groups at its offset are skipped).</summary>
    internal static int GroupOf(ReadOnlySpan<int> groupIndptr, int sequence)
    {
        int g = groupIndptr.BinarySearch(sequence);
        if (g < 0) return ~g - 1;
        while (g + 1 < groupIndptr.Length && groupIndptr[g + 1] == sequence) g++;
        return g;
    }
}
