namespace Kernels.Attention.Paging;

/// <summary>The order of the token and head axes inside one page (FlashInfer's <c>kv_layout</c>).</summary>
/// <remarks>
/// <para><see cref="Nhd"/>: a page is <c>[page_size, kv_heads, head_dim]</c>; row (slot, head) lies at
/// <c>(page·page_size + slot)·kv_heads + head</c>.</para>
/// <para><see cref="Hnd"/>: a page is <c>[kv_heads, page_size, head_dim]</c>; row (slot, head) lies at
/// <c>(page·kv_heads + head)·page_size + slot</c>, so the tokens of one head are contiguous (what a decode kernel
/// that walks one kv head streams).</para>
/// </remarks>
public enum KvLayout
{
    /// <summary>Token-major pages <c>[page_size, kv_heads, head_dim]</c> (FlashInfer <c>"NHD"</c>, the default).</summary>
    Nhd,
    /// <summary>Head-major pages <c>[kv_heads, page_size, head_dim]</c> (FlashInfer <c>"HND"</c>).</summary>
    Hnd,
}
