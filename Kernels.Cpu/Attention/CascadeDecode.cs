using System.Buffers;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;

namespace Kernels.Cpu.Attention;

/// <summary>Cascade (shared-prefix) decode over a paged KV cache: each group's shared keys once for all its sequences, at
/// every shared level, then each sequence's own keys, merged per (sequence, head).</summary>
/// <remarks>
/// <para>Each shared level runs the prefill kernel with the group's sequences as query rows, so each shared K/V row is loaded
/// and widened once for up to <see cref="AttentionPlan.MaxQueriesPerItem"/> queries (16 sequences × 4 heads with GQA 4)
/// instead of once per sequence. The suffix level is <see cref="PagedDecode"/>. The states merge level by level by
/// <see cref="AttentionState.MergeInPlace"/>. The oracle is <see cref="AttentionReference"/>'s <c>Cascade</c>; the error
/// bound is <see cref="PagedDecode"/>'s over the concatenated keys.</para>
/// <para>Scratch for one level's states (<c>batch·qo_heads·(head_dim + 2)</c> floats) comes from
/// <see cref="ArrayPool{T}.Shared"/>: no allocation once the pool holds a buffer of that size.</para>
/// </remarks>
public static class CascadeDecode
{
    /// <summary>Runs a cascade plan.</summary>
    /// <param name="plan">The plan (from <see cref="CascadePlanner"/>).</param>
    /// <param name="q"><c>batch·qo_heads·head_dim</c> queries.</param>
    /// <param name="cache">The cache both levels' pages live in.</param>
    /// <param name="output"><c>batch·qo_heads·head_dim</c> outputs (overwritten; must not overlap q).</param>
    /// <param name="lse"><c>batch·qo_heads</c> log-sum-exps, or an empty span to skip them.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="InvalidOperationException">The plan's split workspace is smaller than the plan needs.</exception>
    /// <exception cref="NotSupportedException">head_dim is unsupported, or the forced ISA path is unsupported.</exception>
    /// <exception cref="ArgumentException">The cache or a buffer does not match the plan (the message names it and the sizes),
    /// output overlaps q, or lse overlaps q or output.</exception>
    public static void Run(CascadePlan plan, ReadOnlySpan<float> q, PagedKvCache cache, Span<float> output, Span<float> lse, KernelOptions? options = null)
    {
        AttentionLaunch.Check(plan, q, cache, output, lse);
        int rows = plan.QueryRows * plan.Shape.QoHeads, d = plan.Shape.HeadDim;
        float[] scratch = ArrayPool<float>.Shared.Rent(rows * (d + 2));
        try
        {
            Span<float> levelOut = scratch.AsSpan(0, rows * d), levelLse = scratch.AsSpan(rows * d, rows);
            Span<float> stateLse = lse.IsEmpty ? scratch.AsSpan(rows * (d + 1), rows) : lse;
            PagedPrefill.Run(plan.Prefix, q, cache, output, stateLse, options);
            for (int l = 1; l <= plan.SharedLevels.Count; l++)
            {
                if (l < plan.SharedLevels.Count) PagedPrefill.Run(plan.SharedLevels[l], q, cache, levelOut, levelLse, options);
                else PagedDecode.Run(plan.Suffix, q, cache, levelOut, levelLse, options);
                for (int r = 0; r < rows; r++)
                    AttentionState.MergeInPlace(output.Slice(r * d, d), ref stateLse[r], levelOut.Slice(r * d, d), levelLse[r]);
            }
            for (int r = 0; r < rows; r++)
                if (float.IsNegativeInfinity(stateLse[r])) output.Slice(r * d, d).Clear(); // no key had weight: 0, as the oracle
            if (plan.Sinks is { } sinks) SinkPass.Apply(sinks, output, stateLse, plan.Shape.QoHeads, d); // once, after every level
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }
    }
}
