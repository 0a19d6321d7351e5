namespace Kernels.Attention.Planning;

/// <summary>
/// One unit of attention work decided by a planner: a tile of query rows × the query heads of a range of kv heads, over a run of pages.
/// </summary>
/// <remarks>
/// Query rows <c>[QueryRow, QueryRow + QueryRows)</c> of the q/output tensors; kv heads <c>[KvHead, KvHead + KvHeads)</c>, and
/// for each kv head <c>kh</c> the query heads <c>kh·group + GroupHead … + GroupHeads</c>; pages <c>[PageBegin, PageEnd)</c> of the
/// plan's page list. Decode items take every kv head, so a page (all heads of a token are adjacent in NHD) is read front to back. For the mask, row <c>QueryRow + i</c> is query <c>MaskQuery + i</c> of a request with <see cref="MaskQoLen"/> queries
/// and <see cref="MaskKvLen"/> keys. <see cref="PartialSlot"/> ≥ 0 writes a split-KV partial state into that workspace slot;
/// −1 writes the final output.
/// </remarks>
/// <param name="QueryRow">First query row.</param>
/// <param name="QueryRows">Query rows.</param>
/// <param name="MaskQuery">Mask index of the first row.</param>
/// <param name="MaskQoLen">Queries of the request (mask alignment).</param>
/// <param name="MaskKvLen">Keys of the request (mask alignment).</param>
/// <param name="KvHead">First kv head.</param>
/// <param name="KvHeads">Kv heads.</param>
/// <param name="GroupHead">First query head within each kv head's group.</param>
/// <param name="GroupHeads">Query heads per kv head.</param>
/// <param name="PageBegin">First entry of the plan's page list.</param>
/// <param name="PageEnd">End of the entries.</param>
/// <param name="PartialSlot">Split-KV slot, or −1.</param>
public readonly record struct AttentionWorkItem(int QueryRow, int QueryRows, int MaskQuery, int MaskQoLen, int MaskKvLen,
    int KvHead, int KvHeads, int GroupHead, int GroupHeads, int PageBegin, int PageEnd, int PartialSlot);
