using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Positional;
using Kernels.Attention.Reference;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Tests.TestUtilities;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

/// <summary>Cascade (shared-prefix) decode against <see cref="AttentionReference.Cascade"/>, and the state merge it rests on.</summary>
public class CascadeTests
{
    /// <summary>Cache.SeqLens holds the groups' prefix lengths, then the sequences' suffix lengths.</summary>
    public sealed record CascadeCase(CacheSpec Cache, int[] GroupSizes, int Group, float SoftCap, int TargetItems)
    {
        public override string ToString() => $"{Cache} groups=[{string.Join(',', GroupSizes)}] group={Group} cap={SoftCap} targetItems={TargetItems}";
    }

    private static readonly (DType, KvScaleMode)[] Formats =
        [(DType.F32, KvScaleMode.None), (DType.F16, KvScaleMode.None), (DType.BF16, KvScaleMode.None),
         (DType.F8E4M3, KvScaleMode.None), (DType.F8E5M2, KvScaleMode.None), (DType.F8E4M3, KvScaleMode.PerHead),
         (DType.I8, KvScaleMode.PerToken), (DType.I8, KvScaleMode.PerHead), (DType.I4, KvScaleMode.None)];

    private static Gen<int> Length => Gen.OneOf(Gen.Elements(0, 1, 2, 15, 16, 17), Gen.Choose(0, 60));

    internal static Arbitrary<CascadeCase> Cases =>
        (from groups in Gen.Choose(1, 3)
         from sizes in Gen.ArrayOf(Gen.Elements(0, 1, 2, 5, 20), groups)
         from prefixLens in Gen.ArrayOf(Length, groups)
         from suffixLens in Gen.ArrayOf(Length, sizes.Sum())
         from page in Gen.Elements(1, 16, 5)
         from kvHeads in Gen.Elements(1, 2)
         from d in Gen.Elements(64, 128, 32)
         from fmt in Gen.Elements(Formats)
         from layout in Gen.Elements(KvLayout.Nhd, KvLayout.Hnd)
         from grp in Gen.Elements(1, 4, 8, 20)
         from cap in Gen.Elements(0f, 0f, 5f)
         from target in Gen.Elements(1, 64)
         from seed in Gen.Choose(0, int.MaxValue)
         select new CascadeCase(new CacheSpec([.. prefixLens, .. suffixLens], page, kvHeads, d, fmt.Item1, layout, fmt.Item2, seed), sizes, grp, cap, target))
        .ToArbitrary();

    /// <summary>The cache of <paramref name="c"/> with its table cut into the prefix table (one entry per group) and the suffix table.</summary>
    internal static (PagedKvCache Cache, PageTable Prefixes, PageTable Suffixes, int[] GroupIndptr) BuildCascade(CascadeCase c,
        Func<PagedKvCache, PageTable, string>? alter = null)
    {
        var (cache, table) = Build(c.Cache);
        alter?.Invoke(cache, table);
        int groups = c.GroupSizes.Length;
        var groupIndptr = new int[groups + 1];
        for (int g = 0; g < groups; g++) groupIndptr[g + 1] = groupIndptr[g] + c.GroupSizes[g];
        return (cache, Slice(table, 0, groups), Slice(table, groups, table.BatchSize), groupIndptr);
    }

    private static PageTable Slice(PageTable t, int from, int to)
    {
        int p0 = t.Indptr[from];
        var indptr = new int[to - from + 1];
        for (int i = from; i < to; i++) indptr[i - from + 1] = t.Indptr[i + 1] - p0;
        return new PageTable(indptr, t.Indices[p0..t.Indptr[to]], t.LastPageLen[from..to], t.PageSize);
    }

    internal static (float[] Q, float[] Expected, float[] LseE, double[] Mag, double Eps, int MaxLen) Oracle(CascadeCase c, PagedKvCache cache,
        PageTable prefixes, PageTable suffixes, int[] groupIndptr, AttentionShape shape, AttentionOptions opts)
    {
        int batch = suffixes.BatchSize;
        float[] q = Queries(new Random(c.Cache.Seed + 1), batch, shape, 2f);
        float[] expected = new float[q.Length], lseE = new float[batch * shape.QoHeads];
        double[] mag = new double[q.Length];
        AttentionReference.Cascade(groupIndptr, q, cache, prefixes, suffixes, shape, opts, expected, lseE, mag);
        int maxLen = 0;
        for (int g = 0; g < prefixes.BatchSize; g++)
            for (int b = groupIndptr[g]; b < groupIndptr[g + 1]; b++) maxLen = Math.Max(maxLen, prefixes.KvLength(g) + suffixes.KvLength(b));
        double eps = RopeFactor(opts) * LogitError(q, shape, opts.ScaleFor(shape.HeadDim), GatherKeys(cache, prefixes).Concat(GatherKeys(cache, suffixes)))
            + AlibiError(opts, maxLen);
        return (q, expected, lseE, mag, eps, maxLen);
    }

    internal static void Check(CascadeCase c, KernelOptions options, int window = -1, Func<int, float[]>? alibiFor = null, Func<int, float[]>? sinksFor = null,
        Func<int, RopeTable>? ropeFor = null)
    {
        var (cache, prefixes, suffixes, groupIndptr) = BuildCascade(c);
        var shape = new AttentionShape(c.Cache.KvHeads * c.Group, c.Cache.KvHeads, c.Cache.HeadDim);
        var opts = new AttentionOptions { LogitsSoftCap = c.SoftCap, WindowLeft = window, AlibiSlopes = alibiFor?.Invoke(shape.QoHeads),
            AttentionSinks = sinksFor?.Invoke(shape.QoHeads), Rope = ropeFor?.Invoke(shape.HeadDim) };
        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, c.TargetItems);
        var (q, expected, lseE, mag, eps, maxLen) = Oracle(c, cache, prefixes, suffixes, groupIndptr, shape, opts);
        float[] qCopy = (float[])q.Clone(), actual = new float[q.Length], lseA = new float[lseE.Length];
        actual.AsSpan().Fill(float.NaN);
        CascadeDecode.Run(plan, q, cache, actual, lseA, options);
        AssertClose(expected, actual, mag, lseE, lseA, eps, maxLen, $"{c} {options.Isa} window={window} alibi={opts.AlibiSlopes is not null}{RopeText(opts)}");
        Assert.Equal(qCopy, q);

        // Without an lse buffer the outputs are the same.
        float[] noLse = new float[q.Length];
        CascadeDecode.Run(plan, q, cache, noLse, default, options);
        Assert.Equal(actual, noLse);
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(Cases, c => Check(c, options)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_WindowAndAlibi_EachIsa_MatchFlatDecode(IsaPath isa)
    {
        // A sliding window and ALiBi count from each sequence's last key across both levels: the shared level's rows (the
        // group's sequences) each get their own position, so one tile's rows keep different shared keys.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in Cases.Generator
                     from window in Gen.Elements(-1, 0, 3, 20, 50)
                     from alibi in Gen.Elements(false, true)
                     from slopes in AlibiTests.Slopes
                     select (c, window, alibi ? slopes : null)).ToArbitrary();
        Prop.ForAll(cases, x => Check(x.c, options, x.window, x.Item3 is { } s ? s.For : null)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_NonFiniteKeysAndValues_EachIsa_FollowTheOraclesRule(IsaPath isa)
    {
        // 1–3 random ±Inf/NaN values in live K or V rows of either level (float formats): a level whose keys all have −∞
        // logits must still carry the oracle's 0·NaN of an Inf/NaN V row into the merged result.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in Cases.Generator
                     where c.Cache.DType is DType.F32 or DType.F16 or DType.BF16 or DType.F8E4M3 or DType.F8E5M2
                     from count in Gen.Choose(1, 3)
                     select (c, count)).ToArbitrary();
        Prop.ForAll(cases, x =>
        {
            string injected = "";
            var (cache, prefixes, suffixes, groupIndptr) = BuildCascade(x.c, (k, t) => injected = InjectNonFinite(k, t, new Random(x.c.Cache.Seed + 2), x.count));
            var shape = new AttentionShape(x.c.Cache.KvHeads * x.c.Group, x.c.Cache.KvHeads, x.c.Cache.HeadDim);
            var opts = new AttentionOptions { LogitsSoftCap = x.c.SoftCap };
            var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, x.c.TargetItems);
            var (q, expected, lseE, mag, _, maxLen) = Oracle(x.c, cache, prefixes, suffixes, groupIndptr, shape, opts);
            double eps = LogitError(q, shape, plan.SmScale, FiniteKeys(cache, prefixes).Concat(FiniteKeys(cache, suffixes)));
            float[] actual = new float[q.Length], lseA = new float[lseE.Length];
            CascadeDecode.Run(plan, q, cache, actual, lseA, options);
            AssertClose(expected, actual, mag, lseE, lseA, eps, maxLen, $"{x.c} {options.Isa}; injected {injected}");
        }).QuickCheckThrowOnFailure();
    }

    /// <summary>A sequence whose last token has a −∞ logit (K element −Inf against positive query elements) and a NaN in its
    /// V row, the rest finite: the oracle's output is NaN in that V column (0·NaN), for every head.</summary>
    internal static (PagedKvCache Cache, PageTable Table, float[] Q, AttentionShape Shape) MinusInfinityKeyWithNaNValue(DType dtype)
    {
        var (cache, table) = Build(new CacheSpec([0, 15], 1, 1, 32, dtype, KvLayout.Nhd, KvScaleMode.None, 4));
        var k = new float[32];
        var v = new float[32];
        int page = table.Indices[table.Indptr[1] + 14];
        cache.ReadKey(page, 0, 0, k);
        cache.ReadValue(page, 0, 0, v);
        k[26] = float.NegativeInfinity;
        v[27] = float.NaN;
        cache.WriteToken(page, 0, k, v);
        var shape = new AttentionShape(4, 1, 32);
        float[] q = Queries(new Random(5), 2, shape);
        for (int i = 26; i < q.Length; i += 32) q[i] = 1f; // every head: q·k = −∞ for that token
        return (cache, table, q, shape);
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void MinusInfinityLogitWithNaNValue_SplitAndCascade_KeepTheOraclesNaN(IsaPath isa)
    {
        // Split-KV with one token per chunk leaves that token alone in a chunk with no weight; the cascade with the last token as
        // the own part leaves it alone in a level with no weight. Both must still give NaN in column 27, as unsplit.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            var (cache, table, q, shape) = MinusInfinityKeyWithNaNValue(dtype);
            float[] expected = new float[q.Length], lseE = new float[8];
            double[] mag = new double[q.Length];
            AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, expected, lseE, mag);
            Assert.True(float.IsNaN(expected[4 * 32 + 27]) && float.IsFinite(expected[4 * 32 + 26]));
            double eps = LogitError(q, shape, AttentionOptions.Default.ScaleFor(32), FiniteKeys(cache, table));

            float[] actual = new float[q.Length], lseA = new float[8];
            var split = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), fixedChunkPages: 1);
            PagedDecode.Run(split, q, cache, actual, lseA, options);
            AssertClose(expected, actual, mag, lseE, lseA, eps, 15, $"split {dtype} {isa}");

            var prefixes = new PageTable([0, 0, 14], table.Indices[..14], [0, 1], 1);
            var suffixes = new PageTable([0, 0, 1], table.Indices[14..15], [0, 1], 1);
            var cascade = CascadePlanner.Plan([0, 1, 2], prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace());
            Array.Clear(actual);
            CascadeDecode.Run(cascade, q, cache, actual, lseA, options);
            AssertClose(expected, actual, mag, lseE, lseA, eps, 15, $"cascade {dtype} {isa}");
        }
    }

    [Fact]
    public void MergeInPlace_EmptyStates_DropFiniteValuesAndKeepNaN()
    {
        float[] v = [1f, 2f, 3f], poisoned = [0f, float.NaN, 0f];
        float lse = 0.5f;
        AttentionState.MergeInPlace(v, ref lse, poisoned, float.NegativeInfinity);
        Assert.Equal(0.5f, lse);
        Assert.Equal(1f, v[0]);
        Assert.True(float.IsNaN(v[1]));
        Assert.Equal(3f, v[2]);

        float[] empty = [0f, float.NaN, 7f]; // an empty state's finite values drop out
        lse = float.NegativeInfinity;
        AttentionState.MergeInPlace(empty, ref lse, [4f, 5f, 6f], 2f);
        Assert.Equal(2f, lse);
        Assert.Equal(4f, empty[0]);
        Assert.True(float.IsNaN(empty[1]));
        Assert.Equal(6f, empty[2]);

        float[] both = [5f, 0f, float.PositiveInfinity];
        lse = float.NegativeInfinity;
        AttentionState.MergeInPlace(both, ref lse, [1f, float.NaN, 2f], float.NegativeInfinity);
        Assert.Equal(float.NegativeInfinity, lse);
        Assert.Equal(0f, both[0]);
        Assert.True(float.IsNaN(both[1]) && float.IsNaN(both[2])); // 0·Inf is NaN too
    }

    [Fact]
    public void Run_EqualsFlatDecodeOverTheConcatenatedPages()
    {
        // A page-aligned shared prefix can also be run as flat decode (each sequence's table = prefix pages + own pages): the
        // two must agree to rounding, and the cascade reads the prefix once per group tile.
        var c = new CascadeCase(new CacheSpec([64, 5, 30, 17], 16, 2, 128, DType.F16, KvLayout.Nhd, KvScaleMode.None, 3), [3], 4, 0, 64);
        var (cache, prefixes, suffixes, groupIndptr) = BuildCascade(c);
        var shape = new AttentionShape(8, 2, 128);
        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace());
        var indptr = new List<int> { 0 };
        var indices = new List<int>();
        for (int b = 0; b < 3; b++)
        {
            indices.AddRange(prefixes.Indices.ToArray());
            indices.AddRange(suffixes.Indices[suffixes.Indptr[b]..suffixes.Indptr[b + 1]].ToArray());
            indptr.Add(indices.Count);
        }
        var flat = new PageTable([.. indptr], [.. indices], suffixes.LastPageLen, 16);
        var flatPlan = DecodePlanner.Plan(flat, shape, cache.NumPages, new AttentionWorkspace());
        float[] q = Queries(new Random(4), 3, shape);
        float[] a = new float[q.Length], b2 = new float[q.Length], la = new float[24], lb = new float[24];
        CascadeDecode.Run(plan, q, cache, a, la);
        PagedDecode.Run(flatPlan, q, cache, b2, lb);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b2[i]) <= 1e-5f, $"output[{i}]: cascade {a[i]}, flat {b2[i]}");
        for (int i = 0; i < la.Length; i++) Assert.True(Math.Abs(la[i] - lb[i]) <= 1e-5f, $"lse[{i}]: cascade {la[i]}, flat {lb[i]}");
    }

    /// <summary>Appends <paramref name="n"/> tokens of random K/V in [−1, 1) to a sequence.</summary>
    private static void AppendRandom(PageAllocator alloc, Random rng, int seq, int n)
    {
        int row = alloc.Cache.KvHeads * alloc.Cache.HeadDim;
        var k = Enumerable.Range(0, n * row).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var v = Enumerable.Range(0, n * row).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        alloc.Append(seq, k, v, n);
    }

    [Theory]
    [InlineData(DType.F16, 8)]
    [InlineData(DType.I4, 5)]
    public void AllocatorForks_CascadeTables_GiveFlatDecodesAnswer(DType dtype, int pageSize)
    {
        // A 37-token prompt forked twice; the forks and the parent grow by different amounts (copy-on-write of the shared
        // partial page), plus a lone sequence in a group of its own, and two forks that have not grown (their shared run
        // ends with the partial page).
        const int kvHeads = 2, d = 64;
        var cache = new PagedKvCache(64, pageSize, kvHeads, d, dtype);
        var alloc = new PageAllocator(cache);
        var rng = new Random(pageSize);
        void Append(int seq, int n) => AppendRandom(alloc, rng, seq, n);
        int a = alloc.Create();
        Append(a, 37);
        int b = alloc.Fork(a), c = alloc.Fork(a);
        Append(b, 3);
        Append(c, 20);
        int lone = alloc.Create();
        Append(lone, 11);
        int e = alloc.Create();
        Append(e, 13);
        int f = alloc.Fork(e);
        int[] seqs = [a, b, c, lone, e, f], groups = [0, 3, 4, 6];
        var (prefixes, suffixes) = alloc.BuildCascadeTables(seqs, groups);
        Assert.Equal(37 / pageSize * pageSize, prefixes.KvLength(0)); // the full shared pages only
        Assert.Equal(0, prefixes.KvLength(1));                        // a group of one shares nothing
        Assert.Equal(13, prefixes.KvLength(2));                       // unchanged forks share everything
        Assert.Equal([0, 0], new[] { suffixes.KvLength(4), suffixes.KvLength(5) });
        for (int i = 0; i < 3; i++) Assert.Equal(alloc.Length(seqs[i]) - prefixes.KvLength(0), suffixes.KvLength(i));

        var shape = new AttentionShape(8, kvHeads, d);
        var plan = CascadePlanner.Plan(groups, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace());
        var flat = alloc.BuildPageTable(seqs);
        float[] q = Queries(new Random(3), seqs.Length, shape);
        float[] expected = new float[q.Length], lseE = new float[seqs.Length * 8], actual = new float[q.Length], lseA = new float[lseE.Length];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, flat, shape, AttentionOptions.Default, expected, lseE, mag);
        CascadeDecode.Run(plan, q, cache, actual, lseA);
        AssertClose(expected, actual, mag, lseE, lseA, LogitError(q, shape, plan.SmScale, GatherKeys(cache, flat)), 60, $"allocator cascade {dtype}");
        Assert.Throws<ArgumentException>(() => alloc.BuildCascadeTables(seqs, [0, 3]));
        Assert.Throws<KeyNotFoundException>(() => alloc.BuildCascadeTables([a, 99], [0, 2]));
    }

    /// <summary>A multi-level cascade: Cache.SeqLens holds each level's group lengths (level by level), then the sequences'
    /// own lengths; each level partitions the batch independently (groups need not nest for the planner and kernels).</summary>
    public sealed record MultiLevelCase(CacheSpec Cache, int[][] LevelIndptrs, int Group)
    {
        public override string ToString() =>
            $"{Cache} levels=[{string.Join(" | ", LevelIndptrs.Select(l => string.Join(',', l)))}] group={Group}";
    }

    internal static Arbitrary<MultiLevelCase> MultiLevelCases =>
        (from batch in Gen.Choose(0, 7)
         from levels in Gen.Choose(2, 3)
         from seed in Gen.Choose(0, int.MaxValue)
         from page in Gen.Elements(1, 16, 5)
         from kvHeads in Gen.Elements(1, 2)
         from d in Gen.Elements(64, 32)
         from fmt in Gen.Elements(Formats)
         from grp in Gen.Elements(1, 4, 5)
         select Multi(batch, levels, seed, page, kvHeads, d, fmt, grp)).ToArbitrary();

    private static MultiLevelCase Multi(int batch, int levels, int seed, int page, int kvHeads, int d, (DType, KvScaleMode) fmt, int grp)
    {
        var rng = new Random(seed);
        var indptrs = new int[levels][];
        var lens = new List<int>();
        for (int l = 0; l < levels; l++)
        {
            // Random cut points (repeats give empty groups), always from 0 to the batch.
            var cuts = Enumerable.Range(0, rng.Next(0, 3)).Select(_ => rng.Next(0, batch + 1)).Order();
            indptrs[l] = [0, .. cuts, batch];
            for (int g = 0; g < indptrs[l].Length - 1; g++) lens.Add(rng.Next(4) == 0 ? 0 : rng.Next(1, 40));
        }
        for (int b = 0; b < batch; b++) lens.Add(rng.Next(0, 30));
        return new MultiLevelCase(new CacheSpec([.. lens], page, kvHeads, d, fmt.Item1, KvLayout.Nhd, fmt.Item2, seed), indptrs, grp);
    }

    internal static (PagedKvCache Cache, CascadeLevel[] Levels, PageTable Suffixes) BuildMultiLevel(MultiLevelCase c)
    {
        var (cache, table) = Build(c.Cache);
        var levels = new CascadeLevel[c.LevelIndptrs.Length];
        int at = 0;
        for (int l = 0; l < levels.Length; l++)
        {
            int groups = c.LevelIndptrs[l].Length - 1;
            levels[l] = new CascadeLevel(c.LevelIndptrs[l], Slice(table, at, at + groups));
            at += groups;
        }
        return (cache, levels, Slice(table, at, table.BatchSize));
    }

    internal static (float[] Q, float[] Expected, float[] LseE, double[] Mag, double Eps, int MaxLen) MultiLevelOracle(MultiLevelCase c, PagedKvCache cache,
        CascadeLevel[] levels, PageTable suffixes, AttentionShape shape, AttentionOptions? opts = null)
    {
        opts ??= AttentionOptions.Default;
        int batch = suffixes.BatchSize;
        float[] q = Queries(new Random(c.Cache.Seed + 1), batch, shape, 2f);
        float[] expected = new float[q.Length], lseE = new float[batch * shape.QoHeads];
        double[] mag = new double[q.Length];
        AttentionReference.Cascade(levels, q, cache, suffixes, shape, opts, expected, lseE, mag);
        var keys = levels.SelectMany(l => GatherKeys(cache, l.Pages)).Concat(GatherKeys(cache, suffixes));
        int maxLen = 0;
        for (int b = 0; b < batch; b++) maxLen = Math.Max(maxLen, levels.Sum(l => l.Pages.KvLength(l.GroupOf(b))) + suffixes.KvLength(b));
        double eps = LogitError(q, shape, opts.ScaleFor(shape.HeadDim), keys) + AlibiError(opts, maxLen);
        return (q, expected, lseE, mag, eps, maxLen);
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void MultiLevel_EachIsa_MatchesReference(IsaPath isa)
    {
        // 2 or 3 shared levels, each a random partition of the batch (empty groups, empty levels, groups that do not nest),
        // then the sequences' own pages; every format; against flat attention over the concatenated keys.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        // A sliding window (−1: none) and ALiBi (half the cases) count from each sequence's last key across every level.
        var cases = (from c in MultiLevelCases.Generator
                     from window in Gen.Elements(-1, -1, 0, 10, 45)
                     from alibi in Gen.Elements(false, true)
                     from slopes in AlibiTests.Slopes
                     select (c, window, alibi ? slopes : null)).ToArbitrary();
        Prop.ForAll(cases, x =>
        {
            var c = x.c;
            var (cache, levels, suffixes) = BuildMultiLevel(c);
            var shape = new AttentionShape(c.Cache.KvHeads * c.Group, c.Cache.KvHeads, c.Cache.HeadDim);
            var opts = new AttentionOptions { WindowLeft = x.window, AlibiSlopes = x.Item3?.For(shape.QoHeads) };
            var plan = CascadePlanner.Plan(levels, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, targetItems: 8);
            Assert.Equal(levels.Length, plan.SharedLevels.Count);
            var (q, expected, lseE, mag, eps, maxLen) = MultiLevelOracle(c, cache, levels, suffixes, shape, opts);
            float[] actual = new float[q.Length], lseA = new float[lseE.Length];
            actual.AsSpan().Fill(float.NaN);
            CascadeDecode.Run(plan, q, cache, actual, lseA, options);
            AssertClose(expected, actual, mag, lseE, lseA, eps, maxLen, $"{c} {options.Isa} window={x.window} alibi={opts.AlibiSlopes is not null}");
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void AllocatorForkTree_ThreeLevels_GiveFlatDecodesAnswer()
    {
        // A 40-token system prompt; two conversations fork from it and add 21 and 9 tokens; each conversation forks into
        // beams that add 0–7 tokens; plus a sequence on the system prompt alone. Levels: the whole batch shares the system
        // prompt, each conversation's beams share its pages, then each beam's own.
        const int kvHeads = 2, d = 64, page = 8;
        var cache = new PagedKvCache(96, page, kvHeads, d, DType.F16);
        var alloc = new PageAllocator(cache);
        var rng = new Random(31);
        void Append(int seq, int n) => AppendRandom(alloc, rng, seq, n);
        int system = alloc.Create();
        Append(system, 40);
        int conv1 = alloc.Fork(system), conv2 = alloc.Fork(system);
        Append(conv1, 21);
        Append(conv2, 9);
        int[] beams1 = [alloc.Fork(conv1), alloc.Fork(conv1), alloc.Fork(conv1)], beams2 = [alloc.Fork(conv2), alloc.Fork(conv2)];
        for (int i = 0; i < beams1.Length; i++) Append(beams1[i], 1 + 3 * i);
        Append(beams2[0], 7);
        int[] seqs = [.. beams1, .. beams2, system];
        int[][] levels = [[0, 6], [0, 3, 5, 6]];
        var (built, suffixes) = alloc.BuildCascadeLevels(seqs, levels);
        Assert.Equal(40, built[0].Pages.KvLength(0));                  // the system prompt: five full pages
        Assert.Equal([16, 8, 0], Enumerable.Range(0, 3).Select(built[1].Pages.KvLength)); // each conversation's full pages past it
        Assert.Equal(alloc.Length(beams2[1]) - 48, suffixes.KvLength(4));

        var shape = new AttentionShape(8, kvHeads, d);
        var plan = CascadePlanner.Plan(built, suffixes, shape, cache.NumPages, new AttentionWorkspace());
        var flat = alloc.BuildPageTable(seqs);
        float[] q = Queries(new Random(3), seqs.Length, shape);
        float[] expected = new float[q.Length], lseE = new float[seqs.Length * 8];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, flat, shape, AttentionOptions.Default, expected, lseE, mag);
        double eps = LogitError(q, shape, plan.SmScale, GatherKeys(cache, flat));
        foreach (var isa in IsaMatrix.All)
        {
            if (IsaMatrix.OptionsOrSkip(isa) is not { } options) continue;
            float[] actual = new float[q.Length], lseA = new float[lseE.Length];
            CascadeDecode.Run(plan, q, cache, actual, lseA, options);
            AssertClose(expected, actual, mag, lseE, lseA, eps, 80, $"three-level cascade {isa}");
        }

        var e = Assert.Throws<ArgumentException>(() => alloc.BuildCascadeLevels(seqs, [[0, 3, 6], [0, 4, 6]]));
        Assert.Contains("spans two groups of level 0", e.Message);
        Assert.Throws<ArgumentException>(() => alloc.BuildCascadeLevels(seqs, []));
        Assert.Throws<ArgumentException>(() => alloc.BuildCascadeLevels(seqs, [[0, 5]]));
        e = Assert.Throws<ArgumentException>(() => alloc.BuildCascadeLevels(seqs, [[0, 9, 6]])); // an offset past the sequences
        Assert.Contains("groupIndptrs[0] is not monotone", e.Message);
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([], suffixes, shape, cache.NumPages, new AttentionWorkspace()));
        Assert.Contains("at least one shared level", e.Message);
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([built[0], new CascadeLevel([0, 5], new PageTable([0, 0], [], [0], page))], suffixes, shape, cache.NumPages, new AttentionWorkspace()));
        Assert.Contains("Level 1's groups cover 5 sequences", e.Message);
    }

    [Fact]
    public void Plan_InvalidInput_ThrowsBeforeAnyWork()
    {
        var c = new CascadeCase(new CacheSpec([20, 3, 4], 4, 1, 64, DType.F32, KvLayout.Nhd, KvScaleMode.None, 5), [2], 1, 0, 64);
        var (cache, prefixes, suffixes, groupIndptr) = BuildCascade(c);
        var shape = new AttentionShape(1, 1, 64);
        var ws = new AttentionWorkspace();
        var e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([0, 1], prefixes, suffixes, shape, cache.NumPages, ws));
        Assert.Contains("groupIndptr[1] = 1", e.Message);
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([0, 1, 2], prefixes, suffixes, shape, cache.NumPages, ws));
        Assert.Contains("groupIndptr", e.Message);
        var twoGroups = new PageTable([0, 0, 0], [], [0, 0], 4);
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([0, 2, 1], twoGroups, suffixes, shape, cache.NumPages, ws));
        Assert.Contains("not monotone: groupIndptr[2] = 1 < groupIndptr[1] = 2", e.Message);
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([1, 2], prefixes, suffixes, shape, cache.NumPages, ws));
        Assert.Contains("groupIndptr[0] must be 0", e.Message);
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan(groupIndptr, prefixes, new PageTable([0, 1], [0], [2], 8), shape, cache.NumPages, ws));
        Assert.Contains("page size (4)", e.Message);
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, 3, ws));
        Assert.Contains("past", e.Message, StringComparison.OrdinalIgnoreCase);

        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, ws);
        Assert.Throws<ArgumentException>(() => CascadeDecode.Run(plan, new float[64], cache, new float[128], default));
        var other = new PagedKvCache(cache.NumPages, 8, 1, 64, DType.F32, KvLayout.Nhd, KvScaleMode.None);
        Assert.Throws<ArgumentException>(() => CascadeDecode.Run(plan, new float[128], other, new float[128], default));
    }

    [Fact]
    public void Merge_DestinationIsEitherInput_GivesTheSameBits()
    {
        var rng = new Random(6);
        for (int trial = 0; trial < 50; trial++)
        {
            float[] a = Enumerable.Range(0, 37).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            float[] b = Enumerable.Range(0, 37).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            float la = trial % 7 == 0 ? float.NegativeInfinity : (float)(rng.NextDouble() * 20 - 10);
            float lb = trial % 5 == 0 ? float.NegativeInfinity : (float)(rng.NextDouble() * 20 - 10);
            float[] fresh = new float[37];
            float l = AttentionState.Merge(a, la, b, lb, fresh);
            float[] intoA = (float[])a.Clone(), intoB = (float[])b.Clone();
            Assert.Equal(l, AttentionState.Merge(intoA, la, b, lb, intoA));
            Assert.Equal(l, AttentionState.Merge(a, la, intoB, lb, intoB));
            Assert.Equal(fresh, intoA);
            Assert.Equal(fresh, intoB);
            // In place with the other state aliased to itself: merging a state with itself keeps its values.
            float[] self = (float[])a.Clone();
            float ls = la;
            AttentionState.MergeInPlace(self, ref ls, self, la);
            if (!float.IsNegativeInfinity(la))
                for (int i = 0; i < 37; i++) Assert.True(Math.Abs(self[i] - a[i]) <= 1e-6f);
        }
    }

    [Fact]
    public void MergeStates_CpuBackend_MatchesAttentionState()
    {
        var cpu = new CpuBackend();
        var (v, l, o, ol) = MergeInputs(7, rows: 9, d: 48);
        var (ev, el) = MergeExpected(v, l, o, ol, 48);
        using var vt = cpu.Upload(v, 3, 3, 48);
        using var lt = cpu.Upload(l, 3, 3);
        using var ot = cpu.Upload(o, 3, 3, 48);
        using var olt = cpu.Upload(ol, 3, 3);
        cpu.MergeStates(vt, lt, ot, olt);
        Assert.Equal(ev, vt.ToArray());
        Assert.Equal(el, lt.ToArray());
        Assert.Equal(o, ot.ToArray()); // the other state is not modified
        using var shortLse = cpu.Upload(new float[8], 8);
        var e = Assert.Throws<ArgumentException>(() => cpu.MergeStates(vt, shortLse, ot, olt));
        Assert.Contains("8 rows", e.Message);
    }

    /// <summary>Random states with −∞ (empty), NaN, far-apart and equal log-sum-exps.</summary>
    internal static (float[] V, float[] Lse, float[] Other, float[] OtherLse) MergeInputs(int seed, int rows, int d)
    {
        var rng = new Random(seed);
        float[] v = Enumerable.Range(0, rows * d).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] o = Enumerable.Range(0, rows * d).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] special = [float.NegativeInfinity, float.NaN, 3f, -200f, 0f];
        float[] l = Enumerable.Range(0, rows).Select(i => i < special.Length ? special[i] : (float)(rng.NextDouble() * 10)).ToArray();
        float[] ol = Enumerable.Range(0, rows).Select(i => i < special.Length ? special[(i + 2) % special.Length] : (float)(rng.NextDouble() * 10)).ToArray();
        ol[^1] = float.NegativeInfinity;
        l[^1] = float.NegativeInfinity;
        return (v, l, o, ol);
    }

    internal static (float[] V, float[] Lse) MergeExpected(float[] v, float[] l, float[] o, float[] ol, int d)
    {
        float[] ev = (float[])v.Clone(), el = (float[])l.Clone();
        for (int r = 0; r < el.Length; r++) AttentionState.MergeInPlace(ev.AsSpan(r * d, d), ref el[r], o.AsSpan(r * d, d), ol[r]);
        return (ev, el);
    }
}
