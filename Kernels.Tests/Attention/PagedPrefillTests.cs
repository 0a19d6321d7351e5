using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Positional;
using Kernels.Attention.Reference;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Tests.TestUtilities;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

public class PagedPrefillTests
{
    /// <summary>A prefill case; <paramref name="SplitPages"/> &gt; 0 plans split-KV with chunks of that many pages, −1 with a
    /// workspace and the planner's own rule (the default target of items), 0 without a workspace.</summary>
    public sealed record PrefillCase(CacheSpec Cache, int[] QoLens, int Group, bool Causal, int Window, float SoftCap, int SplitPages = 0)
    {
        public override string ToString() => $"{Cache} qo=[{string.Join(',', QoLens)}] group={Group} causal={Causal} window={Window} cap={SoftCap} split={SplitPages}";
    }

    internal static Arbitrary<PrefillCase> Cases =>
        (from batch in Gen.Choose(1, 3)
         from lens in Gen.ArrayOf(Gen.OneOf(Gen.Elements(0, 1, 16, 17), Gen.Choose(0, 40)), batch)
         from qfrac in Gen.ArrayOf(Gen.Choose(0, 100), batch)
         from page in Gen.Elements(1, 16, 3)
         from kvHeads in Gen.Elements(1, 2)
         from d in Gen.Elements(64, 128)
         from fmt in Gen.Elements((DType.F32, KvScaleMode.None), (DType.BF16, KvScaleMode.None), (DType.F16, KvScaleMode.None), (DType.F8E4M3, KvScaleMode.None), (DType.F8E5M2, KvScaleMode.None), (DType.F8E5M2, KvScaleMode.PerHead), (DType.I8, KvScaleMode.PerToken), (DType.I4, KvScaleMode.None))
         from layout in Gen.Elements(KvLayout.Nhd, KvLayout.Hnd)
         from grp in Gen.Elements(1, 2, 5)
         from causal in Gen.Elements(true, false)
         from window in Gen.Elements(-1, 0, 5)
         from cap in Gen.Elements(0f, 3f)
         from split in Gen.Elements(0, 0, 1, 2)
         from seed in Gen.Choose(0, int.MaxValue)
         let qo = lens.Select((l, i) => Math.Min(l + 2, (l + 2) * qfrac[i] / 100 + 1)).ToArray()
         select new PrefillCase(new CacheSpec(lens, page, kvHeads, d, fmt.Item1, layout, fmt.Item2, seed), qo, grp, causal, window, cap, split)).ToArbitrary();

    /// <summary>Items of 48 queries (12 rows × 4 heads: the AVX-512 query-lane kernels' 32-query and 16-query blocks), with
    /// 5-token pages (tiles of fewer than 8 live tokens) and a sliding window over 16-token pages (tiles whose live tokens
    /// start past token 8), for every format.</summary>
    public static TheoryData<DType, KvScaleMode, int, int> QueryLaneShapes => new()
    {
        { DType.F16, KvScaleMode.None, 5, -1 }, { DType.BF16, KvScaleMode.None, 16, 5 }, { DType.F32, KvScaleMode.None, 16, 5 },
        { DType.I8, KvScaleMode.PerToken, 5, -1 }, { DType.I4, KvScaleMode.None, 16, 5 },
        { DType.F8E4M3, KvScaleMode.None, 5, -1 }, { DType.F8E5M2, KvScaleMode.None, 16, 5 },
    };

    [Theory]
    [MemberData(nameof(QueryLaneShapes))]
    public void Run_48QueriesPerItem_EachIsa_MatchesReference(DType dtype, KvScaleMode mode, int pageSize, int window)
    {
        foreach (var isa in IsaMatrix.All)
        {
            if (IsaMatrix.OptionsOrSkip(isa) is not { } options) continue;
            Check(new PrefillCase(new CacheSpec([40, 23], pageSize, 1, 64, dtype, KvLayout.Nhd, mode, 31), [12, 12], 4, true, window, 0f), options);
        }
    }

    /// <summary>How many Inf/NaN values to inject into a case's K/V: <paramref name="n"/> for the fp32/fp16/bf16 formats, whose
    /// codes hold them exactly, else 0.</summary>
    internal static int NonFiniteFor(PrefillCase c, int n) => c.Cache.DType is DType.F32 or DType.F16 or DType.BF16 ? n : 0;

    internal static void Check(PrefillCase c, KernelOptions options, bool quantizedQ = false, int nonFinite = 0, Func<int[], int[], CustomMask>? maskOf = null,
        Func<int, float[]>? alibiFor = null, Func<int, float[]>? sinksFor = null, Func<int, RopeTable>? ropeFor = null) =>
        Check(c, (plan, q, cache, o, lse) => PagedPrefill.Run(plan, q, cache, o, lse, options), options.Isa.ToString(), quantizedQ, nonFinite, maskOf, alibiFor,
            sinksFor, ropeFor);

    /// <summary>Runs case <paramref name="c"/> (with <paramref name="nonFinite"/> Inf/NaN values injected into K/V) through
    /// <paramref name="run"/> (plan, queries, cache, output, lse) and compares with the oracle; <paramref name="maskOf"/>
    /// makes a custom mask from (qo_indptr, kv lengths).</summary>
    internal static void Check(PrefillCase c, Action<PrefillPlan, float[], PagedKvCache, float[], float[]> run, string what, bool quantizedQ = false, int nonFinite = 0,
        Func<int[], int[], CustomMask>? maskOf = null, Func<int, float[]>? alibiFor = null, Func<int, float[]>? sinksFor = null,
        Func<int, RopeTable>? ropeFor = null)
    {
        var (cache, table) = Build(c.Cache);
        string injected = nonFinite > 0 ? "; injected " + InjectNonFinite(cache, table, new Random(c.Cache.Seed + 3), nonFinite) : "";
        var shape = new AttentionShape(c.Cache.KvHeads * c.Group, c.Cache.KvHeads, c.Cache.HeadDim);
        var opts = new AttentionOptions
        {
            Causal = c.Causal, WindowLeft = c.Window, LogitsSoftCap = c.SoftCap, QuantizedQueryDot = quantizedQ, AlibiSlopes = alibiFor?.Invoke(shape.QoHeads),
            AttentionSinks = sinksFor?.Invoke(shape.QoHeads), Rope = ropeFor?.Invoke(shape.HeadDim),
        };
        var qoIndptr = new int[c.QoLens.Length + 1];
        for (int i = 0; i < c.QoLens.Length; i++) qoIndptr[i + 1] = qoIndptr[i] + c.QoLens[i];
        var mask = maskOf?.Invoke(qoIndptr, c.Cache.SeqLens);
        var plan = c.SplitPages != 0
            ? PrefillPlanner.Plan(qoIndptr, table, shape, cache.NumPages, opts, mask, new AttentionWorkspace(), fixedChunkPages: c.SplitPages > 0 ? c.SplitPages : null)
            : PrefillPlanner.Plan(qoIndptr, table, shape, cache.NumPages, opts, mask);
        int rows = qoIndptr[^1];
        var q = Queries(new Random(c.Cache.Seed + 2), rows, shape, 2f);
        float[] e = new float[q.Length], a = new float[q.Length], le = new float[rows * shape.QoHeads], la = new float[le.Length];
        double[] mag = new double[q.Length];
        AttentionReference.Prefill(qoIndptr, q, cache, table, shape, opts, e, le, mag, mask);
        a.AsSpan().Fill(float.NaN);
        run(plan, q, cache, a, la);
        int maxLen = c.Cache.SeqLens.DefaultIfEmpty(0).Max();
        AssertClose(e, a, mag, le, la, RopeFactor(opts) * LogitError(quantizedQ ? QueryQuantization.Dequantized(q, shape.HeadDim) : q, shape, plan.SmScale, FiniteKeys(cache, table))
            + AlibiError(opts, maxLen), maxLen, $"{c} {what} quantizedQ={quantizedQ} alibi={opts.AlibiSlopes is not null}{RopeText(opts)}{injected}");
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_NonFiniteKeysAndValues_EachIsa_FollowTheOraclesRule(IsaPath isa)
    {
        // Prefill rows see different key ranges (causal, window): a NaN/Inf in a V row masked for one row must not reach
        // it, while a −∞ logit inside a row's range weighs 0 and still multiplies its V row (AttentionReference's rule).
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var floats = (from c in Cases.Generator where c.Cache.DType is DType.F32 or DType.F16 or DType.BF16 or DType.F8E4M3 or DType.F8E5M2
                      from n in Gen.Choose(1, 3) select (c, n)).ToArbitrary();
        Prop.ForAll(floats, x => Check(x.c, options, nonFinite: x.n)).QuickCheckThrowOnFailure();
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
    public void Run_QuantizedQueryDot_EachIsa_MatchesReferenceWithInt8Queries(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var quantized = Cases.Generator.Where(c => c.Cache.DType is DType.I8 or DType.I4).ToArbitrary();
        Prop.ForAll(quantized, c => Check(c, options, quantizedQ: true)).QuickCheckThrowOnFailure();
    }

    /// <summary>A block-sparse case; <paramref name="SplitBlocks"/> &gt; 0 plans split-KV with chunks of that many key blocks.</summary>
    public sealed record SparseCase(int M, int N, int R, int C, int Density, bool Causal, int Group, DType DType, int Seed, int SplitBlocks = 0)
    {
        public override string ToString() => $"M={M} N={N} R={R} C={C} density={Density}% causal={Causal} group={Group} {DType} seed={Seed} split={SplitBlocks}";
    }

    internal static Arbitrary<SparseCase> SparseCases =>
        (from m in Gen.Choose(1, 40)
         from n in Gen.Choose(1, 60)
         from r in Gen.Elements(1, 4, 16)
         from c in Gen.Elements(1, 4, 16)
         from density in Gen.Elements(0, 30, 70, 100)
         from causal in Gen.Elements(true, false)
         from grp in Gen.Elements(1, 4)
         from dtype in Gen.Elements(DType.F32, DType.F16, DType.BF16)
         from seed in Gen.Choose(0, int.MaxValue)
         from split in Gen.Elements(0, 0, 1, 3)
         select new SparseCase(m, n, r, c, density, causal, grp, dtype, seed, split)).ToArbitrary();

    /// <summary>Runs block-sparse case <paramref name="s"/> through <paramref name="run"/> (default: the CPU kernel with
    /// <paramref name="options"/>) and compares with the oracle; <paramref name="elementDensity"/> ≥ 0 adds an element mask
    /// inside the blocks that keeps each entry with that probability (%).</summary>
    internal static void CheckSparse(SparseCase s, KernelOptions options, int elementDensity = -1,
        Action<PrefillPlan, float[], PagedKvCache, float[], float[]>? run = null)
    {
        var rng = new Random(s.Seed);
        int mb = (s.M + s.R - 1) / s.R, nb = (s.N + s.C - 1) / s.C;
        var indptr = new int[mb + 1];
        var indices = new List<int>();
        for (int i = 0; i < mb; i++)
        {
            for (int j = 0; j < nb; j++)
                if (rng.Next(100) < s.Density) indices.Add(j);
            indptr[i + 1] = indices.Count;
        }
        var mask = new BlockSparseMask(indptr, indices.ToArray(), s.M, s.N, s.R, s.C);
        const int kvHeads = 2, d = 64;
        var shape = new AttentionShape(kvHeads * s.Group, kvHeads, d);
        // Key block j = page j; pages of excluded blocks are filled with NaN: reading one would poison the output.
        var cache = new PagedKvCache(nb + 1, s.C, kvHeads, d, s.DType);
        var used = new HashSet<int>(indices);
        var dense = new float[s.N * kvHeads * d];
        var denseV = new float[dense.Length];
        var kRow = new float[kvHeads * d];
        var vRow = new float[kRow.Length];
        var back = new float[d];
        for (int t = 0; t < nb * s.C; t++)
        {
            bool live = used.Contains(t / s.C) && t < s.N;
            for (int i = 0; i < kRow.Length; i++)
            {
                kRow[i] = live ? (float)(rng.NextDouble() * 2 - 1) : float.NaN;
                vRow[i] = live ? (float)(rng.NextDouble() * 2 - 1) : float.NaN;
            }
            cache.WriteToken(t / s.C, t % s.C, kRow, vRow);
            if (t >= s.N) continue;
            for (int h = 0; h < kvHeads; h++)
            {
                cache.ReadKey(t / s.C, t % s.C, h, back);
                back.CopyTo(dense, (t * kvHeads + h) * d);
                cache.ReadValue(t / s.C, t % s.C, h, back);
                back.CopyTo(denseV, (t * kvHeads + h) * d);
            }
        }
        var opts = new AttentionOptions { Causal = s.Causal };
        CustomMask? elements = null;
        if (elementDensity >= 0)
        {
            var bits = new bool[indices.Count * s.R * s.C];
            for (int i = 0; i < bits.Length; i++) bits[i] = rng.Next(100) < elementDensity;
            elements = mask.ElementMask(bits);
        }
        var plan = s.SplitBlocks > 0
            ? PrefillPlanner.PlanBlockSparse(mask, shape, cache.NumPages, opts, elements, new AttentionWorkspace(), fixedChunkPages: s.SplitBlocks)
            : PrefillPlanner.PlanBlockSparse(mask, shape, cache.NumPages, opts, elements);
        var q = Queries(rng, s.M, shape);
        float[] e = new float[q.Length], a = new float[q.Length], le = new float[s.M * shape.QoHeads], la = new float[le.Length];
        double[] mag = new double[q.Length];
        AttentionReference.BlockSparse(mask, q, dense, denseV, shape, opts, e, le, mag, elements);
        a.AsSpan().Fill(float.NaN);
        if (run is null) PagedPrefill.Run(plan, q, cache, a, la, options);
        else run(plan, q, cache, a, la);
        var finiteKeys = dense.Select(x => float.IsNaN(x) ? 0 : x).ToArray();
        AssertClose(e, a, mag, le, la, LogitError(q, shape, plan.SmScale, [finiteKeys]), s.N, $"{s} {options.Isa} elementDensity={elementDensity}");
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void BlockSparse_EachIsa_MatchesReferenceAndSkipsExcludedBlocks(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(SparseCases, c => CheckSparse(c, options)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void BlockSparse_ElementMask_EachIsa_MatchesReference(IsaPath isa)
    {
        // FlashInfer's BlockSparseAttentionWrapper mask: nnz × R × C booleans inside the kept blocks.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in SparseCases.Generator from density in Gen.Elements(0, 40, 90, 100) select (c, density)).ToArbitrary();
        Prop.ForAll(cases, x => CheckSparse(x.c, options, x.density)).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void BlockSparse_ElementMask_MapsBlockEntriesAndChecksSizes()
    {
        // 5 × 7 scores in 2 × 3 blocks: block row 0 keeps columns 0 and 2, row 2 (the partial last) keeps column 1.
        var mask = new BlockSparseMask([0, 2, 2, 3], [0, 2, 1], 5, 7, 2, 3);
        var bits = new bool[3 * 2 * 3];
        bits[0 * 6 + 1 * 3 + 2] = true; // block (0, 0), r 1, c 2: query 1, key 2
        bits[1 * 6 + 0 * 3 + 0] = true; // block (0, 2), r 0, c 0: query 0, key 6 (c 1, 2 are past N)
        bits[2 * 6 + 0 * 3 + 1] = true; // block (2, 1), r 0, c 1: query 4, key 4
        bits[2 * 6 + 1 * 3 + 1] = true; // block (2, 1), r 1: query 5, past M: ignored
        var e = mask.ElementMask(bits);
        var kept = Enumerable.Range(0, 5).SelectMany(i => Enumerable.Range(0, 7).Where(j => e.IsKept(i, j)).Select(j => (i, j))).ToArray();
        Assert.Equal([(0, 6), (1, 2), (4, 4)], kept);
        Assert.Throws<ArgumentException>(() => mask.ElementMask(new bool[17]));
        var shape = new AttentionShape(1, 1, 32);
        var other = CustomMask.Create([0, 5], [6], (_, _, _) => true);
        Assert.Throws<ArgumentException>(() => PrefillPlanner.PlanBlockSparse(mask, shape, 3, null, other));
    }

    [Fact]
    public void BlockSparseMask_Invalid_Throws()
    {
        Assert.Contains("outside [0, 2)", Assert.Throws<ArgumentException>(() => new BlockSparseMask([0, 1], [2], 4, 8, 4, 4)).Message);
        Assert.Contains("strictly increasing", Assert.Throws<ArgumentException>(() => new BlockSparseMask([0, 2], [1, 1], 4, 8, 4, 4)).Message);
        Assert.Contains("not monotone", Assert.Throws<ArgumentException>(() => new BlockSparseMask([0, 2, 1], [0, 1], 8, 8, 4, 4)).Message);
        Assert.Throws<ArgumentException>(() => new BlockSparseMask([0, 1, 1], [0], 4, 8, 4, 4));
    }

    [Fact]
    public void Plan_QoIndptrInvalid_Throws()
    {
        var table = new PageTable([0, 1], [0], [5], 16);
        var shape = new AttentionShape(2, 1, 64);
        Assert.Contains("not monotone", Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, -1], table, shape, 4)).Message);
        Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, 1, 2], table, shape, 4));
        Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, 1], table, shape, 4, new AttentionOptions { WindowLeft = -2 }));
    }
}
