using Kernels.Attention.Planning;

namespace Kernels.Attention.Paging;

/// <summary>
/// Owns the pages of a <see cref="PagedKvCache"/> for a set of sequences: allocate, append tokens (writing and quantizing
/// K/V into their slots), fork with shared, reference-counted pages, truncate, and free.
/// </summary>
/// <remarks>
/// <para>Every page is either free (reference count 0, on the free list) or referenced by one or more sequences (count =
/// number of sequences holding it). Forking shares every page of the parent. Appending to a sequence whose partial last
/// page is shared first copies that page (copy-on-write), so a sequence never writes into a page another one reads; full
/// shared pages stay shared. Freed pages return to the free list; which free page a sequence grows into is the
/// allocator's <see cref="PagePlacement"/>: by default <see cref="PagePlacement.Adjacent"/>, which keeps each sequence's
/// pages in runs of adjacent ids (CPU decode reads adjacent pages faster than scattered ones).</para>
/// <para>Operations are atomic: an append that needs more pages than are free throws before anything is written.
/// Not thread-safe.</para>
/// </remarks>
public sealed class PageAllocator
{
    private readonly PagedKvCache _cache;
    private readonly int[] _refCount;
    private readonly Stack<int> _free;  // LastFreed: the free pages, last freed on top
    private readonly FreeRuns? _runs;    // Adjacent: the free pages as runs of adjacent ids
    private readonly PagePlacement _placement;
    private readonly Dictionary<int, Sequence> _seqs = [];
    private int _nextId;

    private sealed class Sequence
    {
        public readonly List<int> Pages = [];
        public int Length;
    }

    /// <summary>Creates an allocator owning every page of <paramref name="cache"/>.</summary>
    /// <param name="cache">The pool.</param>
    /// <param name="placement">How sequences' new pages are chosen.</param>
    /// <exception cref="ArgumentOutOfRangeException">placement is not a <see cref="PagePlacement"/> value.</exception>
    public PageAllocator(PagedKvCache cache, PagePlacement placement = PagePlacement.Adjacent)
    {
        ArgumentNullException.ThrowIfNull(cache);
        if (placement is not (PagePlacement.LastFreed or PagePlacement.Adjacent))
            throw new ArgumentOutOfRangeException(nameof(placement), placement, $"placement = {(int)placement} is not a PagePlacement.");
        _cache = cache;
        _placement = placement;
        _refCount = new int[cache.NumPages];
        _free = new Stack<int>(placement == PagePlacement.LastFreed ? cache.NumPages : 0);
        if (placement == PagePlacement.LastFreed)
            for (int p = cache.NumPages - 1; p >= 0; p--) _free.Push(p);
        else _runs = new FreeRuns(cache.NumPages);
    }

    /// <summary>How new pages are chosen.</summary>
    public PagePlacement Placement => _placement;

    /// <summary>The pool.</summary>
    public PagedKvCache Cache => _cache;

    /// <summary>Pages on the free list.</summary>
    public int FreePages => _runs?.Count ?? _free.Count;

    /// <summary>Live sequence ids.</summary>
    public IEnumerable<int> Sequences => _seqs.Keys;

    /// <summary>Sequences referencing page <paramref name="page"/> (0 = free).</summary>
    /// <param name="page">Page id.</param>
    /// <returns>The reference count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">page is not a page of the pool.</exception>
    public int RefCount(int page)
    {
        if ((uint)page >= (uint)_refCount.Length)
            throw new ArgumentOutOfRangeException(nameof(page), page, $"page {page} is outside the pool's {_refCount.Length} pages.");
        return _refCount[page];
    }

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
        int start = s.Length, ps = _cache.PageSize;
        Reserve(sequence, tokens);
        for (int t = 0; t < tokens; t++)
        {
            int pos = start + t;
            _cache.WriteToken(s.Pages[pos / ps], pos % ps, keys.Slice(t * row, row), values.Slice(t * row, row));
        }
    }

    /// <summary>Reserves <paramref name="tokens"/> slots at the end of a sequence without writing them, for a runtime that
    /// writes the K/V itself (<see cref="KvAppendPlan.ForAppend"/> over <see cref="BuildPageTable"/>, then
    /// <see cref="IPagedAttentionOps.AppendKv"/>, e.g. on a GPU): allocates pages and, when the sequence's partial last page is
    /// shared, moves the sequence to a fresh copy of it (copy-on-write).</summary>
    /// <param name="sequence">Sequence id.</param>
    /// <param name="tokens">Slots to reserve (≥ 0).</param>
    /// <param name="copyOnHost">Copy a copy-on-write page in the host cache too (keeps the host cache complete; pass false
    /// when the K/V live only on a device).</param>
    /// <returns>The copy-on-write page copy the caller must apply to a device cache (<see cref="IPagedAttentionOps.CopyPages"/>)
    /// before writing into the reserved slots, or null when there is none.</returns>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    /// <exception cref="ArgumentOutOfRangeException">tokens is negative, or the sequence would exceed <see cref="int.MaxValue"/> tokens.</exception>
    /// <exception cref="InvalidOperationException">The pool has too few free pages (nothing was changed).</exception>
    public PageCopy? Reserve(int sequence, int tokens, bool copyOnHost = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        var s = Get(sequence);
        if (tokens == 0) return null;
        if ((long)s.Length + tokens > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"Sequence {sequence} has {s.Length} tokens; {tokens} more exceed the {int.MaxValue} a sequence may hold.");
        int ps = _cache.PageSize;
        int newPages = PagesNeeded(s, tokens, out bool cow);
        if (newPages > FreePages)
            throw new InvalidOperationException($"The pool has {FreePages} free pages; appending {tokens} tokens to sequence {sequence} needs {newPages}.");
        PageCopy? copy = null;
        if (cow)
        {
            int shared = s.Pages[^1];
            int fresh = Take(s.Pages.Count > 1 ? s.Pages[^2] + 1 : -1);
            if (copyOnHost) _cache.CopyPage(shared, fresh);
            _refCount[shared]--;
            s.Pages[^1] = fresh;
            copy = new PageCopy(shared, fresh);
        }
        int total = s.Length + tokens;
        while ((long)s.Pages.Count * ps < total) s.Pages.Add(Take(s.Pages.Count > 0 ? s.Pages[^1] + 1 : -1));
        s.Length = total;
        return copy;
    }

    /// <summary>Free pages that appending <paramref name="tokens"/> tokens to a sequence would take (including the copy of a
    /// shared partial last page), so that a scheduler can check <c>PagesNeeded(seq, n) ≤ FreePages</c> before it admits a
    /// step, as vLLM's <c>can_append_slots</c> does.</summary>
    /// <param name="sequence">Sequence id.</param>
    /// <param name="tokens">Tokens to append (≥ 0).</param>
    /// <returns>The number of pages <see cref="Append"/> or <see cref="Reserve"/> would take from the free list.</returns>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    /// <exception cref="ArgumentOutOfRangeException">tokens is negative.</exception>
    public int PagesNeeded(int sequence, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        return PagesNeeded(Get(sequence), tokens, out _);
    }

    /// <summary>New pages for <paramref name="tokens"/> more tokens, and whether the partial last page is shared and must
    /// be copied first (one of those pages).</summary>
    private int PagesNeeded(Sequence s, int tokens, out bool cow)
    {
        int ps = _cache.PageSize;
        cow = tokens > 0 && s.Length % ps != 0 && _refCount[s.Pages[^1]] > 1;
        return (int)(((long)s.Length + tokens + ps - 1) / ps - s.Pages.Count) + (cow ? 1 : 0);
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
        for (int i = s.Pages.Count - 1; i >= 0; i--) Release(s.Pages[i]);
        _seqs.Remove(sequence);
    }

    /// <summary>Shortens a sequence to its first <paramref name="length"/> tokens, e.g. to drop rejected speculative tokens:
    /// the pages past the new length are released (reference counts fall by one; pages reaching 0 return to the free list).
    /// The kept tokens are unchanged. Later appends overwrite the slots past them in the new last page, after copying that
    /// page first when it is shared (copy-on-write, as for any append), so another sequence's tokens are never touched.</summary>
    /// <param name="sequence">Sequence id.</param>
    /// <param name="length">Tokens to keep, from 0 to the sequence's length.</param>
    /// <exception cref="KeyNotFoundException">No such live sequence.</exception>
    /// <exception cref="ArgumentOutOfRangeException">length is negative or greater than the sequence's length.</exception>
    public void Truncate(int sequence, int length)
    {
        var s = Get(sequence);
        if ((uint)length > (uint)s.Length)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"Sequence {sequence} has {s.Length} tokens; it cannot be truncated to {length}.");
        int keep = (int)(((long)length + _cache.PageSize - 1) / _cache.PageSize);
        for (int i = s.Pages.Count - 1; i >= keep; i--) Release(s.Pages[i]);
        s.Pages.RemoveRange(keep, s.Pages.Count - keep);
        s.Length = length;
    }

    /// <summary>Drops one reference to page <paramref name="p"/>; at 0 it returns to the free pages.</summary>
    private void Release(int p)
    {
        if (--_refCount[p] != 0) return;
        if (_runs is null) _free.Push(p);
        else _runs.Free(p);
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

    /// <summary>Builds the two tables of a cascade plan (<c>CascadePlanner.Plan</c>) for groups of sequences that share
    /// pages, e.g. forks of one prompt: group <c>g</c>'s shared prefix is the run of leading pages that all its sequences
    /// hold with the same id and the same tokens, and each sequence's suffix is the rest of its pages.</summary>
    /// <param name="sequences">Sequence ids, grouped: group <c>g</c> is <c>sequences[groupIndptr[g] .. groupIndptr[g+1])</c>.</param>
    /// <param name="groupIndptr"><c>groups + 1</c> offsets into <paramref name="sequences"/>, from 0 to its length.</param>
    /// <returns>One prefix entry per group (empty for a group of fewer than two sequences, which gains nothing from
    /// sharing) and one suffix entry per sequence, in the order given.</returns>
    /// <exception cref="KeyNotFoundException">An id is not a live sequence.</exception>
    /// <exception cref="ArgumentException">groupIndptr does not run from 0 to the number of sequences, non-decreasing.</exception>
    public (PageTable Prefixes, PageTable Suffixes) BuildCascadeTables(ReadOnlySpan<int> sequences, ReadOnlySpan<int> groupIndptr)
    {
        var (levels, suffixes) = BuildCascadeLevels(sequences, [groupIndptr.ToArray()]);
        return (levels[0].Pages, suffixes);
    }

    /// <summary>Builds the levels of a multi-level cascade plan (<c>CascadePlanner.Plan(sharedLevels, …)</c>) for nested
    /// groups of sequences that share pages, e.g. a system prompt shared by every sequence, then each conversation's
    /// prompt shared by its forks: at each level, a group's shared pages are the run of pages, after those of its group
    /// one level up, that all its sequences hold with the same id and the same tokens; each sequence's suffix is the rest.</summary>
    /// <param name="sequences">Sequence ids, in the order of the plan's batch.</param>
    /// <param name="groupIndptrs">One <c>groups + 1</c> offset array per level, outermost first, each from 0 to the number of
    /// sequences, non-decreasing; every group of a level lies within one group of the level above.</param>
    /// <returns>The levels (a group of fewer than two sequences shares nothing at its level) and one suffix entry per
    /// sequence.</returns>
    /// <exception cref="KeyNotFoundException">An id is not a live sequence.</exception>
    /// <exception cref="ArgumentException">No level; an offset array is malformed; or a group spans two groups of the level
    /// above.</exception>
    public (CascadeLevel[] Levels, PageTable Suffixes) BuildCascadeLevels(ReadOnlySpan<int> sequences, IReadOnlyList<int[]> groupIndptrs)
    {
        ArgumentNullException.ThrowIfNull(groupIndptrs);
        if (groupIndptrs.Count == 0) ThrowHelper.Argument(nameof(groupIndptrs), "At least one level is needed.");
        int n = sequences.Length, ps = _cache.PageSize;
        var members = new Sequence[n];
        for (int i = 0; i < n; i++) members[i] = Get(sequences[i]);
        var start = new int[n]; // pages of each sequence taken by the levels so far
        var levels = new CascadeLevel[groupIndptrs.Count];
        for (int l = 0; l < levels.Length; l++)
        {
            int[] indptr = groupIndptrs[l] ?? throw new ArgumentNullException(nameof(groupIndptrs), $"groupIndptrs[{l}] is null.");
            // Start at 0, never decrease, end at n: every offset is then within the sequences (checked before any is used).
            ThrowHelper.ThrowIfNotOffsets($"{nameof(groupIndptrs)}[{l}]", indptr);
            if (indptr[^1] != n)
                ThrowHelper.Argument(nameof(groupIndptrs), $"groupIndptrs[{l}] must run from 0 to the number of sequences ({n}); it ends at {indptr[^1]}.");
            int groups = indptr.Length - 1;
            var levelIndptr = new int[groups + 1];
            var levelLast = new int[groups];
            var levelPages = new List<int>();
            for (int g = 0; g < groups; g++)
            {
                int s0 = indptr[g], s1 = indptr[g + 1];
                if (l > 0 && s1 > s0 && CascadeLevel.GroupOf(groupIndptrs[l - 1], s0) != CascadeLevel.GroupOf(groupIndptrs[l - 1], s1 - 1))
                    ThrowHelper.Argument(nameof(groupIndptrs), $"Group {g} of level {l} (sequences {s0}..{s1 - 1}) spans two groups of level {l - 1}.");
                // Page j is shared when every member holds the same id there with the same token count; a partial page ends the run.
                int first = s1 > s0 ? start[s0] : 0, common = first;
                while (s1 - s0 > 1 && Shared(members.AsSpan(s0, s1 - s0), common, out int tokens))
                {
                    common++;
                    if (tokens < ps) break;
                }
                for (int j = first; j < common; j++) levelPages.Add(members[s0].Pages[j]);
                levelIndptr[g + 1] = levelPages.Count;
                levelLast[g] = common == first ? 0 : TokensIn(members[s0], common - 1);
                for (int i = s0; i < s1; i++) start[i] = common;
            }
            levels[l] = new CascadeLevel(indptr, new PageTable(levelIndptr, levelPages.ToArray(), levelLast, ps));
        }
        var suffixIndptr = new int[n + 1];
        var suffixLast = new int[n];
        var suffixPages = new List<int>();
        for (int i = 0; i < n; i++)
        {
            var m = members[i];
            for (int j = start[i]; j < m.Pages.Count; j++) suffixPages.Add(m.Pages[j]);
            suffixIndptr[i + 1] = suffixPages.Count;
            suffixLast[i] = m.Pages.Count == start[i] ? 0 : TokensIn(m, m.Pages.Count - 1);
        }
        return (levels, new PageTable(suffixIndptr, suffixPages.ToArray(), suffixLast, ps));
    }

    /// <summary>Whether every member holds the same page id at page <paramref name="j"/> with the same token count.</summary>
    private bool Shared(ReadOnlySpan<Sequence> group, int j, out int tokens)
    {
        tokens = 0;
        foreach (var m in group)
            if (m.Pages.Count <= j || m.Pages[j] != group[0].Pages[j]) return false;
        tokens = TokensIn(group[0], j);
        foreach (var m in group)
            if (TokensIn(m, j) != tokens) return false;
        return true;
    }

    /// <summary>Tokens of sequence <paramref name="s"/> in its page <paramref name="j"/>.</summary>
    private int TokensIn(Sequence s, int j) => Math.Min(_cache.PageSize, s.Length - j * _cache.PageSize);

    /// <summary>A free page, now referenced once: <paramref name="next"/> (the page after the sequence's last one, or −1)
    /// when Adjacent placement finds it free. The caller has checked that a page is free.</summary>
    private int Take(int next)
    {
        int p;
        if (_runs is null) p = _free.Pop();
        else
        {
            p = (uint)next < (uint)_refCount.Length && _runs.IsFree(next) ? next : _runs.NewRunPage();
            _runs.Take(p);
        }
        _refCount[p] = 1;
        return p;
    }

    private Sequence Get(int sequence) =>
        _seqs.TryGetValue(sequence, out var s) ? s : throw new KeyNotFoundException($"Sequence {sequence} is not live in this allocator.");
}
