namespace Kernels.Attention.Paging;

/// <summary>Where appended tokens' keys and values go in a paged cache: token <c>i</c> of an append batch is written to
/// (<see cref="Pages"/>[i], <see cref="Slots"/>[i]) (FlashInfer's <c>append_paged_kv_cache</c>, vLLM's
/// <c>reshape_and_cache</c>).</summary>
/// <remarks>
/// <para>The page table describes the sequences <i>after</i> the append (their pages already allocated, e.g. by
/// <see cref="PageAllocator"/> or a runtime's block manager): token <c>i</c> belongs to sequence <c>batchIndices[i]</c> at
/// position <c>positions[i]</c>, so it lands in page <c>Indices[Indptr[b] + p / page_size]</c>, slot <c>p % page_size</c>.
/// <see cref="ForDecode"/> and <see cref="ForAppend"/> build the usual cases (one new token per sequence; the last n tokens
/// of each sequence, FlashInfer's <c>get_batch_indices_positions</c>).</para>
/// <para><see cref="FromSlotMapping"/> takes vLLM's flat slot numbers (<c>page·page_size + slot</c>, negative for padding
/// tokens, which are skipped: their <see cref="Pages"/> entry is −1 and their key and value rows are not read).</para>
/// <para>Everything is checked when the plan is made, before any memory is touched: sequence indices, positions within the
/// sequence's length, page ids within the pool, and that no two tokens target the same slot.</para>
/// </remarks>
public sealed class KvAppendPlan
{
    private readonly int[] _pages, _slots;

    private KvAppendPlan(int[] pages, int[] slots, int pageSize, int numPages)
    {
        _pages = pages;
        _slots = slots;
        PageSize = pageSize;
        NumPages = numPages;
    }

    /// <summary>Tokens in the append batch.</summary>
    public int Tokens => _pages.Length;

    /// <summary>The page of each token; −1 for a padding token that is not written (<see cref="FromSlotMapping"/>).</summary>
    public ReadOnlySpan<int> Pages => _pages;

    /// <summary>The slot (in its page) of each token (0 for a padding token).</summary>
    public ReadOnlySpan<int> Slots => _slots;

    /// <summary>Tokens per page of the cache the plan targets.</summary>
    public int PageSize { get; }

    /// <summary>Pages of the pool the plan was checked against.</summary>
    public int NumPages { get; }

    /// <summary>Plans an append of arbitrary (sequence, position) tokens.</summary>
    /// <param name="table">The sequences' pages after the append.</param>
    /// <param name="batchIndices">The sequence of each appended token.</param>
    /// <param name="positions">The position of each appended token in its sequence (<c>0 ≤ p &lt; kv_len</c>).</param>
    /// <param name="numPages">Pages of the pool (every target page is checked against it).</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">The spans differ in length, a sequence index or position is out of range, a page
    /// id is past the pool, or two tokens target the same slot; the message names the token.</exception>
    public static KvAppendPlan Create(PageTable table, ReadOnlySpan<int> batchIndices, ReadOnlySpan<int> positions, int numPages)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numPages);
        ThrowHelper.ThrowIfLengthMismatch(nameof(positions), positions.Length, batchIndices.Length);
        int n = batchIndices.Length, ps = table.PageSize;
        var pages = new int[n];
        var slots = new int[n];
        var seen = new HashSet<long>(n);
        for (int i = 0; i < n; i++)
        {
            int b = batchIndices[i], p = positions[i];
            if ((uint)b >= (uint)table.BatchSize)
                ThrowHelper.Argument(nameof(batchIndices), $"batchIndices[{i}] = {b} is outside the table's {table.BatchSize} sequences.");
            int len = table.KvLength(b);
            if ((uint)p >= (uint)len)
                ThrowHelper.Argument(nameof(positions), $"positions[{i}] = {p} is outside sequence {b}'s {len} tokens (the table describes the sequences after the append).");
            int page = table.Indices[table.Indptr[b] + p / ps];
            if (page >= numPages)
                ThrowHelper.Argument(nameof(table), $"Token {i} (sequence {b}, position {p}) targets page {page}, past the pool's {numPages} pages.");
            pages[i] = page;
            slots[i] = p % ps;
            if (!seen.Add((long)page * ps + slots[i]))
                ThrowHelper.Argument(nameof(positions), $"Token {i} (sequence {b}, position {p}) targets page {page}, slot {slots[i]}, which an earlier token of the batch also targets.");
        }
        return new KvAppendPlan(pages, slots, ps, numPages);
    }

    /// <summary>Plans an append from vLLM's <c>slot_mapping</c> (<c>reshape_and_cache</c>): token <c>i</c> goes to page
    /// <c>slotMapping[i] / pageSize</c>, slot <c>slotMapping[i] % pageSize</c>; a negative entry marks a padding token, which is
    /// skipped (vLLM's <c>-1</c>).</summary>
    /// <param name="slotMapping">The flat slot of each token of the batch (keys and values have one row per entry).</param>
    /// <param name="pageSize">Tokens per page (vLLM's block size).</param>
    /// <param name="numPages">Pages of the pool (every target page is checked against it).</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">A slot is past the pool's <c>numPages·pageSize</c> slots, or two tokens target the
    /// same slot; the message names the token.</exception>
    public static KvAppendPlan FromSlotMapping(ReadOnlySpan<long> slotMapping, int pageSize, int numPages)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numPages);
        int n = slotMapping.Length;
        long slotsInPool = (long)numPages * pageSize;
        var pages = new int[n];
        var slots = new int[n];
        var seen = new HashSet<long>(n);
        for (int i = 0; i < n; i++)
        {
            long s = slotMapping[i];
            if (s < 0)
            {
                pages[i] = -1;
                continue;
            }
            if (s >= slotsInPool)
                ThrowHelper.Argument(nameof(slotMapping), $"slotMapping[{i}] = {s} is past the pool's {slotsInPool} slots ({numPages} pages of {pageSize}).");
            if (!seen.Add(s))
                ThrowHelper.Argument(nameof(slotMapping), $"slotMapping[{i}] = {s} (page {s / pageSize}, slot {s % pageSize}) is also targeted by an earlier token of the batch.");
            pages[i] = (int)(s / pageSize);
            slots[i] = (int)(s % pageSize);
        }
        return new KvAppendPlan(pages, slots, pageSize, numPages);
    }

    /// <summary>Plans the decode step's append: the last token of every non-empty sequence (one token per such sequence, in
    /// batch order).</summary>
    /// <param name="table">The sequences' pages after the append.</param>
    /// <param name="numPages">Pages of the pool.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">A page id is past the pool.</exception>
    public static KvAppendPlan ForDecode(PageTable table, int numPages)
    {
        ArgumentNullException.ThrowIfNull(table);
        var counts = new int[table.BatchSize];
        for (int b = 0; b < counts.Length; b++) counts[b] = table.KvLength(b) > 0 ? 1 : 0;
        return ForAppend(table, counts, numPages);
    }

    /// <summary>Plans the append of the last <c>appendLengths[b]</c> tokens of every sequence <c>b</c> (prefill or a chunk of
    /// it: FlashInfer's <c>get_batch_indices_positions</c>), tokens in batch order, then position order.</summary>
    /// <param name="table">The sequences' pages after the append.</param>
    /// <param name="appendLengths">Tokens appended to each sequence (<c>0 ≤ n ≤ kv_len</c>).</param>
    /// <param name="numPages">Pages of the pool.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">appendLengths has the wrong length, an entry out of range or a sum past
    /// <see cref="Array.MaxLength"/>, or a page id is past the pool.</exception>
    public static KvAppendPlan ForAppend(PageTable table, ReadOnlySpan<int> appendLengths, int numPages)
    {
        ArgumentNullException.ThrowIfNull(table);
        ThrowHelper.ThrowIfLengthMismatch(nameof(appendLengths), appendLengths.Length, table.BatchSize);
        long total = 0;
        for (int b = 0; b < appendLengths.Length; b++)
        {
            int len = table.KvLength(b);
            if ((uint)appendLengths[b] > (uint)len)
                ThrowHelper.Argument(nameof(appendLengths), $"appendLengths[{b}] = {appendLengths[b]} is outside 0 … {len} (sequence {b}'s length after the append).");
            total += appendLengths[b];
        }
        if (total > Array.MaxLength)
            ThrowHelper.Argument(nameof(appendLengths), $"appendLengths sum to {total} tokens; one append plan holds at most {Array.MaxLength}.");
        var batch = new int[total];
        var positions = new int[total];
        for (int b = 0, i = 0; b < appendLengths.Length; b++)
            for (int p = table.KvLength(b) - appendLengths[b]; p < table.KvLength(b); p++, i++)
            {
                batch[i] = b;
                positions[i] = p;
            }
        return Create(table, batch, positions, numPages);
    }
}
