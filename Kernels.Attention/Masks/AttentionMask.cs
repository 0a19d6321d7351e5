namespace Kernels.Attention.Masks;

/// <summary>Causal and sliding-window masks with FlashInfer's bottom-right alignment.</summary>
/// <remarks>
/// For a request with <c>qo_len</c> queries and <c>kv_len</c> keys (the queries are the last <c>qo_len</c> positions):
/// causal keeps key <c>k</c> for query <c>q</c> iff <c>k ≤ kv_len − qo_len + q</c>; a window <c>window_left = W ≥ 0</c> also
/// requires <c>k + qo_len + W ≥ kv_len + q</c> (i.e. at most W keys to the left of the query's own position);
/// <c>W = −1</c> is no window (FlashInfer <c>mask.cuh</c>, <c>variants.cuh</c>). Both are half-open key ranges per query,
/// which is how the kernels apply them.
/// </remarks>
public static class AttentionMask
{
    /// <summary>The kept key range <c>[start, end)</c> of query <paramref name="queryIndex"/>.</summary>
    /// <param name="queryIndex">Query index in <c>[0, qoLen)</c>.</param>
    /// <param name="qoLen">Queries of the request.</param>
    /// <param name="kvLen">Keys of the request.</param>
    /// <param name="causal">Apply the causal mask.</param>
    /// <param name="windowLeft">Sliding window (−1 = none).</param>
    /// <returns>The range, clamped to <c>[0, kvLen]</c>; empty when start ≥ end.</returns>
    public static (int Start, int End) KeyRange(int queryIndex, int qoLen, int kvLen, bool causal, int windowLeft) =>
        KeyRangeAt((long)kvLen - qoLen + queryIndex, kvLen, causal, windowLeft);

    /// <summary>The kept key range <c>[start, end)</c> of a query whose own key position is <paramref name="position"/>, in
    /// the coordinates of <paramref name="kvLen"/> keys (it may lie past them: a cascade's shared level holds the first keys
    /// of sequences whose queries come later).</summary>
    /// <param name="position">The query's position (<c>kv_len − qo_len + query index</c> for a request's own keys).</param>
    /// <param name="kvLen">Keys.</param>
    /// <param name="causal">Keep only keys at or before the position.</param>
    /// <param name="windowLeft">Keep only keys at most this far before the position (−1 = none).</param>
    /// <returns>The range, clamped to <c>[0, kvLen]</c>; empty when start ≥ end.</returns>
    public static (int Start, int End) KeyRangeAt(long position, int kvLen, bool causal, int windowLeft)
    {
        long end = causal ? Math.Min(kvLen, position + 1) : kvLen;
        long start = windowLeft >= 0 ? Math.Max(0, position - windowLeft) : 0;
        end = Math.Max(end, 0);
        return ((int)Math.Min(start, kvLen), (int)end);
    }

    /// <summary>Whether key <paramref name="keyIndex"/> is kept for query <paramref name="queryIndex"/>.</summary>
    /// <param name="queryIndex">Query index.</param>
    /// <param name="keyIndex">Key index.</param>
    /// <param name="qoLen">Queries of the request.</param>
    /// <param name="kvLen">Keys of the request.</param>
    /// <param name="causal">Apply the causal mask.</param>
    /// <param name="windowLeft">Sliding window (−1 = none).</param>
    /// <returns>True when kept.</returns>
    public static bool IsKept(int queryIndex, int keyIndex, int qoLen, int kvLen, bool causal, int windowLeft)
    {
        if (causal && keyIndex > (long)kvLen - qoLen + queryIndex) return false;
        if (windowLeft >= 0 && (long)keyIndex + qoLen + windowLeft < (long)kvLen + queryIndex) return false;
        return true;
    }
}
