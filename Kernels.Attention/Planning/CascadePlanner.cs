using Kernels.Attention.Paging;

namespace Kernels.Attention.Planning;

/// <summary>Builds <see cref="CascadePlan"/>s: shared-prefix (cascade) decode.</summary>
public static class CascadePlanner
{
    /// <summary>Plans cascade decode. Group <c>g</c> is sequences <c>[groupIndptr[g], groupIndptr[g+1])</c>; its shared keys
    /// are sequence <c>g</c> of <paramref name="prefixes"/>, and sequence <c>b</c>'s own keys, which follow them, are sequence
    /// <c>b</c> of <paramref name="suffixes"/>.</summary>
    /// <param name="groupIndptr"><c>groups + 1</c> sequence offsets: starts at 0, non-decreasing, ends at the batch size.</param>
    /// <param name="prefixes">The shared pages of each group (one entry per group; an empty entry is allowed).</param>
    /// <param name="suffixes">Each sequence's own pages (one entry per sequence; an empty entry is allowed).</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="numPages">Pages of the pool (every page id of both tables is checked against it).</param>
    /// <param name="workspace">Workspace for the suffix level's split-KV partial states; grown as needed.</param>
    /// <param name="options">Scale, soft cap, quantized queries; null for the defaults. The causal flag is moot (each sequence
    /// has one query, which sees every key); a sliding window is not supported.</param>
    /// <param name="targetItems">Split-KV target of the suffix level (see <see cref="DecodePlanner.Plan"/>).</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">The tables disagree with groupIndptr or with each other's page size, a page id is
    /// past the pool, an option is out of range, or a sliding window is set.</exception>
    public static CascadePlan Plan(ReadOnlySpan<int> groupIndptr, PageTable prefixes, PageTable suffixes, AttentionShape shape, int numPages,
        AttentionWorkspace workspace, AttentionOptions? options = null, int targetItems = DecodePlanner.TargetItems)
    {
        ArgumentNullException.ThrowIfNull(prefixes);
        ArgumentNullException.ThrowIfNull(suffixes);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(workspace);
        options ??= AttentionOptions.Default;
        options.Validate();
        if (options.WindowLeft >= 0)
            ThrowHelper.Argument(nameof(options), $"Cascade plans do not support a sliding window (WindowLeft = {options.WindowLeft}): the window's cut through the shared keys depends on each sequence's length.");
        if (prefixes.PageSize != suffixes.PageSize)
            ThrowHelper.Argument(nameof(suffixes), $"The prefix table's page size ({prefixes.PageSize}) differs from the suffix table's ({suffixes.PageSize}).");
        int groups = prefixes.BatchSize, batch = suffixes.BatchSize;
        ThrowHelper.ThrowIfLengthMismatch(nameof(groupIndptr), groupIndptr.Length, groups + 1);
        if (groupIndptr[0] != 0) ThrowHelper.Argument(nameof(groupIndptr), $"groupIndptr[0] must be 0; got {groupIndptr[0]}.");
        for (int g = 0; g < groups; g++)
            if (groupIndptr[g + 1] < groupIndptr[g])
                ThrowHelper.Argument(nameof(groupIndptr), $"groupIndptr is not monotone: groupIndptr[{g + 1}] = {groupIndptr[g + 1]} < groupIndptr[{g}] = {groupIndptr[g]}.");
        if (groupIndptr[groups] != batch)
            ThrowHelper.Argument(nameof(groupIndptr), $"groupIndptr[{groups}] = {groupIndptr[groups]} must equal the suffix table's batch size ({batch}).");

        // Level 1: the groups' query rows as prefill requests over the shared pages, every key kept (the planners check the page ids).
        var prefix = PrefillPlanner.Plan(groupIndptr, prefixes, shape, numPages, options with { Causal = false });
        var suffix = DecodePlanner.Plan(suffixes, shape, numPages, workspace, options, targetItems: targetItems);
        prefix.KeepsEmptyStates = suffix.KeepsEmptyStates = true; // fresh plans, owned by the cascade
        return new CascadePlan(prefix, suffix, groupIndptr.ToArray());
    }
}
