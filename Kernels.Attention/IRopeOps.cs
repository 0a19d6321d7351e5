using Kernels.Attention.Positional;

namespace Kernels.Attention;

/// <summary>Rotary position embedding on a backend (vLLM's <c>rotary_embedding</c> with a <c>cos_sin_cache</c>, FlashInfer's
/// <c>apply_rope_pos_ids</c> / <c>apply_rope_with_cos_sin_cache</c>): queries and keys rotate before attention and before
/// <see cref="IPagedAttentionOps.AppendKv"/>.</summary>
public interface IRopeOps
{
    /// <summary>Rotates <paramref name="x"/> by each token's position, with the table's cos/sin entries; dimensions ≥
    /// <see cref="RopeTable.RotaryDim"/> are copied unchanged.</summary>
    /// <param name="table">The cos/sin cache (its head_dim, rotary_dim and pair layout apply).</param>
    /// <param name="positions">One position per token, each in <c>[0, table.MaxPositions)</c>.</param>
    /// <param name="x"><c>[tokens, heads, head_dim]</c> fp32 (any head count: call once for q, once for k).</param>
    /// <param name="output">Shaped like <paramref name="x"/>; may be the same tensor as <paramref name="x"/> to rotate in place
    /// (FlashInfer's <c>apply_rope_inplace</c>).</param>
    /// <exception cref="ArgumentException">The element counts disagree: x and output must hold <c>tokens × heads ×
    /// head_dim</c> floats with tokens = the positions' count (the message names the sizes); or a tensor belongs to another backend.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A position is outside the table (the message names its index and
    /// value); checked before anything is written.</exception>
    void ApplyRope(RopeTable table, DeviceTensor<int> positions, DeviceTensor<float> x, DeviceTensor<float> output);
}
