namespace Kernels.Attention.Planning;

/// <summary>
/// One unit of attention work decided by a planner: a tile of query rows and heads of one kv head, over a run of pages.
/// </summary>
/// <remarks>
/// Query rows <c>[QueryRow, QueryRow + QueryRows)</c> of the q/output tensors, query heads
/// <c>[Head, Head + Heads)</c> (all reading kv head <see cref="KvHead"/>), pages <c>[PageBegin, PageEnd)</c> of the plan's page
/// list. For the mask, row <c>QueryRow + i</c> is query <c>MaskQuery + i</c> of a request with <see cref="MaskQoLen"/> queries
/// and <see cref="MaskKvLen"/> keys. <see cref="PartialSlot"/> ≥ 0 writes a split-KV partial state into that workspace slot;
/// −1 writes the final output.
/// </remarks>
/// <param name="QueryRow">First query row.</param>
/// <param name="QueryRows">Query rows.</param>
/// <param name="MaskQuery">Mask index of the first row.</param>
/// <param name="MaskQoLen">Queries of the request (mask alignment).</param>
/// <param name="MaskKvLen">Keys of the request (mask alignment).</param>
/// <param name="KvHead">Kv head.</param>
/// <param name="Head">First query head.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="PageBegin">First entry of the plan's page list.</param>
/// <param name="PageEnd">End of the entries.</param>
/// <param name="PartialSlot">Split-KV slot, or −1.</param>
public readonly record struct AttentionWorkItem(int QueryRow, int QueryRows, int MaskQuery, int MaskQoLen, int MaskKvLen,
    int KvHead, int Head, int Heads, int PageBegin, int PageEnd, int PartialSlot);
