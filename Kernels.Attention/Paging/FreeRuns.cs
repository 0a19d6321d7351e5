namespace Kernels.Attention.Paging;

/// <summary>
/// The free pages of a pool as maximal runs of adjacent page ids, for <see cref="PagePlacement.Adjacent"/>: taking a page,
/// freeing one (merging it with its free neighbours) and finding the longest run (the first of the longest) each cost
/// O(log runs), not a scan of the pool.
/// </summary>
/// <remarks>A run <c>[s, e)</c> is recorded at its ends only (<c>_endOf[s] = e</c>, <c>_startOf[e − 1] = s</c>) and in a set
/// ordered longest first, then by start. Entries between the ends of a run are stale and never read: a page's
/// neighbours are consulted only when they are free, and then they end or start a run.</remarks>
internal sealed class FreeRuns
{
    private readonly bool[] _isFree;
    private readonly int[] _endOf;
    private readonly int[] _startOf;
    private readonly SortedSet<(int Start, int Length)> _byLength =
        new(Comparer<(int Start, int Length)>.Create((a, b) => a.Length != b.Length ? b.Length.CompareTo(a.Length) : a.Start.CompareTo(b.Start)));

    /// <summary>Every page of a pool of <paramref name="pages"/> free: one run.</summary>
    public FreeRuns(int pages)
    {
        _isFree = new bool[pages];
        _endOf = new int[pages];
        _startOf = new int[pages];
        if (pages == 0) return;
        Array.Fill(_isFree, true);
        AddRun(0, pages);
    }

    /// <summary>Free pages.</summary>
    public int Count { get; private set; }

    /// <summary>Whether page <paramref name="page"/> is free.</summary>
    public bool IsFree(int page) => _isFree[page];

    /// <summary>The page a new run of pages should start at: the first page of the longest free run (the lowest such run)
    /// when that run starts the pool, else its middle page, leaving room for the sequence whose pages end before it;
    /// −1 when no page is free.</summary>
    public int NewRunPage()
    {
        if (_byLength.Count == 0) return -1;
        var (start, length) = _byLength.Min;
        return start == 0 ? 0 : start + length / 2;
    }

    /// <summary>Takes free page <paramref name="page"/> out of its run.</summary>
    /// <exception cref="InvalidOperationException">The page is not free (an allocator bug).</exception>
    public void Take(int page)
    {
        if (!_isFree[page]) throw new InvalidOperationException($"Page {page} is not free.");
        // The allocator takes a run's first page (the page after a sequence's last) or the page NewRunPage named; find the
        // run's start by walking back otherwise (never needed by the allocator, kept for correctness).
        int start = page;
        if (page > 0 && _isFree[page - 1])
        {
            var (s, length) = _byLength.Min;
            if (page >= s && page < s + length) start = s;
            else while (start > 0 && _isFree[start - 1]) start--;
        }
        int end = _endOf[start];
        _byLength.Remove((start, end - start));
        Count -= end - start;
        _isFree[page] = false;
        if (page > start) AddRun(start, page);
        if (end > page + 1) AddRun(page + 1, end);
    }

    /// <summary>Returns page <paramref name="page"/> to the free runs, merged with free neighbours.</summary>
    /// <exception cref="InvalidOperationException">The page is already free (an allocator bug).</exception>
    public void Free(int page)
    {
        if (_isFree[page]) throw new InvalidOperationException($"Page {page} is already free.");
        _isFree[page] = true;
        int start = page, end = page + 1;
        if (page > 0 && _isFree[page - 1])
        {
            start = _startOf[page - 1];
            _byLength.Remove((start, page - start));
            Count -= page - start;
        }
        if (end < _isFree.Length && _isFree[end])
        {
            int e = _endOf[end];
            _byLength.Remove((end, e - end));
            Count -= e - end;
            end = e;
        }
        AddRun(start, end);
    }

    private void AddRun(int start, int end)
    {
        _endOf[start] = end;
        _startOf[end - 1] = start;
        _byLength.Add((start, end - start));
        Count += end - start;
    }
}
