namespace Kernels.Attention.Planning;

/// <summary>
/// A cascade decode schedule (FlashInfer's cascade inference, two or more levels): sequences that share a prompt attend to
/// the shared pages once per group instead of once per sequence, then to their own pages, and the partial states are merged.
/// </summary>
/// <remarks>
/// <para>Shared levels, <see cref="SharedLevels"/> (the first is <see cref="Prefix"/>): non-causal prefill plans whose
/// request <c>g</c> is the query rows of group <c>g</c>'s sequences over the group's shared pages at that level, so each
/// shared K/V row is read once for every query of the group (up to <see cref="AttentionPlan.MaxQueriesPerItem"/> queries
/// per read on the CPU, 16 (sequence, head) pairs per staged chunk on the GPU). Last, <see cref="Suffix"/>: an ordinary
/// decode plan over each sequence's own pages. A backend runs every level and merges the states
/// <c>(o₁, lse₁) ⊕ (o₂, lse₂) ⊕ …</c> per (sequence, head) with the <see cref="Reference.AttentionState"/> rule, which
/// gives the attention over all of the sequence's keys (the oracle is <see cref="Reference.AttentionReference.Cascade(IReadOnlyList{CascadeLevel}, ReadOnlySpan{float}, Paging.PagedKvCache, Paging.PageTable, AttentionShape, AttentionOptions, Span{float}, Span{float}, Span{double})"/>).
/// q, output: <c>[batch, qo_heads, head_dim]</c>; lse <c>[batch, qo_heads]</c>.</para>
/// <para>The arithmetic is that of flat decode; what it saves is memory traffic: a batch of B sequences on one shared prompt
/// of P tokens reads <c>P</c> shared tokens per group tile instead of <c>B·P</c>. The base class's page list and work items
/// are empty: the work lives in the levels.</para>
/// </remarks>
public sealed class CascadePlan : AttentionPlan
{
    private readonly PrefillPlan[] _levels;
    private readonly CascadeLevel[] _levelSpecs;

    internal CascadePlan(PrefillPlan[] levels, DecodePlan suffix, CascadeLevel[] levelSpecs, AttentionOptions options)
        : base(suffix.Shape, options, suffix.PageSize, Math.Max(levels.Max(p => p.MaxPageId), suffix.MaxPageId), suffix.QueryRows, [], [], [], [])
    {
        _levels = levels;
        _levelSpecs = levelSpecs;
        Suffix = suffix;
    }

    /// <summary>The first (outermost) shared level: every group's query rows over its shared pages (non-causal prefill).</summary>
    public PrefillPlan Prefix => _levels[0];

    /// <summary>Every shared level, outermost first (one for a two-level cascade).</summary>
    public IReadOnlyList<PrefillPlan> SharedLevels => _levels;

    /// <summary>The last level: each sequence's own pages (decode, split-KV as planned).</summary>
    public DecodePlan Suffix { get; }

    /// <summary>Sequences.</summary>
    public int BatchSize => Suffix.BatchSize;

    /// <summary>Groups of the first shared level.</summary>
    public int Groups => _levelSpecs[0].Groups;

    /// <summary><c>groups + 1</c> offsets of the first shared level: group <c>g</c> is sequences <c>[GroupIndptr[g], GroupIndptr[g+1])</c>.</summary>
    public ReadOnlySpan<int> GroupIndptr => _levelSpecs[0].GroupIndptr;

    /// <summary>The groups and pages of shared level <paramref name="level"/>, as given to the planner.</summary>
    /// <param name="level">A level index in <c>[0, SharedLevels.Count)</c>.</param>
    /// <returns>The level.</returns>
    public CascadeLevel Level(int level) => _levelSpecs[level];
}
