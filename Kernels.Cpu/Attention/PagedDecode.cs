using Kernels.Attention.Paging;
using Kernels.Attention.Planning;

namespace Kernels.Cpu.Attention;

/// <summary>Batch decode over a paged KV cache: one query token per sequence, GQA/MQA, split-KV for long sequences.</summary>
/// <remarks>
/// <para><c>o[b, h] = Σ_j softmax_j(logit(q[b, h], k_j))·v_j</c> over the keys of sequence b (its pages in the plan's table),
/// and <c>lse[b, h] = ln Σ_j e^(logit_j)</c> (natural log; FlashInfer's base-2 value is <c>lse / ln 2</c>). The oracle is
/// <c>AttentionReference.Decode</c> on the dequantized cache. q, output: <c>[batch, qo_heads, head_dim]</c> fp32; lse
/// <c>[batch, qo_heads]</c>. An empty sequence gives <c>o = 0</c>, <c>lse = −∞</c>.</para>
/// <para>Error bound (fp32 accumulation vs the double oracle): with <c>ε_s ≈ 1.01·head_dim·2⁻²⁴·sm_scale·max_j Σ|q·k_j|</c>
/// the absolute logit error, each output satisfies <c>|o − o*| ≤ (2ε_s + (kv_len + 8)·2⁻²³)·Σ_j p_j|v_j|</c> and
/// <c>|lse − lse*| ≤ ε_s + kv_len·2⁻²³</c> (the tests check these). Deterministic for a given plan and ISA path.</para>
/// <para>Bandwidth: every K/V row of a kv head is read once for its whole query group; pages of one sequence may lie
/// anywhere in the pool.</para>
/// </remarks>
public static class PagedDecode
{
    /// <summary>Runs a decode plan.</summary>
    /// <param name="plan">The plan (from <see cref="DecodePlanner.Plan"/>).</param>
    /// <param name="q"><c>batch·qo_heads·head_dim</c> queries.</param>
    /// <param name="cache">The cache the plan's page table refers to.</param>
    /// <param name="output"><c>batch·qo_heads·head_dim</c> outputs (overwritten; must not overlap q).</param>
    /// <param name="lse"><c>batch·qo_heads</c> log-sum-exps, or an empty span to skip them.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="InvalidOperationException">The plan's split workspace is smaller than the plan needs.</exception>
    /// <exception cref="NotSupportedException">head_dim is unsupported (multiple of 32 up to 256), or the forced ISA path is unsupported.</exception>
    /// <exception cref="ArgumentException">The cache or a buffer does not match the plan (the message names it and the sizes),
    /// output overlaps q, or lse overlaps q or output.</exception>
    public static void Run(DecodePlan plan, ReadOnlySpan<float> q, PagedKvCache cache, Span<float> output, Span<float> lse, KernelOptions? options = null)
    {
        AttentionLaunch.Check(plan, q, cache, output, lse);
        if (plan.Sinks is { } sinks)
        {
            var l = SinkPass.Lse(lse, (long)plan.QueryRows * plan.Shape.QoHeads);
            AttentionLaunch.Launch(plan, q, cache, output, l, options);
            SinkPass.Apply(sinks, output, l, plan.Shape.QoHeads, plan.Shape.HeadDim);
        }
        else AttentionLaunch.Launch(plan, q, cache, output, lse, options);
    }
}
