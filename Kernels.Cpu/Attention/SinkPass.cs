using Kernels.Attention.Reference;

namespace Kernels.Cpu.Attention;

/// <summary>Attention sinks (<c>AttentionOptions.AttentionSinks</c>) on finished outputs: each (row, head) state merges with
/// <c>(0, sink_h)</c> (<see cref="AttentionState.ApplySink"/>), after split-KV chunks or cascade levels have merged, so the
/// sink joins each normaliser exactly once. O(rows · heads · head_dim), outside the kernels.</summary>
internal static class SinkPass
{
    [ThreadStatic] private static float[]? t_lse;

    /// <summary>The caller's lse, or this thread's scratch of <paramref name="rows"/> floats when it passed none (the sink
    /// needs each row's lse; the scratch is allocated once per thread and size).</summary>
    public static Span<float> Lse(Span<float> lse, long rows)
    {
        if (!lse.IsEmpty) return lse;
        if (t_lse is null || t_lse.Length < rows) t_lse = new float[Math.Max(rows, 64)];
        return t_lse.AsSpan(0, (int)rows);
    }

    /// <summary>Applies <paramref name="sinks"/> (one per query head) to <paramref name="output"/> and <paramref name="lse"/>,
    /// rows of <paramref name="qoHeads"/> heads × <paramref name="headDim"/>.</summary>
    public static void Apply(float[] sinks, Span<float> output, Span<float> lse, int qoHeads, int headDim)
    {
        for (int r = 0; r < lse.Length; r++)
            AttentionState.ApplySink(output.Slice(r * headDim, headDim), ref lse[r], sinks[r % qoHeads]);
    }
}
