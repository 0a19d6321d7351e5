namespace Kernels.Attention.Masks;

/// <summary>
/// A block-sparse attention mask in BSR form over the <c>M × N</c> (query, key) score matrix with <c>R × C</c> blocks
/// (FlashInfer <c>BlockSparseAttentionWrapper</c>, scipy BSR): block row <c>i</c> keeps the key blocks
/// <c>Indices[Indptr[i] .. Indptr[i+1])</c>.
/// </summary>
/// <remarks>
/// <c>MB = ceil(M/R)</c> block rows and <c>NB = ceil(N/C)</c> block columns (the last of either may be partial). Within a row
/// the column ids must be strictly increasing (no duplicates; FlashInfer would count a duplicate twice). A kernel maps the
/// mask onto a paged KV cache whose page <c>j</c> is key block <c>j</c> (page size <c>C</c>) and never touches the pages of
/// blocks the mask excludes. CSR is the <c>R = C = 1</c> case.
/// </remarks>
public sealed class BlockSparseMask
{
    private readonly int[] _indptr, _indices;

    /// <summary>Creates and validates a mask.</summary>
    /// <param name="indptr"><c>MB + 1</c> offsets: starts at 0, non-decreasing, ends at <c>indices.Length</c>.</param>
    /// <param name="indices">Block-column ids, strictly increasing per row, each in <c>[0, NB)</c>.</param>
    /// <param name="m">Query rows M.</param>
    /// <param name="n">Keys N.</param>
    /// <param name="r">Block rows R.</param>
    /// <param name="c">Block columns C.</param>
    /// <exception cref="ArgumentOutOfRangeException">A size is negative (m, n) or not positive (r, c).</exception>
    /// <exception cref="ArgumentException">The arrays are inconsistent; the message names the entry.</exception>
    public BlockSparseMask(ReadOnlySpan<int> indptr, ReadOnlySpan<int> indices, int m, int n, int r, int c)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(r);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(c);
        int mb = (int)(((long)m + r - 1) / r), nb = (int)(((long)n + c - 1) / c);
        ThrowHelper.ThrowIfLengthMismatch(nameof(indptr), indptr.Length, mb + 1);
        ThrowHelper.ThrowIfNotOffsets(nameof(indptr), indptr);
        if (indptr[mb] != indices.Length)
            ThrowHelper.Argument(nameof(indices), $"indices has {indices.Length} entries but indptr[{mb}] = {indptr[mb]}.");
        for (int i = 0; i < mb; i++)
            for (int j = indptr[i]; j < indptr[i + 1]; j++)
            {
                if ((uint)indices[j] >= (uint)nb)
                    ThrowHelper.Argument(nameof(indices), $"indices[{j}] = {indices[j]} (block row {i}) is outside [0, {nb}).");
                if (j > indptr[i] && indices[j] <= indices[j - 1])
                    ThrowHelper.Argument(nameof(indices), $"indices of block row {i} are not strictly increasing at entry {j}.");
            }
        _indptr = indptr.ToArray();
        _indices = indices.ToArray();
        M = m;
        N = n;
        R = r;
        C = c;
    }

    /// <summary>Query rows.</summary>
    public int M { get; }

    /// <summary>Keys.</summary>
    public int N { get; }

    /// <summary>Block height.</summary>
    public int R { get; }

    /// <summary>Block width.</summary>
    public int C { get; }

    /// <summary>Block rows <c>ceil(M/R)</c>.</summary>
    public int BlockRows => _indptr.Length - 1;

    /// <summary>Block columns <c>ceil(N/C)</c>.</summary>
    public int BlockColumns => (int)(((long)N + C - 1) / C);

    /// <summary>Row offsets.</summary>
    public ReadOnlySpan<int> Indptr => _indptr;

    /// <summary>Block-column ids.</summary>
    public ReadOnlySpan<int> Indices => _indices;

    /// <summary>Whether score (<paramref name="query"/>, <paramref name="key"/>) lies in a kept block.</summary>
    /// <param name="query">Query row.</param>
    /// <param name="key">Key index.</param>
    /// <returns>True when its block is present.</returns>
    /// <exception cref="ArgumentOutOfRangeException">query is outside [0, M) or key outside [0, N).</exception>
    public bool Contains(int query, int key)
    {
        if ((uint)query >= (uint)M) throw new ArgumentOutOfRangeException(nameof(query), query, $"query {query} is outside [0, {M}).");
        if ((uint)key >= (uint)N) throw new ArgumentOutOfRangeException(nameof(key), key, $"key {key} is outside [0, {N}).");
        int row = query / R, col = key / C;
        return Array.BinarySearch(_indices, _indptr[row], _indptr[row + 1] - _indptr[row], col) >= 0;
    }

    /// <summary>An element-wise mask inside the kept blocks (FlashInfer's <c>BlockSparseAttentionWrapper</c> <c>mask</c>): entry
    /// <c>(n, r, c)</c> of <paramref name="blockElements"/>, <c>nnz × R × C</c> row-major, keeps query <c>i·R + r</c> and key
    /// <c>j·C + c</c> of the n-th kept block (block row i, column <c>Indices[n] = j</c>); entries past M or N are ignored.
    /// The result is a <see cref="CustomMask"/> over one request of M queries and N keys, for
    /// <see cref="Planning.PrefillPlanner.PlanBlockSparse"/>.</summary>
    /// <param name="blockElements"><c>nnz · R · C</c> booleans, true = kept.</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException"><paramref name="blockElements"/> does not hold <c>nnz · R · C</c> entries.</exception>
    public CustomMask ElementMask(ReadOnlySpan<bool> blockElements)
    {
        long per = (long)R * C;
        ThrowHelper.ThrowIfLengthMismatch(nameof(blockElements), blockElements.Length, _indices.Length * per);
        bool[] elements = blockElements.ToArray(); // the callback below cannot capture a span
        return CustomMask.FromWords([0, M], [N], (words, rowWord) =>
        {
            for (int i = 0; i < BlockRows; i++)
                for (int n = _indptr[i]; n < _indptr[i + 1]; n++)
                    for (int r = 0; r < R && i * R + r < M; r++)
                    {
                        int w = rowWord[i * R + r];
                        for (int c = 0, key = _indices[n] * C; c < C && key < N; c++, key++)
                            if (elements[n * per + r * C + c]) words[w + (key >> 5)] |= 1u << (key & 31);
                    }
        });
    }

    /// <summary>Tokens in key block <paramref name="column"/>: <c>C</c>, or the remainder for the last block.</summary>
    /// <param name="column">Block column.</param>
    /// <returns>The block's key count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">column is outside [0, BlockColumns).</exception>
    public int ColumnLength(int column)
    {
        if ((uint)column >= (uint)BlockColumns)
            throw new ArgumentOutOfRangeException(nameof(column), column, $"column {column} is outside the mask's {BlockColumns} key blocks.");
        return Math.Min(C, N - column * C);
    }
}
