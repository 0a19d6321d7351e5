namespace Kernels.Attention.Paging;

/// <summary>How an integer or fp8 KV cache stores its dequantization scales.</summary>
/// <remarks>
/// <para><see cref="DType.I8"/> (symmetric): <c>x = s · q</c>, <c>q ∈ [−127, 127]</c>, round half to even.
/// <see cref="PerHead"/> uses one static scale per kv head (calibrated, given when the cache is created; values beyond
/// <c>127·s</c> saturate). <see cref="PerToken"/> computes <c>s = max|x| / 127</c> for every (token, head) row when it
/// is written.</para>
/// <para><see cref="DType.I4"/> (QServe KV4, asymmetric) is always per (token, head): <c>x = s · (q − z)</c> with
/// <c>q ∈ [0, 15]</c>, <c>s = (max − min)/15</c>, <c>z = round(−min/s)</c> clamped to <c>[0, 15]</c>. QServe keeps one scale
/// and zero per head of each token; this is that granularity.</para>
/// <para><see cref="DType.F8E4M3"/> and <see cref="DType.F8E5M2"/>: <see cref="None"/> stores the values themselves (unit
/// scale, FlashInfer's default); <see cref="PerHead"/> stores <c>fp8(x / s)</c> with one static scale per kv head (vLLM's
/// <c>k_scale</c>/<c>v_scale</c>, per head: give every head the same scale for a per-tensor one), read as <c>s · fp8</c>.</para>
/// </remarks>
public enum KvScaleMode
{
    /// <summary>No scales (floating-point caches) or the dtype's only mode (int4: per token and head).</summary>
    None,
    /// <summary>int8 and fp8: one static scale per kv head.</summary>
    PerHead,
    /// <summary>int8: one dynamic scale per (token, head) row.</summary>
    PerToken,
}
