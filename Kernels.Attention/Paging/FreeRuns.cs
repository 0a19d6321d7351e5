using System.Numerics;

namespace Kernels.Attention.Paging;

/// <summary>
/// The free pages of a pool, for <see cref="PagePlacement.Adjacent"/>: a bitmap (one bit per page, set when free) and a
/// segment tree over its 64-page words that knows, for every span of words, its longest run of free pages (the lowest
/// such run), and its free prefix and suffix. Taking or freeing a page costs O(log(pages / 64)) plus a scan of one word,
/// and the longest run is read at the root; nothing is allocated after construction (pages / 8 bytes for the bitmap and
/// 24 bytes per tree node, fewer than pages / 16 nodes: 48 KB for 65,536 pages).
/// </summary>
internal sealed class FreeRuns
{
    private readonly ulong[] _bits;
    private readonly int _leaves;       // a power of two ≥ the number of words; node 1 is the root, leaves at [_leaves, 2·_leaves)
    private readonly Span[] _tree;

    /// <summary>A span of pages: its first page and length, the free pages at its start and end, and its longest free run
    /// (the lowest of the longest).</summary>
    private struct Span
    {
        public int Start, Length, Prefix, Suffix, Best, BestStart;
    }

    /// <summary>Every page of a pool of <paramref name="pages"/> free.</summary>
    public FreeRuns(int pages)
    {
        int words = (int)(((long)pages + 63) / 64);
        _bits = new ulong[words];
        _leaves = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(words, 1));
        _tree = new Span[2 * _leaves];
        for (int w = 0; w < words; w++)
            _bits[w] = w < pages / 64 ? ulong.MaxValue : (1UL << (pages % 64)) - 1;
        for (int w = 0; w < _leaves; w++) _tree[_leaves + w] = Leaf(w);
        for (int n = _leaves - 1; n >= 1; n--) _tree[n] = Combine(_tree[2 * n], _tree[2 * n + 1]);
        Count = pages;
    }

    /// <summary>Free pages.</summary>
    public int Count { get; private set; }

    /// <summary>Whether page <paramref name="page"/> is free.</summary>
    public bool IsFree(int page) => (_bits[page >> 6] >> (page & 63) & 1) != 0;

    /// <summary>The page a new run of pages should start at: the first page of the longest free run (the lowest such run)
    /// when that run starts the pool, else its middle page, leaving room for the sequence whose pages end before it;
    /// −1 when no page is free.</summary>
    public int NewRunPage()
    {
        ref readonly var root = ref _tree[1];
        if (root.Best == 0) return -1;
        return root.BestStart == 0 ? 0 : root.BestStart + root.Best / 2;
    }

    /// <summary>Takes free page <paramref name="page"/>.</summary>
    /// <exception cref="InvalidOperationException">The page is not free (an allocator bug).</exception>
    public void Take(int page)
    {
        if (!IsFree(page)) throw new InvalidOperationException($"Page {page} is not free.");
        _bits[page >> 6] &= ~(1UL << (page & 63));
        Count--;
        Update(page >> 6);
    }

    /// <summary>Returns page <paramref name="page"/> to the free pages.</summary>
    /// <exception cref="InvalidOperationException">The page is already free (an allocator bug).</exception>
    public void Free(int page)
    {
        if (IsFree(page)) throw new InvalidOperationException($"Page {page} is already free.");
        _bits[page >> 6] |= 1UL << (page & 63);
        Count++;
        Update(page >> 6);
    }

    private void Update(int word)
    {
        int n = _leaves + word;
        _tree[n] = Leaf(word);
        for (n >>= 1; n >= 1; n >>= 1) _tree[n] = Combine(_tree[2 * n], _tree[2 * n + 1]);
    }

    /// <summary>The span of word <paramref name="w"/> (pages 64w … 64w + 63; words past the pool hold no free page).</summary>
    private Span Leaf(int w)
    {
        ulong bits = w < _bits.Length ? _bits[w] : 0;
        var s = new Span
        {
            Start = 64 * w, Length = 64,
            Prefix = BitOperations.TrailingZeroCount(~bits), // 64 when every page is free
            Suffix = BitOperations.LeadingZeroCount(~bits),
        };
        int offset = 0;
        while (bits != 0)
        {
            int skip = BitOperations.TrailingZeroCount(bits); // used pages before the next run
            bits >>= skip;
            offset += skip;
            int run = BitOperations.TrailingZeroCount(~bits); // the shift filled the top with used pages: run ≤ 64 − offset
            if (run > s.Best)
            {
                s.Best = run;
                s.BestStart = 64 * w + offset;
            }
            if (offset + run == 64) break;
            bits >>= run;
            offset += run;
        }
        return s;
    }

    /// <summary>Two adjacent spans as one. On equal lengths the lower run wins: the left span's best run starts no later than
    /// the run across the boundary (a run inside the left span that starts later lies in its free suffix, so it is that
    /// suffix), which starts before the right span's best.</summary>
    private static Span Combine(in Span a, in Span b)
    {
        var s = new Span
        {
            Start = a.Start,
            Length = a.Length + b.Length,
            Prefix = a.Prefix == a.Length ? a.Length + b.Prefix : a.Prefix,
            Suffix = b.Suffix == b.Length ? b.Length + a.Suffix : b.Suffix,
            Best = a.Best,
            BestStart = a.BestStart,
        };
        int across = a.Suffix + b.Prefix;
        if (across > s.Best)
        {
            s.Best = across;
            s.BestStart = b.Start - a.Suffix;
        }
        if (b.Best > s.Best)
        {
            s.Best = b.Best;
            s.BestStart = b.BestStart;
        }
        return s;
    }
}
