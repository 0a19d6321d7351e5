namespace Kernels.Attention.Paging;

/// <summary>
/// The pages of a batch of sequences in BSR form (FlashInfer <c>kv_indptr</c>, <c>kv_indices</c>, <c>kv_last_page_len</c>):
/// sequence <c>i</c> owns pages <c>Indices[Indptr[i] .. Indptr[i+1])</c> in order, and its last page holds
/// <c>LastPageLen[i]</c> tokens.
/// </summary>
/// <remarks>
/// <para><c>kv_len[i] = page_size·(n_i − 1) + last_page_len[i]</c> with <c>n_i = Indptr[i+1] − Indptr[i]</c> and
/// <c>1 ≤ last_page_len ≤ page_size</c>. A sequence with no pages has length 0 and its <c>last_page_len</c> (0 … page_size)
/// is ignored, as in FlashInfer's <c>paged_kv_t::get_length</c>. Token <c>t</c> of sequence <c>i</c> lives in page
/// <c>Indices[Indptr[i] + t / page_size]</c>, slot <c>t % page_size</c>.</para>
/// <para>The table is immutable: the constructor copies and validates the arrays (structure only); page ids are checked
/// against a pool by <see cref="Validate(int)"/>, which the planners call.</para>
/// </remarks>
public sealed class PageTable
{
    private readonly int[] _indptr, _indices, _last;

    /// <summary>Creates and validates a page table.</summary>
    /// <param name="indptr"><c>batch + 1</c> page offsets: starts at 0, non-decreasing, ends at <c>indices.Length</c>.</param>
    /// <param name="indices">Page ids (non-negative).</param>
    /// <param name="lastPageLen"><c>batch</c> token counts of the last pages.</param>
    /// <param name="pageSize">Tokens per page.</param>
    /// <exception cref="ArgumentException">The arrays are inconsistent, or a sequence has more than <see cref="int.MaxValue"/>
    /// tokens; the message names the entry.</exception>
    /// <exception cref="ArgumentOutOfRangeException">pageSize is not positive.</exception>
    public PageTable(ReadOnlySpan<int> indptr, ReadOnlySpan<int> indices, ReadOnlySpan<int> lastPageLen, int pageSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageSize);
        if (indptr.Length < 1) ThrowHelper.Argument(nameof(indptr), "indptr needs batch + 1 ≥ 1 entries; got 0.");
        int batch = indptr.Length - 1;
        ThrowHelper.ThrowIfLengthMismatch(nameof(lastPageLen), lastPageLen.Length, batch);
        if (indptr[0] != 0) ThrowHelper.Argument(nameof(indptr), $"indptr[0] must be 0; got {indptr[0]}.");
        for (int i = 0; i < batch; i++)
        {
            if (indptr[i + 1] < indptr[i])
                ThrowHelper.Argument(nameof(indptr), $"indptr is not monotone: indptr[{i + 1}] = {indptr[i + 1]} < indptr[{i}] = {indptr[i]}.");
            bool empty = indptr[i + 1] == indptr[i];
            int lo = empty ? 0 : 1;
            if (lastPageLen[i] < lo || lastPageLen[i] > pageSize)
                ThrowHelper.Argument(nameof(lastPageLen), $"lastPageLen[{i}] = {lastPageLen[i]} is outside [{lo}, {pageSize}] (page_size {pageSize}).");
            long kvLen = empty ? 0 : (long)pageSize * (indptr[i + 1] - indptr[i] - 1) + lastPageLen[i];
            if (kvLen > int.MaxValue)
                ThrowHelper.Argument(nameof(indptr), $"Sequence {i} has {indptr[i + 1] - indptr[i]} pages of {pageSize} tokens ({kvLen} tokens); at most {int.MaxValue} are supported.");
        }
        if (indptr[batch] != indices.Length)
            ThrowHelper.Argument(nameof(indices), $"indices has {indices.Length} entries but indptr[{batch}] = {indptr[batch]}.");
        for (int j = 0; j < indices.Length; j++)
            if (indices[j] < 0) ThrowHelper.Argument(nameof(indices), $"indices[{j}] = {indices[j]} is negative.");
        _indptr = indptr.ToArray();
        _indices = indices.ToArray();
        _last = lastPageLen.ToArray();
        PageSize = pageSize;
        int max = -1;
        foreach (int p in _indices) max = Math.Max(max, p);
        MaxPageId = max;
    }

    /// <summary>Sequences in the batch.</summary>
    public int BatchSize => _indptr.Length - 1;

    /// <summary>Tokens per page.</summary>
    public int PageSize { get; }

    /// <summary>The largest page id referenced (−1 when there are none).</summary>
    public int MaxPageId { get; }

    /// <summary>Page offsets, <c>batch + 1</c> entries.</summary>
    public ReadOnlySpan<int> Indptr => _indptr;

    /// <summary>Page ids.</summary>
    public ReadOnlySpan<int> Indices => _indices;

    /// <summary>Tokens in each sequence's last page.</summary>
    public ReadOnlySpan<int> LastPageLen => _last;

    /// <summary>Pages of sequence <paramref name="sequence"/>.</summary>
    /// <param name="sequence">Sequence index.</param>
    /// <returns>The page count.</returns>
    public int PageCount(int sequence) => _indptr[sequence + 1] - _indptr[sequence];

    /// <summary>Tokens of sequence <paramref name="sequence"/>.</summary>
    /// <param name="sequence">Sequence index.</param>
    /// <returns><c>page_size·(n − 1) + last_page_len</c>, or 0 with no pages.</returns>
    public int KvLength(int sequence)
    {
        int n = PageCount(sequence);
        return n == 0 ? 0 : PageSize * (n - 1) + _last[sequence];
    }

    /// <summary>Checks every page id against a pool of <paramref name="numPages"/> pages.</summary>
    /// <param name="numPages">Pages in the pool.</param>
    /// <exception cref="ArgumentException">A page id is past the pool; the message names the sequence and entry.</exception>
    public void Validate(int numPages)
    {
        if (MaxPageId < numPages) return;
        for (int i = 0; i < BatchSize; i++)
            for (int j = _indptr[i]; j < _indptr[i + 1]; j++)
                if (_indices[j] >= numPages)
                    ThrowHelper.Argument("table", $"indices[{j}] = {_indices[j]} (sequence {i}) is past the pool of {numPages} pages.");
    }

    /// <summary>Converts vLLM block tables to a FlashInfer page table.</summary>
    /// <param name="blockTables"><c>[numSeqs, maxBlocks]</c> row-major block ids; entries past a sequence's last block are padding and ignored.</param>
    /// <param name="maxBlocks">Columns of <paramref name="blockTables"/>.</param>
    /// <param name="seqLens"><c>numSeqs</c> token counts.</param>
    /// <param name="pageSize">vLLM's <c>block_size</c>.</param>
    /// <returns>The table: <c>n_i = ceil(len_i / page)</c>, <c>indices += block_tables[i, :n_i]</c>,
    /// <c>last_page_len[i] = len_i − (n_i − 1)·page</c> (0 for an empty sequence).</returns>
    /// <exception cref="ArgumentException">Sizes disagree, a length is negative or needs more than maxBlocks blocks, or a used block id is negative.</exception>
    public static PageTable FromBlockTables(ReadOnlySpan<int> blockTables, int maxBlocks, ReadOnlySpan<int> seqLens, int pageSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageSize);
        int numSeqs = seqLens.Length;
        ThrowHelper.ThrowIfLengthMismatch(nameof(blockTables), blockTables.Length, (long)numSeqs * maxBlocks);
        var indptr = new int[numSeqs + 1];
        var last = new int[numSeqs];
        for (int i = 0; i < numSeqs; i++)
        {
            int len = seqLens[i];
            if (len < 0) ThrowHelper.Argument(nameof(seqLens), $"seqLens[{i}] = {len} is negative.");
            int n = (int)(((long)len + pageSize - 1) / pageSize);
            if (n > maxBlocks)
                ThrowHelper.Argument(nameof(seqLens), $"seqLens[{i}] = {len} needs {n} blocks of {pageSize}; the block table has {maxBlocks} columns.");
            indptr[i + 1] = indptr[i] + n;
            last[i] = n == 0 ? 0 : len - (n - 1) * pageSize;
        }
        var indices = new int[indptr[numSeqs]];
        for (int i = 0; i < numSeqs; i++)
        {
            int n = indptr[i + 1] - indptr[i];
            for (int j = 0; j < n; j++)
            {
                int block = blockTables[i * maxBlocks + j];
                if (block < 0) ThrowHelper.Argument(nameof(blockTables), $"blockTables[{i}, {j}] = {block} is negative but within seqLens[{i}] = {seqLens[i]}.");
                indices[indptr[i] + j] = block;
            }
        }
        return new PageTable(indptr, indices, last, pageSize);
    }
}
