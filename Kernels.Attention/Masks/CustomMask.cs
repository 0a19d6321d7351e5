namespace Kernels.Attention.Masks;

/// <summary>
/// An element-wise (query, key) mask for batch prefill (FlashInfer's <c>custom_mask</c> / <c>packed_custom_mask</c>): request
/// <c>i</c> has a <c>qo_len_i × kv_len_i</c> boolean matrix, row-major, true = the key is kept. Tree attention for
/// speculative decoding (Medusa, EAGLE, SpecInfer) verifies a token tree in one prefill call with such a mask: each draft
/// token sees the prompt and its own ancestors.
/// </summary>
/// <remarks>
/// <para>Give it to <see cref="Planning.PrefillPlanner.Plan"/>.
/// The mask is ANDed with the options' causal and window masks. FlashInfer replaces the causal mask by a custom one; pass
/// <c>Causal = false</c> for exactly that.</para>
/// <para>The bits are stored row-aligned, each query row's bits starting on a 32-bit word. With the first and last kept key
/// of every row, the kernels skip the pages outside a row's kept keys and never read a key the mask excludes. A key's V row
/// is not read either, so an Inf or NaN there cannot leak through a zero weight. Memory: one bit per (query, key), plus
/// three ints per query row.</para>
/// </remarks>
public sealed class CustomMask
{
    private readonly int[] _qoIndptr, _kvLens, _rowWord, _rowLo, _rowHi;
    private readonly uint[] _words; // row-aligned bits, then one padding word (kernels read two words at a time)

    private CustomMask(int[] qoIndptr, int[] kvLens, int[] rowWord, int[] rowLo, int[] rowHi, uint[] words)
    {
        _qoIndptr = qoIndptr;
        _kvLens = kvLens;
        _rowWord = rowWord;
        _rowLo = rowLo;
        _rowHi = rowHi;
        _words = words;
    }

    /// <summary>Requests (sequences).</summary>
    public int Requests => _kvLens.Length;

    /// <summary>Query rows of all requests: <c>qoIndptr[^1]</c>.</summary>
    public int QueryRows => _qoIndptr[^1];

    /// <summary>The <c>batch + 1</c> query offsets the mask was made for.</summary>
    public ReadOnlySpan<int> QoIndptr => _qoIndptr;

    /// <summary>Keys of each request.</summary>
    public ReadOnlySpan<int> KvLengths => _kvLens;

    /// <summary>Makes a mask from FlashInfer's flattened boolean form: request <c>i</c>'s <c>qo_len_i · kv_len_i</c> entries,
    /// row-major, after those of the requests before it (<c>mask_indptr</c> = the running sum of <c>qo_len · kv_len</c>).</summary>
    /// <param name="mask">The entries, true = kept.</param>
    /// <param name="qoIndptr"><c>batch + 1</c> query offsets (start at 0, non-decreasing).</param>
    /// <param name="kvLens">Keys per request (≥ 0).</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException">The offsets are malformed (or give more query rows than an array holds), a length
    /// is negative, or <paramref name="mask"/> does not hold <c>Σ qo_len · kv_len</c> entries (the message names both
    /// counts).</exception>
    public static CustomMask FromBooleans(ReadOnlySpan<bool> mask, ReadOnlySpan<int> qoIndptr, ReadOnlySpan<int> kvLens)
    {
        var (rowWord, words) = Layout(qoIndptr, kvLens, out long entries, out _);
        ThrowHelper.ThrowIfLengthMismatch(nameof(mask), mask.Length, entries);
        long e = 0;
        int row = 0;
        for (int b = 0; b < kvLens.Length; b++)
            for (int i = qoIndptr[b]; i < qoIndptr[b + 1]; i++, row++)
            {
                int w = rowWord[row];
                for (int j = 0; j < kvLens[b]; j++, e++)
                    if (mask[(int)e]) words[w + (j >> 5)] |= 1u << (j & 31);
            }
        return Finish(qoIndptr, kvLens, rowWord, words);
    }

    /// <summary>Makes a mask from FlashInfer's <c>packed_custom_mask</c>: each request's <c>qo_len · kv_len</c> booleans
    /// (row-major) packed eight per byte, least significant bit first (<c>numpy.packbits(…, bitorder="little")</c>), and
    /// padded to a whole byte before the next request's (<c>segment_packbits</c>; offsets = the running sum of
    /// <c>⌈qo_len · kv_len / 8⌉</c>, see <see cref="PackedLength"/>).</summary>
    /// <param name="packed">The packed bytes.</param>
    /// <param name="qoIndptr"><c>batch + 1</c> query offsets.</param>
    /// <param name="kvLens">Keys per request.</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException">The offsets are malformed (or give more query rows than an array holds), or
    /// <paramref name="packed"/> has the wrong length (the message names both lengths).</exception>
    public static CustomMask FromPacked(ReadOnlySpan<byte> packed, ReadOnlySpan<int> qoIndptr, ReadOnlySpan<int> kvLens)
    {
        var (rowWord, words) = Layout(qoIndptr, kvLens, out _, out long bytes);
        ThrowHelper.ThrowIfLengthMismatch(nameof(packed), packed.Length, bytes);
        long byteBase = 0;
        int row = 0;
        for (int b = 0; b < kvLens.Length; b++)
        {
            int qn = qoIndptr[b + 1] - qoIndptr[b], kn = kvLens[b];
            for (int i = 0; i < qn; i++, row++)
            {
                int w = rowWord[row];
                long bit = (long)i * kn;
                for (int j = 0; j < kn; j++, bit++)
                    if (((packed[(int)(byteBase + (bit >> 3))] >> (int)(bit & 7)) & 1) != 0) words[w + (j >> 5)] |= 1u << (j & 31);
            }
            byteBase += ((long)qn * kn + 7) / 8;
        }
        return Finish(qoIndptr, kvLens, rowWord, words);
    }

    /// <summary>Makes a mask from a predicate.</summary>
    /// <param name="qoIndptr"><c>batch + 1</c> query offsets.</param>
    /// <param name="kvLens">Keys per request.</param>
    /// <param name="keep"><c>(request, query within the request, key) → kept</c>.</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException">The offsets are malformed (or give more query rows than an array holds).</exception>
    public static CustomMask Create(ReadOnlySpan<int> qoIndptr, ReadOnlySpan<int> kvLens, Func<int, int, int, bool> keep)
    {
        ArgumentNullException.ThrowIfNull(keep);
        var (rowWord, words) = Layout(qoIndptr, kvLens, out _, out _);
        int row = 0;
        for (int b = 0; b < kvLens.Length; b++)
            for (int i = 0; i < qoIndptr[b + 1] - qoIndptr[b]; i++, row++)
                for (int j = 0; j < kvLens[b]; j++)
                    if (keep(b, i, j)) words[rowWord[row] + (j >> 5)] |= 1u << (j & 31);
        return Finish(qoIndptr, kvLens, rowWord, words);
    }

    /// <summary>Makes a mask by setting bits directly: <paramref name="set"/> gets (query row, key) pairs to keep through a
    /// callback that receives the words of all rows and each row's word offset (for builders that visit only kept regions).</summary>
    internal static CustomMask FromWords(ReadOnlySpan<int> qoIndptr, ReadOnlySpan<int> kvLens, Action<uint[], int[]> set)
    {
        var (rowWord, words) = Layout(qoIndptr, kvLens, out _, out _);
        set(words, rowWord);
        return Finish(qoIndptr, kvLens, rowWord, words);
    }

    /// <summary>The byte length of FlashInfer's packed form for these requests: <c>Σ ⌈qo_len · kv_len / 8⌉</c>.</summary>
    /// <param name="qoIndptr"><c>batch + 1</c> query offsets.</param>
    /// <param name="kvLens">Keys per request.</param>
    /// <returns>Bytes.</returns>
    /// <exception cref="ArgumentException">The offsets are malformed (or give more query rows than an array holds).</exception>
    public static long PackedLength(ReadOnlySpan<int> qoIndptr, ReadOnlySpan<int> kvLens)
    {
        Layout(qoIndptr, kvLens, out _, out long bytes, allocate: false);
        return bytes;
    }

    /// <summary>Whether query row <paramref name="row"/> (of all requests, in <c>qo_indptr</c> order) keeps key
    /// <paramref name="key"/> of its request.</summary>
    /// <param name="row">Query row in <c>[0, QueryRows)</c>.</param>
    /// <param name="key">Key in <c>[0, kv_len)</c> of the row's request.</param>
    /// <returns>True when kept.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The row or key is out of range.</exception>
    public bool IsKept(int row, int key)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)row, (uint)QueryRows, nameof(row));
        int b = RequestOf(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)key, (uint)_kvLens[b], nameof(key));
        return ((_words[_rowWord[row] + (key >> 5)] >> (key & 31)) & 1) != 0;
    }

    /// <summary>The first kept key and one past the last of query row <paramref name="row"/> (<c>(0, 0)</c> when it keeps none):
    /// outside this range nothing is read for the row.</summary>
    /// <param name="row">Query row.</param>
    /// <returns>The range.</returns>
    public (int Start, int End) KeptRange(int row)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)row, (uint)QueryRows, nameof(row));
        return (_rowLo[row], _rowHi[row]);
    }

    /// <summary>Per query row: the word offset of its bits in <see cref="Words"/>.</summary>
    internal int[] RowWord => _rowWord;

    /// <summary>Per query row: the first kept key.</summary>
    internal int[] RowLo => _rowLo;

    /// <summary>Per query row: one past the last kept key.</summary>
    internal int[] RowHi => _rowHi;

    /// <summary>The row-aligned bits, bit <c>j % 32</c> of word <c>RowWord[row] + j / 32</c> for key j, then one padding word.</summary>
    internal uint[] Words => _words;

    /// <summary>Throws unless the mask was made for these requests.</summary>
    internal void CheckMatches(ReadOnlySpan<int> qoIndptr, Paging.PageTable table, string paramName)
    {
        if (Requests != table.BatchSize)
            ThrowHelper.Argument(paramName, $"The custom mask has {Requests} requests; the page table has {table.BatchSize}.");
        for (int b = 0; b < Requests; b++)
        {
            int qn = qoIndptr[b + 1] - qoIndptr[b], mqn = _qoIndptr[b + 1] - _qoIndptr[b];
            if (qn != mqn)
                ThrowHelper.Argument(paramName, $"Request {b} has {qn} queries; the custom mask has {mqn} rows for it.");
            if (table.KvLength(b) != _kvLens[b])
                ThrowHelper.Argument(paramName, $"Request {b} has {table.KvLength(b)} keys; the custom mask has {_kvLens[b]} columns for it.");
        }
    }

    private int RequestOf(int row)
    {
        int b = Array.BinarySearch(_qoIndptr, row);
        if (b < 0) return ~b - 1;
        while (b + 1 < _qoIndptr.Length && _qoIndptr[b + 1] == row) b++; // empty requests share an offset
        return b;
    }

    private static (int[] RowWord, uint[] Words) Layout(ReadOnlySpan<int> qoIndptr, ReadOnlySpan<int> kvLens, out long entries, out long packedBytes,
        bool allocate = true)
    {
        ThrowHelper.ThrowIfLengthMismatch(nameof(qoIndptr), qoIndptr.Length, (long)kvLens.Length + 1);
        ThrowHelper.ThrowIfNotOffsets(nameof(qoIndptr), qoIndptr);
        if (qoIndptr[^1] > Array.MaxLength) // the per-row arrays would not fit (allocating them threw OutOfMemoryException)
            ThrowHelper.Argument(nameof(qoIndptr), $"qoIndptr[{qoIndptr.Length - 1}] = {qoIndptr[^1]} query rows; a mask holds at most {Array.MaxLength}.");
        entries = 0;
        packedBytes = 0;
        long words = 0;
        for (int b = 0; b < kvLens.Length; b++)
        {
            if (kvLens[b] < 0) ThrowHelper.Argument(nameof(kvLens), $"kvLens[{b}] = {kvLens[b]} is negative.");
            long qn = qoIndptr[b + 1] - qoIndptr[b];
            entries += qn * kvLens[b];
            packedBytes += (qn * kvLens[b] + 7) / 8;
            words += qn * ((kvLens[b] + 31L) / 32);
        }
        if (words + 1 > Array.MaxLength)
            ThrowHelper.Argument(nameof(kvLens), $"The custom mask needs {words + 1} 32-bit words, more than an array holds.");
        if (!allocate) return ([], []);
        var rowWord = new int[qoIndptr[^1]];
        int row = 0, w = 0;
        for (int b = 0; b < kvLens.Length; b++)
            for (int i = qoIndptr[b]; i < qoIndptr[b + 1]; i++, row++, w += (int)((kvLens[b] + 31L) / 32)) rowWord[row] = w;
        return (rowWord, new uint[words + 1]);
    }

    private static CustomMask Finish(ReadOnlySpan<int> qoIndptr, ReadOnlySpan<int> kvLens, int[] rowWord, uint[] words)
    {
        int rows = rowWord.Length;
        var lo = new int[rows];
        var hi = new int[rows];
        int row = 0;
        for (int b = 0; b < kvLens.Length; b++)
        {
            int n = (int)((kvLens[b] + 31L) / 32);
            for (int i = qoIndptr[b]; i < qoIndptr[b + 1]; i++, row++)
            {
                var span = words.AsSpan(rowWord[row], n);
                int first = span.IndexOfAnyExcept(0u), last = span.LastIndexOfAnyExcept(0u);
                if (first < 0) continue; // keeps nothing: (0, 0)
                lo[row] = first * 32 + System.Numerics.BitOperations.TrailingZeroCount(span[first]);
                hi[row] = last * 32 + 32 - System.Numerics.BitOperations.LeadingZeroCount(span[last]);
            }
        }
        return new CustomMask(qoIndptr.ToArray(), kvLens.ToArray(), rowWord, lo, hi, words);
    }
}
