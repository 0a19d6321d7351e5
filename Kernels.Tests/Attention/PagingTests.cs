using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Reference;

namespace Kernels.Tests.Attention;

public class PagingTests
{
    [Fact]
    public void FromBlockTables_ConvertsVllmTables()
    {
        // 3 sequences, block size 4: lengths 5 (2 blocks), 0, 8 (2 full blocks); -1 is padding.
        int[] blocks = [7, 2, -1, 9, 9, 9, 3, 0, -1];
        var t = PageTable.FromBlockTables(blocks, 3, [5, 0, 8], 4);
        Assert.Equal([0, 2, 2, 4], t.Indptr.ToArray());
        Assert.Equal([7, 2, 3, 0], t.Indices.ToArray());
        Assert.Equal([1, 0, 4], t.LastPageLen.ToArray());
        Assert.Equal([5, 0, 8], Enumerable.Range(0, 3).Select(t.KvLength));
        Assert.Contains("needs 4 blocks", Assert.Throws<ArgumentException>(() => PageTable.FromBlockTables(blocks, 3, [13, 0, 0], 4)).Message);
        Assert.Contains("blockTables[0, 2]", Assert.Throws<ArgumentException>(() => PageTable.FromBlockTables(blocks, 3, [12, 0, 0], 4)).Message);
    }

    [Theory]
    [InlineData(DType.F32, KvScaleMode.None)]
    [InlineData(DType.F16, KvScaleMode.None)]
    [InlineData(DType.BF16, KvScaleMode.None)]
    [InlineData(DType.I8, KvScaleMode.PerToken)]
    [InlineData(DType.I8, KvScaleMode.PerHead)]
    [InlineData(DType.I4, KvScaleMode.None)]
    [InlineData(DType.F8E4M3, KvScaleMode.None)]
    [InlineData(DType.F8E5M2, KvScaleMode.None)]
    [InlineData(DType.F8E4M3, KvScaleMode.PerHead)]
    public void WriteRead_RoundTripWithinFormatBound(DType dtype, KvScaleMode mode)
    {
        var rng = new Random(42);
        float[] heads = [0.01f, 0.02f];
        var cache = mode == KvScaleMode.PerHead
            ? new PagedKvCache(3, 4, 2, 32, dtype, KvLayout.Hnd, mode, heads, heads)
            : new PagedKvCache(3, 4, 2, 32, dtype, KvLayout.Hnd, mode);
        var k = Enumerable.Range(0, 64).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var v = k.Select(x => -x).ToArray();
        cache.WriteToken(2, 3, k, v);
        var back = new float[32];
        for (int h = 0; h < 2; h++)
        {
            cache.ReadKey(2, 3, h, back);
            var row = k.AsSpan(h * 32, 32);
            double amax = row.ToArray().Max(Math.Abs), range = row.ToArray().Max() - row.ToArray().Min();
            double bound = dtype switch
            {
                DType.F32 => 0,
                DType.F16 => Math.ScaleB(1, -11),
                DType.BF16 => Math.ScaleB(1, -8),
                DType.F8E4M3 => Math.ScaleB(1, -4), // relative; absolute 2^-10 below 2^-6 (subnormals)
                DType.F8E5M2 => Math.ScaleB(1, -3), // relative; absolute 2^-17 below 2^-14
                DType.I8 when mode == KvScaleMode.PerToken => amax / 127 / 2 * 1.001,
                DType.I8 => Math.Max(heads[h] / 2 * 1.001, amax - 127 * heads[h]), // saturates beyond 127·s
                _ => range / 15 / 2 * 1.001 + range / 15 * 0.5, // asymmetric: rounding of x/s plus the rounded zero
            };
            for (int i = 0; i < 32; i++) Assert.True(Math.Abs(back[i] - row[i]) <= bound * Math.Max(1, dtype is DType.F16 or DType.BF16 or DType.F8E4M3 or DType.F8E5M2 ? Math.Abs(row[i]) : 1), $"{dtype} {h} {i}: {row[i]} → {back[i]}");
        }
    }

    [Fact]
    public void Int4_ConstantRows_AreExact()
    {
        var cache = new PagedKvCache(1, 1, 1, 32, DType.I4);
        var back = new float[32];
        foreach (float c in new[] { 0f, 0.75f, -3f })
        {
            var row = Enumerable.Repeat(c, 32).ToArray();
            cache.WriteToken(0, 0, row, row);
            cache.ReadKey(0, 0, 0, back);
            Assert.All(back, x => Assert.Equal(c, x));
        }
    }

    [Fact]
    public void Masks_BottomRightCausalAndWindow()
    {
        // qo_len 2, kv_len 5: query 0 sees keys 0..3, query 1 sees 0..4; window 1 keeps the last 2 keys up to the diagonal.
        Assert.Equal((0, 4), AttentionMask.KeyRange(0, 2, 5, causal: true, windowLeft: -1));
        Assert.Equal((0, 5), AttentionMask.KeyRange(1, 2, 5, causal: true, windowLeft: -1));
        Assert.Equal((2, 4), AttentionMask.KeyRange(0, 2, 5, causal: true, windowLeft: 1));
        Assert.Equal((3, 5), AttentionMask.KeyRange(1, 2, 5, causal: false, windowLeft: 1));
        for (int q = 0; q < 2; q++)
            for (int k = 0; k < 5; k++)
            {
                var (s, e) = AttentionMask.KeyRange(q, 2, 5, true, 1);
                Assert.Equal(k >= s && k < e, AttentionMask.IsKept(q, k, 2, 5, true, 1));
            }
    }

    [Fact]
    public void Merge_MatchesFlashInferVectorAndEmptyStates()
    {
        // FlashInfer (base 2): s_a = 0, s_b = 1 → weights 1/3, 2/3, s = log2 3. In natural log: s = ln(e^0 + e^1).
        float[] a = [3f], b = [6f], o = new float[1];
        float s = AttentionState.Merge(a, 0f, b, 1f, o);
        double wa = 1 / (1 + Math.E);
        Assert.Equal(3 * wa + 6 * (1 - wa), o[0], 5);
        Assert.Equal(Math.Log(1 + Math.E), s, 5);
        Assert.Equal(float.NegativeInfinity, AttentionState.Merge(a, float.NegativeInfinity, b, float.NegativeInfinity, o));
        Assert.Equal(0f, o[0]);
        Assert.Equal(1f, AttentionState.Merge(a, float.NegativeInfinity, b, 1f, o));
        Assert.Equal(6f, o[0]);
        // A NaN state (a row that met a NaN or +∞ logit) stays NaN, whichever side it is on and whatever it meets.
        float[] nan = [float.NaN];
        Assert.True(float.IsNaN(AttentionState.Merge(a, 0f, nan, float.NaN, o)) && float.IsNaN(o[0]));
        Assert.True(float.IsNaN(AttentionState.Merge(nan, float.NaN, b, 1f, o)) && float.IsNaN(o[0]));
        Assert.True(float.IsNaN(AttentionState.Merge(nan, float.NaN, b, float.NegativeInfinity, o)) && float.IsNaN(o[0]));
        float[] many = new float[1];
        Assert.True(float.IsNaN(AttentionState.MergeMany([3f, float.NaN, 6f], [0f, float.NaN, 1f], many)) && float.IsNaN(many[0]));
    }

    [Fact]
    public void Merge_OfSplitReferenceStates_EqualsWholeReference()
    {
        var rng = new Random(1);
        var shape = new Kernels.Attention.Planning.AttentionShape(1, 1, 8);
        int n = 37;
        var q = Enumerable.Range(0, 8).Select(_ => (float)rng.NextDouble()).ToArray();
        var k = Enumerable.Range(0, n * 8).Select(_ => (float)rng.NextDouble() * 4 - 2).ToArray();
        var v = Enumerable.Range(0, n * 8).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        var opts = new Kernels.Attention.Planning.AttentionOptions { Causal = false };
        float[] whole = new float[8], lw = new float[1];
        AttentionReference.Dense(q, k, v, 1, n, shape, opts, whole, lw);
        var parts = new float[3 * 8];
        var lses = new float[3];
        int[] cuts = [0, 10, 10, n]; // includes an empty part
        for (int p = 0; p < 3; p++)
        {
            int len = cuts[p + 1] - cuts[p];
            AttentionReference.Dense(q, k.AsSpan(cuts[p] * 8, len * 8), v.AsSpan(cuts[p] * 8, len * 8), 1, len, shape, opts, parts.AsSpan(p * 8, 8), lses.AsSpan(p, 1));
        }
        Assert.Equal(float.NegativeInfinity, lses[1]);
        var merged = new float[8];
        float lse = AttentionState.MergeMany(parts, lses, merged);
        Assert.Equal(lw[0], lse, 5);
        for (int i = 0; i < 8; i++) Assert.Equal(whole[i], merged[i], 5);
    }

    /// <summary>Random op sequences (create, append, fork, truncate, free): no page is ever owned by two sequences unless
    /// shared by a fork, counts match owners, free + owned = pool, freed pages are reused, and every sequence reads back
    /// exactly the tokens it holds.</summary>
    [Fact]
    public void Allocator_RandomOps_NeverDoubleOwnsAndPreservesContents() => RandomOps(PagePlacement.LastFreed);

    /// <summary>The same random op sequences with <see cref="PagePlacement.Adjacent"/>, which also checks each page chosen
    /// against the placement rule applied to a scan of the pool.</summary>
    [Fact]
    public void Allocator_RandomOps_Adjacent_NeverDoubleOwnsAndPreservesContents() => RandomOps(PagePlacement.Adjacent);

    private static void RandomOps(PagePlacement placement)
    {
        Prop.ForAll(Gen.Choose(0, int.MaxValue).ToArbitrary(), seed =>
        {
            var rng = new Random(seed);
            const int pages = 24, ps = 4, dim = 32;
            var cache = new PagedKvCache(pages, ps, 1, dim, DType.F32);
            var alloc = new PageAllocator(cache, placement);
            var content = new Dictionary<int, List<float>>(); // sequence → first key value of each token
            var everFreed = new HashSet<int>();
            bool reused = false;
            for (int step = 0; step < 60; step++)
            {
                int op = rng.Next(10);
                var live = alloc.Sequences.ToList();
                if (op < 2 || live.Count == 0)
                {
                    int id = alloc.Create();
                    content[id] = [];
                }
                else if (op < 6)
                {
                    int id = live[rng.Next(live.Count)];
                    int n = rng.Next(0, 7);
                    var k = new float[n * dim];
                    for (int t = 0; t < n; t++) k.AsSpan(t * dim, dim).Fill(rng.Next(1, 1_000_000));
                    var before = alloc.Pages(id);
                    int needed = alloc.PagesNeeded(id, n), freeBefore = alloc.FreePages;
                    if (needed > freeBefore)
                    {
                        // Pool exhausted: the append throws and must not have changed anything (checked below).
                        Assert.Throws<InvalidOperationException>(() => alloc.Append(id, k, k, n));
                    }
                    else
                    {
                        int[]? expected = placement == PagePlacement.Adjacent ? AdjacentPages(alloc, id, n, ps) : null;
                        alloc.Append(id, k, k, n);
                        Assert.Equal(freeBefore - needed, alloc.FreePages); // PagesNeeded is what the append took
                        if (expected != null) Assert.Equal(expected, alloc.Pages(id));
                        foreach (int p in alloc.Pages(id).Except(before)) reused |= everFreed.Contains(p);
                        for (int t = 0; t < n; t++) content[id].Add(k[t * dim]);
                    }
                }
                else if (op < 7)
                {
                    int id = live[rng.Next(live.Count)];
                    int child = alloc.Fork(id);
                    content[child] = [.. content[id]];
                }
                else if (op < 8)
                {
                    int id = live[rng.Next(live.Count)];
                    int keep = rng.Next(0, content[id].Count + 1);
                    foreach (int p in alloc.Pages(id).Skip((keep + ps - 1) / ps)) if (alloc.RefCount(p) == 1) everFreed.Add(p);
                    alloc.Truncate(id, keep);
                    content[id].RemoveRange(keep, content[id].Count - keep);
                }
                else
                {
                    int id = live[rng.Next(live.Count)];
                    foreach (int p in alloc.Pages(id)) if (alloc.RefCount(p) == 1) everFreed.Add(p);
                    alloc.Free(id);
                    content.Remove(id);
                }

                // Invariants.
                var owners = new int[pages];
                foreach (int id in alloc.Sequences)
                {
                    var ps2 = alloc.Pages(id);
                    Assert.Equal(ps2.Length, ps2.Distinct().Count());
                    foreach (int p in ps2) owners[p]++;
                    Assert.Equal(content[id].Count, alloc.Length(id));
                    var back = new float[dim];
                    for (int t = 0; t < content[id].Count; t++)
                    {
                        cache.ReadKey(ps2[t / ps], t % ps, 0, back);
                        Assert.Equal(content[id][t], back[0]);
                    }
                }
                for (int p = 0; p < pages; p++) Assert.Equal(owners[p], alloc.RefCount(p));
                Assert.Equal(pages, alloc.FreePages + owners.Count(o => o > 0));
                // A page shared by several sequences is never one they may still write into (a partial last page is copied first).
            }
            return true;
        }).QuickCheckThrowOnFailure();
    }

    /// <summary>The pages sequence <paramref name="id"/> should hold after appending <paramref name="tokens"/> tokens with
    /// Adjacent placement, by the rule applied to a scan of the reference counts: each new page is the one after the
    /// previous page when free, else <see cref="FreeRunsTests.ScanNewRunPage"/>; a shared partial last page is replaced by a
    /// new page first (copy-on-write).</summary>
    private static int[] AdjacentPages(PageAllocator alloc, int id, int tokens, int ps)
    {
        var pages = alloc.Pages(id).ToList();
        var free = Enumerable.Range(0, alloc.Cache.NumPages).Select(p => alloc.RefCount(p) == 0).ToArray();
        int length = alloc.Length(id), total = length + tokens;
        bool cow = tokens > 0 && length % ps != 0 && alloc.RefCount(pages[^1]) > 1;
        int Take(int next)
        {
            int p = next >= 0 && next < free.Length && free[next] ? next : FreeRunsTests.ScanNewRunPage(free);
            free[p] = false;
            return p;
        }
        if (cow) pages[^1] = Take(pages.Count > 1 ? pages[^2] + 1 : -1);
        while (pages.Count * ps < total) pages.Add(Take(pages.Count > 0 ? pages[^1] + 1 : -1));
        return [.. pages];
    }

    /// <summary>Eight sequences growing together, a page at a time, keep their pages in runs with Adjacent placement (their
    /// first pages spread through the pool, at most one collision each), where LastFreed placement interleaves them page
    /// by page.</summary>
    [Fact]
    public void Allocator_Adjacent_SequencesGrowingTogetherKeepRuns()
    {
        const int pages = 1024, ps = 16, dim = 8, seqs = 8, perSeq = 100;
        foreach (var placement in new[] { PagePlacement.Adjacent, PagePlacement.LastFreed })
        {
            var cache = new PagedKvCache(pages, ps, 1, dim, DType.F16);
            var alloc = new PageAllocator(cache, placement);
            Assert.Equal(placement, alloc.Placement);
            var ids = Enumerable.Range(0, seqs).Select(_ => alloc.Create()).ToArray();
            var k = new float[ps * dim];
            for (int round = 0; round < perSeq; round++)
                foreach (int id in ids) alloc.Append(id, k, k, ps);
            Assert.Equal(pages - seqs * perSeq, alloc.FreePages);
            foreach (int id in ids)
            {
                var own = alloc.Pages(id);
                Assert.Equal(perSeq, own.Length);
                int runs = 1 + Enumerable.Range(1, own.Length - 1).Count(i => own[i] != own[i - 1] + 1);
                if (placement == PagePlacement.Adjacent) Assert.InRange(runs, 1, 2);
                else Assert.Equal(perSeq, runs);
            }
        }
    }

    [Fact]
    public void Allocator_UndefinedPlacement_Throws()
    {
        var cache = new PagedKvCache(4, 4, 1, 8, DType.F16);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new PageAllocator(cache, (PagePlacement)7));
        Assert.Equal("placement", ex.ParamName);
    }

    [Fact]
    public void Allocator_ForkThenAppend_CopiesSharedPartialPage()
    {
        var cache = new PagedKvCache(8, 4, 1, 32, DType.F16);
        var alloc = new PageAllocator(cache);
        int a = alloc.Create();
        var k = Enumerable.Range(0, 6 * 32).Select(i => (float)(i / 32)).ToArray();
        alloc.Append(a, k, k, 6); // pages: [full, partial(2)]
        int b = alloc.Fork(a);
        Assert.Equal(alloc.Pages(a), alloc.Pages(b));
        var one = Enumerable.Repeat(100f, 32).ToArray();
        alloc.Append(b, one, one, 1);
        Assert.Equal(alloc.Pages(a)[0], alloc.Pages(b)[0]);        // full prefix page stays shared
        Assert.NotEqual(alloc.Pages(a)[1], alloc.Pages(b)[1]);     // partial page was copied on write
        Assert.Equal(2, alloc.RefCount(alloc.Pages(a)[0]));
        var back = new float[32];
        cache.ReadKey(alloc.Pages(b)[1], 1, 0, back);
        Assert.Equal(5f, back[0]);                                 // copied contents
        cache.ReadKey(alloc.Pages(b)[1], 2, 0, back);
        Assert.Equal(100f, back[0]);
        var t = alloc.BuildPageTable([a, b]);
        Assert.Equal(6, t.KvLength(0));
        Assert.Equal(7, t.KvLength(1));
        var ex = Assert.Throws<InvalidOperationException>(() => alloc.Append(a, new float[40 * 32], new float[40 * 32], 40));
        Assert.Contains("free pages", ex.Message);
        Assert.Equal(6, alloc.Length(a));
    }

    /// <summary>A child forked from a sequence is truncated into a shared full page: the parent keeps its pages and tokens,
    /// the child's next append copies the now partial shared page first, and truncating to 0 releases every page.</summary>
    [Fact]
    public void Allocator_TruncateThenAppend_CopiesSharedPageAndReleasesPages()
    {
        var cache = new PagedKvCache(8, 4, 1, 32, DType.F32);
        var alloc = new PageAllocator(cache);
        int a = alloc.Create();
        var k = Enumerable.Range(0, 10 * 32).Select(i => (float)(i / 32)).ToArray();
        alloc.Append(a, k, k, 10); // pages: [full, full, partial(2)]
        int b = alloc.Fork(a);
        alloc.Truncate(b, 6);      // b: [shared full page, shared page holding 2 of its tokens]
        Assert.Equal(6, alloc.Length(b));
        Assert.Equal(alloc.Pages(a)[..2], alloc.Pages(b));
        Assert.Equal(1, alloc.RefCount(alloc.Pages(a)[2]));
        var one = Enumerable.Repeat(100f, 32).ToArray();
        alloc.Append(b, one, one, 1);
        Assert.Equal(alloc.Pages(a)[0], alloc.Pages(b)[0]);
        Assert.NotEqual(alloc.Pages(a)[1], alloc.Pages(b)[1]); // copied before the write
        var back = new float[32];
        cache.ReadKey(alloc.Pages(a)[1], 2, 0, back);
        Assert.Equal(6f, back[0]);                              // the parent's token 6 is untouched
        cache.ReadKey(alloc.Pages(b)[1], 2, 0, back);
        Assert.Equal(100f, back[0]);
        cache.ReadKey(alloc.Pages(b)[1], 1, 0, back);
        Assert.Equal(5f, back[0]);
        int free = alloc.FreePages;
        alloc.Truncate(b, 0);
        Assert.Empty(alloc.Pages(b));
        Assert.Equal(free + 1, alloc.FreePages);                // b's own copy; the first page is still a's
        Assert.Equal(1, alloc.RefCount(alloc.Pages(a)[0]));
        alloc.Truncate(a, 10);                                  // no change
        Assert.Equal(10, alloc.Length(a));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => alloc.Truncate(a, 11));
        Assert.Equal("length", ex.ParamName);
        Assert.Contains("has 10 tokens", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => alloc.Truncate(a, -1));
        Assert.Throws<KeyNotFoundException>(() => alloc.Truncate(99, 0));
    }
}
