namespace Kernels.Attention.Paging;

/// <summary>
/// Owns the pages of a <see cref="PagedKvCache"/> for a set of sequences: allocate, append tokens (writing and quantizing
/// K/V into their slots), fork with shared, reference-counted pages, and free.
/// </summary>
/// <remarks>
/// <para>Every page is either free (reference count 0, on the free list) or referenced by one or more sequences (count =
/// number of sequences holding it). Forking shares every page of the parent. Appending to a sequence whose partial last
/// page is shared first copies that page (copy-on-write), so a sequence never writes into a page another one reads; full
/// shared pages stay shared. Freed pages return to the free list and are reused last-in, first-out.</para>
/// <para>Operations are atomic: an append that needs more pages than are free throws before anything is written.
/// Not thread-safe.</para>
/// </remarks>
public sealed class PageAllocator
{
    private readonly PagedKvCache _cache;
    private readonly int[] _refCount;
    private readonly Stack<int> _free;
    private readonly Dictionary<int, Sequence> _seqs = [];
    private int _nextId;

    private sealed class Sequence
    {
        public readonly List<int> Pages = [];
        public int Length;
    }

    /// <summary>Creates an allocator owning every page of <paramref name="cache"/>.</summary>
    /// <param name="cache">The pool.</param>
    public PageAllocator(PagedKvCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        _cache = cache;
        _refCount = new int[cache.NumPages];
        _free = new Stack<int>(cache.NumPages);
        for (int p = cache.NumPages - 1; p >= 0; p--) _free.Push(p);
    }

    /// <summary>The pool.</summary>
    public PagedKvCache Cache => _cache;

    /// <summary>Pages on the free list.</summary>
    public int FreePages => _free.Count;

    /// <summary>Live sequence ids.</summary>
    public IEnumerable<int> Sequences => _seqs.Keys;

    /// <summary>Sequences referencing page <paramref name="page"/> (0 = free).</summary>
    /// <param name="page">Page id.</param>
    /// <returns>The reference count.</returns>
    public int RefCount(int page) => _refCount[page];

    /// <summary>Creates an empty sequence.</summary>
    /// <returns>Its id.</returns>
    public int Create()
    {
        int id = _nextId++;
        _seqs.Add(id, new Sequence());
        return id;
    }

    /// <summary>Tokens in sequence <paramref name="sequence"/>.</summary>
    /// <param name="sequence">Sequence id.</param>
    /// <returns>The length.</returns>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    public int Length(int sequence) => Get(sequence).Length;

    /// <summary>The pages of sequence <paramref name="sequence"/>, in token order.</summary>
    /// <param name="sequence">Sequence id.</param>
    /// <returns>A copy of the page list.</returns>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    public int[] Pages(int sequence) => [.. Get(sequence).Pages];

    /// <summary>Appends <paramref name="tokens"/> tokens to a sequence, allocating pages as needed and quantizing into the cache.</summary>
    /// <param name="sequence">Sequence id.</param>
    /// <param name="keys"><c>tokens·kv_heads·head_dim</c> keys.</param>
    /// <param name="values"><c>tokens·kv_heads·head_dim</c> values.</param>
    /// <param name="tokens">Tokens to append (≥ 0).</param>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    /// <exception cref="ArgumentException">keys or values has the wrong length.</exception>
    /// <exception cref="InvalidOperationException">The pool has too few free pages (nothing was changed).</exception>
    public void Append(int sequence, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        var s = Get(sequence);
        int row = _cache.KvHeads * _cache.HeadDim;
        ThrowHelper.ThrowIfLengthMismatch(nameof(keys), keys.Length, (long)tokens * row);
        ThrowHelper.ThrowIfLengthMismatch(nameof(values), values.Length, (long)tokens * row);
        if (tokens == 0) return;
        int ps = _cache.PageSize;
        int used = s.Length % ps;
        bool cow = used != 0 && _refCount[s.Pages[^1]] > 1;
        int newPages = (int)(((long)s.Length + tokens + ps - 1) / ps) - s.Pages.Count + (cow ? 1 : 0);
        if (newPages > _free.Count)
            throw new InvalidOperationException($"The pool has {_free.Count} free pages; appending {tokens} tokens to sequence {sequence} needs {newPages}.");
        if (cow)
        {
            int shared = s.Pages[^1];
            int copy = Take();
            _cache.CopyPage(shared, copy);
            _refCount[shared]--;
            s.Pages[^1] = copy;
        }
        for (int t = 0; t < tokens; t++)
        {
            int pos = s.Length + t;
            if (pos / ps == s.Pages.Count) s.Pages.Add(Take());
            _cache.WriteToken(s.Pages[pos / ps], pos % ps, keys.Slice(t * row, row), values.Slice(t * row, row));
        }
        s.Length += tokens;
    }

    /// <summary>Forks a sequence: the child shares every page of the parent (reference counts rise by one).</summary>
    /// <param name="sequence">Parent id.</param>
    /// <returns>The child's id.</returns>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    public int Fork(int sequence)
    {
        var parent = Get(sequence);
        int id = Create();
        var child = _seqs[id];
        child.Pages.AddRange(parent.Pages);
        child.Length = parent.Length;
        foreach (int p in parent.Pages) _refCount[p]++;
        return id;
    }

    /// <summary>Frees a sequence: its pages' reference counts fall by one, and pages reaching 0 return to the free list.</summary>
    /// <param name="sequence">Sequence id.</param>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    public void Free(int sequence)
    {
        var s = Get(sequence);
        for (int i = s.Pages.Count - 1; i >= 0; i--)
        {
            int p = s.Pages[i];
            if (--_refCount[p] == 0) _free.Push(p);
        }
        _seqs.Remove(sequence);
    }

    /// <summary>Builds the page table of the given sequences, in that order.</summary>
    /// <param name="sequences">Sequence ids.</param>
    /// <returns>The table.</returns>
    /// <exception cref="KeyNotFoundException">An id is not a live sequence.</exception>
    public PageTable BuildPageTable(ReadOnlySpan<int> sequences)
    {
        var indptr = new int[sequences.Length + 1];
        var last = new int[sequences.Length];
        var indices = new List<int>();
        for (int i = 0; i < sequences.Length; i++)
        {
            var s = Get(sequences[i]);
            indices.AddRange(s.Pages);
            indptr[i + 1] = indices.Count;
            last[i] = s.Length == 0 ? 0 : s.Length - (s.Pages.Count - 1) * _cache.PageSize;
        }
        return new PageTable(indptr, indices.ToArray(), last, _cache.PageSize);
    }

    private int Take()
    {
        int p = _free.Pop();
        _refCount[p] = 1;
        return p;
    }

    private Sequence Get(int sequence) =>
        _seqs.TryGetValue(sequence, out var s) ? s : throw new KeyNotFoundException($"Sequence {sequence} is not live in this allocator.");
}
