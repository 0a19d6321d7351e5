using Kernels.Attention.Paging;

namespace Kernels.Attention.Planning;

/// <summary>Builds <see cref="CascadePlan"/>s: shared-prefix (cascade) decode, with one or more shared levels.</summary>
public static class CascadePlanner
{
    /// <summary>Plans two-level cascade decode. Group <c>g</c> is sequences <c>[groupIndptr[g], groupIndptr[g+1])</c>; its shared
    /// keys are sequence <c>g</c> of <paramref name="prefixes"/>, and sequence <c>b</c>'s own keys, which follow them, are
    /// sequence <c>b</c> of <paramref name="suffixes"/>.</summary>
    /// <param name="groupIndptr"><c>groups + 1</c> sequence offsets: starts at 0, non-decreasing, ends at the batch size.</param>
    /// <param name="prefixes">The shared pages of each group (one entry per group; an empty entry is allowed).</param>
    /// <param name="suffixes">Each sequence's own pages (one entry per sequence; an empty entry is allowed).</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="numPages">Pages of the pool (every page id of both tables is checked against it).</param>
    /// <param name="workspace">Workspace for the split-KV partial states of every level (the levels run one after another); grown as needed.</param>
    /// <param name="options">Scale, soft cap, quantized queries; null for the defaults. The causal flag is moot (each sequence
    /// has one query, which sees every key). A sliding window and ALiBi count from the sequence's last key across every level,
    /// as flat decode over the concatenated keys would; pages a window leaves out are not read.</param>
    /// <param name="targetItems">Split-KV target of every level (see <see cref="DecodePlanner.Plan"/>; a shared level with fewer items is split too).</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">The tables disagree with groupIndptr or with each other's page size, a page id is
    /// past the pool, or an option is out of range.</exception>
    public static CascadePlan Plan(ReadOnlySpan<int> groupIndptr, PageTable prefixes, PageTable suffixes, AttentionShape shape, int numPages,
        AttentionWorkspace workspace, AttentionOptions? options = null, int targetItems = DecodePlanner.TargetItems)
    {
        ArgumentNullException.ThrowIfNull(prefixes);
        return Plan([new CascadeLevel(groupIndptr, prefixes)], suffixes, shape, numPages, workspace, options, targetItems);
    }

    /// <summary>Plans multi-level cascade decode (FlashInfer's <c>MultiLevelCascadeAttentionWrapper</c>): sequence <c>b</c>
    /// attends to its group's pages at every shared level in turn, then to its own pages (sequence <c>b</c> of
    /// <paramref name="suffixes"/>).</summary>
    /// <param name="sharedLevels">The shared levels, outermost first (at least one); each covers every sequence of the batch.
    /// Groups need not nest across levels, though they usually do.</param>
    /// <param name="suffixes">Each sequence's own pages (one entry per sequence; an empty entry is allowed).</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="numPages">Pages of the pool (every page id of every table is checked against it).</param>
    /// <param name="workspace">Workspace for the split-KV partial states of every level (the levels run one after another); grown as needed.</param>
    /// <param name="options">As for the two-level overload.</param>
    /// <param name="targetItems">Split-KV target of every level.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">No shared level; a level's groups do not cover the batch; the tables' page sizes
    /// differ; a page id is past the pool; or an option is out of range.</exception>
    public static CascadePlan Plan(IReadOnlyList<CascadeLevel> sharedLevels, PageTable suffixes, AttentionShape shape, int numPages,
        AttentionWorkspace workspace, AttentionOptions? options = null, int targetItems = DecodePlanner.TargetItems)
    {
        ArgumentNullException.ThrowIfNull(sharedLevels);
        ArgumentNullException.ThrowIfNull(suffixes);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(workspace);
        options ??= AttentionOptions.Default;
        options.Validate(shape);
        if (sharedLevels.Count == 0) ThrowHelper.Argument(nameof(sharedLevels), "A cascade needs at least one shared level.");
        int batch = suffixes.BatchSize;
        var levels = new PrefillPlan[sharedLevels.Count];
        for (int l = 0; l < levels.Length; l++)
        {
            var level = sharedLevels[l] ?? throw new ArgumentNullException(nameof(sharedLevels), $"sharedLevels[{l}] is null.");
            if (level.Pages.PageSize != suffixes.PageSize)
                ThrowHelper.Argument(nameof(sharedLevels), $"Level {l}'s page size ({level.Pages.PageSize}) differs from the suffix table's ({suffixes.PageSize}).");
            if (level.BatchSize != batch)
                ThrowHelper.Argument(nameof(sharedLevels), $"Level {l}'s groups cover {level.BatchSize} sequences (groupIndptr[{level.Groups}] = {level.BatchSize}); the suffix table has {batch}.");
            // The level's groups as prefill requests over their shared pages, every key kept (the planner checks the page ids).
            levels[l] = PrefillPlanner.PlanLevel(level.GroupIndptr, level.Pages, shape, numPages, options with { Causal = false, AttentionSinks = null },
                workspace, targetItems);
            levels[l].KeepsEmptyStates = true; // fresh plans, owned by the cascade
        }
        // Each sequence's query sits after all its keys: at a shared level, position (its length − 1) − (the keys of the levels
        // before), which the window and ALiBi measure from (the suffix level's decode alignment already gives that). In-kernel
        // RoPE rotates with the same positions: a level's keys and the query are shifted alike, and the rotation of a dot
        // product depends only on the distance between them, so the result is flat decode's up to the table's rounding.
        var position = new long[batch];
        for (int b = 0; b < batch; b++)
        {
            long total = suffixes.KvLength(b);
            foreach (var level in sharedLevels) total += level.Pages.KvLength(level.GroupOf(b));
            position[b] = total - 1;
            // With RoPE every level's key positions and the query's sit below the sequence's length: it must fit the table.
            options.CheckRopePositions(1, (int)Math.Min(total, int.MaxValue), b, nameof(suffixes));
        }
        for (int l = 0; l < levels.Length; l++)
        {
            var rows = new int[batch];
            for (int b = 0; b < batch; b++)
            {
                rows[b] = (int)Math.Min(position[b], int.MaxValue);
                position[b] -= sharedLevels[l].Pages.KvLength(sharedLevels[l].GroupOf(b));
            }
            levels[l].RowPosition = rows;
        }
        // Sinks join once, after the levels merge (the level plans carry none).
        var suffix = DecodePlanner.Plan(suffixes, shape, numPages, workspace, options with { AttentionSinks = null }, targetItems: targetItems);
        suffix.KeepsEmptyStates = true;
        return new CascadePlan(levels, suffix, [.. sharedLevels], options);
    }
}
