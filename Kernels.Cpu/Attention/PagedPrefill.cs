using Kernels.Attention.Paging;
using Kernels.Attention.Planning;

namespace Kernels.Cpu.Attention;

/// <summary>Batch prefill over a paged KV cache (ragged query lengths, causal/window masks), and block-sparse attention.</summary>
/// <remarks>
/// <para>q, output: <c>[total_q, qo_heads, head_dim]</c> fp32 in <c>qo_indptr</c> order; lse <c>[total_q, qo_heads]</c> (natural log).
/// Causal is bottom-right aligned (query i of a request with <c>qo_len</c> queries sees keys <c>≤ kv_len − qo_len + i</c>).
/// For a block-sparse plan the cache's page j is key block j, and excluded blocks are never read.
/// A row with no kept key gives <c>o = 0</c>, <c>lse = −∞</c>. Error bound and determinism as <see cref="PagedDecode"/>.</para>
/// </remarks>
public static class PagedPrefill
{
    /// <summary>Runs a prefill or block-sparse plan.</summary>
    /// <param name="plan">The plan (from <see cref="PrefillPlanner"/>).</param>
    /// <param name="q">Queries.</param>
    /// <param name="cache">The cache.</param>
    /// <param name="output">Outputs (overwritten; must not overlap q).</param>
    /// <param name="lse">Log-sum-exps, or empty.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="InvalidOperationException">The plan's split workspace is smaller than the plan needs.</exception>
    /// <exception cref="NotSupportedException">head_dim is unsupported, or the forced ISA path is unsupported.</exception>
    /// <exception cref="ArgumentException">The cache or a buffer does not match the plan (the message names it and the sizes),
    /// output overlaps q, or lse overlaps q or output.</exception>
    public static void Run(PrefillPlan plan, ReadOnlySpan<float> q, PagedKvCache cache, Span<float> output, Span<float> lse, KernelOptions? options = null)
    {
        AttentionLaunch.Check(plan, q, cache, output, lse);
        var sinks = plan.Sinks;
        if (sinks is not null) lse = SinkPass.Lse(lse, (long)plan.QueryRows * plan.Shape.QoHeads);
        if (plan.IsBlockSparse)
        {
            // Rows of block rows with no kept block have no work item: define them as empty.
            output.Clear();
            lse.Fill(float.NegativeInfinity);
        }
        AttentionLaunch.Launch(plan, q, cache, output, lse, options);
        if (sinks is not null) SinkPass.Apply(sinks, output, lse, plan.Shape.QoHeads, plan.Shape.HeadDim);
    }
}
