namespace Kernels.Attention.Planning;

/// <summary>
/// A two-level cascade decode schedule (FlashInfer's cascade inference): sequences that share a prompt attend to the shared
/// pages once per group instead of once per sequence, then to their own pages, and the two partial states are merged.
/// </summary>
/// <remarks>
/// <para>Level 1, <see cref="Prefix"/>: a non-causal prefill plan whose request <c>g</c> is the query rows of group
/// <c>g</c>'s sequences over the group's shared pages, so each shared K/V row is read once for every query of the group
/// (up to <see cref="AttentionPlan.MaxQueriesPerItem"/> queries per read on the CPU). Level 2, <see cref="Suffix"/>: an
/// ordinary decode plan over each sequence's own pages. A backend runs both and merges
/// <c>(o₁, lse₁) ⊕ (o₂, lse₂)</c> per (sequence, head) with the <see cref="Reference.AttentionState"/> rule, which gives the
/// attention over the shared keys followed by the sequence's own keys (the oracle is
/// <see cref="Reference.AttentionReference.Cascade"/>). q, output: <c>[batch, qo_heads, head_dim]</c>; lse <c>[batch, qo_heads]</c>.</para>
/// <para>The arithmetic is that of flat decode; what it saves is memory traffic: a batch of B sequences on one shared prompt
/// of P tokens reads <c>P</c> shared tokens per group tile instead of <c>B·P</c>. The base class's page list and work items
/// are empty: the work lives in the two levels.</para>
/// </remarks>
public sealed class CascadePlan : AttentionPlan
{
    private readonly int[] _groupIndptr;

    internal CascadePlan(PrefillPlan prefix, DecodePlan suffix, int[] groupIndptr)
        : base(suffix.Shape, suffix.Options, suffix.PageSize, Math.Max(prefix.MaxPageId, suffix.MaxPageId), suffix.QueryRows, [], [], [], [])
    {
        Prefix = prefix;
        Suffix = suffix;
        _groupIndptr = groupIndptr;
    }

    /// <summary>Level 1: every group's query rows over its shared pages (non-causal prefill).</summary>
    public PrefillPlan Prefix { get; }

    /// <summary>Level 2: each sequence's own pages (decode, split-KV as planned).</summary>
    public DecodePlan Suffix { get; }

    /// <summary>Sequences.</summary>
    public int BatchSize => Suffix.BatchSize;

    /// <summary>Groups (shared prefixes).</summary>
    public int Groups => _groupIndptr.Length - 1;

    /// <summary><c>groups + 1</c> offsets: group <c>g</c> is sequences <c>[GroupIndptr[g], GroupIndptr[g+1])</c>.</summary>
    public ReadOnlySpan<int> GroupIndptr => _groupIndptr;
}
