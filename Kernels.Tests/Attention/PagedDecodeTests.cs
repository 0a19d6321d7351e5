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

public class PagedDecodeTests
{
    public sealed record DecodeCase(CacheSpec Cache, int Group, float SoftCap, int Window, bool ForceSplit)
    {
        public override string ToString() => $"{Cache} group={Group} cap={SoftCap} window={Window} split={ForceSplit}";
    }

    private static readonly (DType, KvScaleMode)[] Formats =
        [(DType.F32, KvScaleMode.None), (DType.F16, KvScaleMode.None), (DType.BF16, KvScaleMode.None),
         (DType.F8E4M3, KvScaleMode.None), (DType.F8E5M2, KvScaleMode.None), (DType.F8E4M3, KvScaleMode.PerHead),
         (DType.I8, KvScaleMode.PerToken), (DType.I8, KvScaleMode.PerHead), (DType.I4, KvScaleMode.None)];

    internal static Arbitrary<DecodeCase> Cases =>
        (from batch in Gen.Choose(1, 3)
         from lens in Gen.ArrayOf(Gen.OneOf(Gen.Elements(0, 1, 2, 15, 16, 17), Gen.Choose(0, 70)), batch)
         from page in Gen.Elements(1, 16, 5)
         from kvHeads in Gen.Elements(1, 2)
         from d in Gen.Elements(64, 128, 256, 32)
         from fmt in Gen.Elements(Formats)
         from layout in Gen.Elements(KvLayout.Nhd, KvLayout.Hnd)
         from grp in Gen.Elements(1, 4, 8, 20, 70)
         from cap in Gen.Elements(0f, 0f, 5f)
         from window in Gen.Elements(-1, -1, 0, 7)
         from split in Gen.Elements(false, true)
         from seed in Gen.Choose(0, int.MaxValue)
         select new DecodeCase(new CacheSpec(lens, page, kvHeads, d, fmt.Item1, layout, fmt.Item2, seed), grp, cap, window, split)).ToArbitrary();

    internal static void Check(DecodeCase c, KernelOptions options, bool quantizedQ = false, Func<int, float[]>? alibiFor = null, Func<int, float[]>? sinksFor = null,
        Func<int, RopeTable>? ropeFor = null)
    {
        var (cache, table) = Build(c.Cache);
        var shape = new AttentionShape(c.Cache.KvHeads * c.Group, c.Cache.KvHeads, c.Cache.HeadDim);
        var opts = new AttentionOptions { LogitsSoftCap = c.SoftCap, WindowLeft = c.Window, QuantizedQueryDot = quantizedQ, AlibiSlopes = alibiFor?.Invoke(shape.QoHeads),
            AttentionSinks = sinksFor?.Invoke(shape.QoHeads), Rope = ropeFor?.Invoke(shape.HeadDim) };
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts, fixedChunkPages: c.ForceSplit ? 2 : null);
        var rng = new Random(c.Cache.Seed + 1);
        int batch = table.BatchSize;
        float[] q = Queries(rng, batch, shape, 2f), qCopy = (float[])q.Clone();
        float[] expected = new float[q.Length], actual = new float[q.Length];
        float[] lseE = new float[batch * shape.QoHeads], lseA = new float[lseE.Length];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, opts, expected, lseE, mag);
        actual.AsSpan().Fill(float.NaN);
        PagedDecode.Run(plan, q, cache, actual, lseA, options);
        double eps = RopeFactor(opts) * LogitError(quantizedQ ? QueryQuantization.Dequantized(q, shape.HeadDim) : q, shape, plan.SmScale, GatherKeys(cache, table))
            + AlibiError(opts, c.Cache.SeqLens.DefaultIfEmpty(0).Max());
        AssertClose(expected, actual, mag, lseE, lseA, eps, c.Cache.SeqLens.DefaultIfEmpty(0).Max(),
            $"{c} {options.Isa} quantizedQ={quantizedQ} alibi={opts.AlibiSlopes is not null}{RopeText(opts)}");
        Assert.Equal(qCopy, q);
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_EachIsa_MatchesReferenceOnDequantizedCache(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(Cases, c => Check(c, options)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_QuantizedQueryDot_EachIsa_MatchesReferenceWithInt8Queries(IsaPath isa)
    {
        // int8 queries against int8/int4 caches: the oracle quantizes the queries the same way; dot products are exact.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var quantized = Cases.Generator.Where(c => c.Cache.DType is DType.I8 or DType.I4).ToArbitrary();
        Prop.ForAll(quantized, c => Check(c, options, quantizedQ: true)).QuickCheckThrowOnFailure();
    }

    /// <summary>Float-format caches (fp32, fp16, bf16) with 1–3 random ±Inf/NaN/overflowing values in live K or V rows.</summary>
    internal static Arbitrary<(DecodeCase Case, int Count)> NonFiniteCases =>
        (from c in Cases.Generator
         where c.Cache.DType is DType.F32 or DType.F16 or DType.BF16 or DType.F8E4M3 or DType.F8E5M2
         from count in Gen.Choose(1, 3)
         select (c, count)).ToArbitrary();

    /// <summary>Checks a case after <see cref="AttentionTestData.InjectNonFinite"/>, against the oracle's rule for non-finite logits and values.</summary>
    internal static void CheckNonFinite(DecodeCase c, int count, Action<DecodePlan, float[], PagedKvCache, float[], float[]> run, string what,
        Func<int, float[]>? alibiFor = null, Func<int, float[]>? sinksFor = null, Func<int, RopeTable>? ropeFor = null)
    {
        var (cache, table) = Build(c.Cache);
        var rng = new Random(c.Cache.Seed + 2);
        string injected = InjectNonFinite(cache, table, rng, count);
        var shape = new AttentionShape(c.Cache.KvHeads * c.Group, c.Cache.KvHeads, c.Cache.HeadDim);
        var opts = new AttentionOptions { LogitsSoftCap = c.SoftCap, WindowLeft = c.Window, AlibiSlopes = alibiFor?.Invoke(shape.QoHeads),
            AttentionSinks = sinksFor?.Invoke(shape.QoHeads), Rope = ropeFor?.Invoke(shape.HeadDim) };
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts, fixedChunkPages: c.ForceSplit ? 2 : null);
        int batch = table.BatchSize;
        float[] q = Queries(rng, batch, shape, 2f);
        float[] expected = new float[q.Length], actual = new float[q.Length];
        float[] lseE = new float[batch * shape.QoHeads], lseA = new float[lseE.Length];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, opts, expected, lseE, mag);
        actual.AsSpan().Fill(-12345f);
        run(plan, q, cache, actual, lseA);
        double eps = RopeFactor(opts) * LogitError(q, shape, plan.SmScale, FiniteKeys(cache, table)) + AlibiError(opts, c.Cache.SeqLens.DefaultIfEmpty(0).Max());
        AssertClose(expected, actual, mag, lseE, lseA, eps, c.Cache.SeqLens.DefaultIfEmpty(0).Max(), $"{c} {what}{RopeText(opts)}; injected {injected}");
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_NonFiniteKeysAndValues_EachIsa_FollowTheOraclesRule(IsaPath isa)
    {
        // ±Inf and NaN in K rows (logits ±∞ or NaN) and V rows, anywhere in live tokens, with and without split-KV:
        // every path follows AttentionReference's IEEE rule (−∞ logits weigh 0 yet multiply their V rows; NaN/+∞ → NaN).
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(NonFiniteCases, x => CheckNonFinite(x.Case, x.Count, (plan, q, cache, o, lse) => PagedDecode.Run(plan, q, cache, o, lse, options), isa.ToString()))
            .QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_PerTokenScales_ManyKvHeads_EachIsa_MatchesReference(IsaPath isa)
    {
        // Per-token scales and int4 zero points are read as whole vectors when an item covers every kv head of an NHD pool
        // (a [16 tokens][heads] block, transposed in registers for 1, 2, 4 and 8 heads) or from HND's per-head runs, for tiles
        // the page holds whole; partial tiles and other head counts read them one by one. Small groups keep all heads in one item.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases =
            (from lens in Gen.ArrayOf(Gen.OneOf(Gen.Elements(1, 15, 16, 17, 33), Gen.Choose(0, 80)), 2)
             from page in Gen.Elements(16, 32, 24, 5, 1)
             from kvHeads in Gen.Elements(3, 4, 8, 16)
             from fmt in Gen.Elements((DType.I8, KvScaleMode.PerToken), (DType.I4, KvScaleMode.None))
             from layout in Gen.Elements(KvLayout.Nhd, KvLayout.Hnd)
             from grp in Gen.Elements(1, 2, 4)
             from window in Gen.Elements(-1, -1, 7)
             from split in Gen.Elements(false, true)
             from seed in Gen.Choose(0, int.MaxValue)
             select new DecodeCase(new CacheSpec(lens, page, kvHeads, 64, fmt.Item1, layout, fmt.Item2, seed), grp, 0f, window, split)).ToArbitrary();
        Prop.ForAll(cases, c => Check(c, options, quantizedQ: c.Cache.Seed % 2 == 0)).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Run_LongSequencesSplitKv_MatchesReference()
    {
        // 3 sequences up to 1500 tokens: the default rule splits the longest into chunks merged with AttentionState.
        var spec = new CacheSpec([1500, 3, 700], 16, 2, 128, DType.F16, KvLayout.Nhd, KvScaleMode.None, 11);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(8, 2, 128);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace());
        Assert.True(plan.SplitCount(0) > 1, $"expected a split; got {plan.SplitCount(0)}");
        Assert.True(plan.WorkspaceFloats > 0);
        var q = Queries(new Random(3), 3, shape);
        float[] e = new float[q.Length], a = new float[q.Length], le = new float[24], la = new float[24];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        PagedDecode.Run(plan, q, cache, a, la);
        AssertClose(e, a, mag, le, la, LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 1500, "split");
        // Plan reuse across "layers": a second cache with the same table gives its own answer.
        PagedDecode.Run(plan, q, cache, a, default);
        AssertClose(e, a, mag, le, la, LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 1500, "rerun");
    }

    [Fact]
    public void Run_SingleThreaded_DoesNotAllocate()
    {
        var spec = new CacheSpec([300, 40], 16, 2, 128, DType.I4, KvLayout.Nhd, KvScaleMode.None, 2);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(8, 2, 128);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), fixedChunkPages: 4);
        var q = Queries(new Random(1), 2, shape);
        float[] o = new float[q.Length], lse = new float[16];
        var options = new KernelOptions { MaxDegreeOfParallelism = 1 };
        PagedDecode.Run(plan, q, cache, o, lse, options); // warm-up: JIT and the thread's scratch
        long before = GC.GetAllocatedBytesForCurrentThread();
        PagedDecode.Run(plan, q, cache, o, lse, options);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void Run_QuantizationError_WithinStatedBound()
    {
        // int8/int4 against the reference on the *original* fp32 values: the quantization error alone.
        // Bound: |Δo| ≤ max|Δv| + 2·max|Δlogit|·max|v| with Δv ≤ s/2 per element and Δlogit ≤ sm_scale·Σ|q|·s_k/2.
        foreach (var (dtype, mode, step) in new[] { (DType.I8, KvScaleMode.PerToken, 1 / 127.0), (DType.I4, KvScaleMode.None, 2 / 15.0) })
        {
            var spec = new CacheSpec([200], 16, 1, 64, dtype, KvLayout.Nhd, mode, 5);
            var (cache, table) = Build(spec);
            var exactSpec = spec with { DType = DType.F32, Mode = KvScaleMode.None };
            var (exact, exactTable) = Build(exactSpec);
            var shape = new AttentionShape(4, 1, 64);
            var q = Queries(new Random(9), 1, shape);
            float[] e = new float[q.Length], a = new float[q.Length], le = new float[4], la = new float[4];
            AttentionReference.Decode(q, exact, exactTable, shape, AttentionOptions.Default, e, le);
            var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace());
            PagedDecode.Run(plan, q, cache, a, la);
            double qsum = 0;
            for (int i = 0; i < 64; i++) qsum = Math.Max(qsum, Math.Abs(q[i]));
            double dv = step / 2 * 1.0001, dlogit = plan.SmScale * qsum * 64 * step / 2;
            double bound = dv + 2 * dlogit;
            for (int i = 0; i < e.Length; i++)
                Assert.True(Math.Abs(e[i] - a[i]) <= bound, $"{dtype}: |{e[i]} − {a[i]}| > {bound}");
        }
    }

    [Fact]
    public void Plan_InvalidTables_ThrowBeforeRunning()
    {
        var shape = new AttentionShape(4, 2, 64);
        var ws = new AttentionWorkspace();
        var table = new PageTable([0, 2], [0, 9], [3], 16);
        var ex = Assert.Throws<ArgumentException>(() => DecodePlanner.Plan(table, shape, 8, ws));
        Assert.Contains("past the pool of 8 pages", ex.Message);
        Assert.Contains("not monotone", Assert.Throws<ArgumentException>(() => new PageTable([0, 2, 1], [0, 1], [1, 1], 16)).Message);
        Assert.Contains("lastPageLen[0] = 17", Assert.Throws<ArgumentException>(() => new PageTable([0, 1], [0], [17], 16)).Message);
        Assert.Contains("lastPageLen[0] = 0", Assert.Throws<ArgumentException>(() => new PageTable([0, 1], [0], [0], 16)).Message);
        Assert.Contains("indices has 1 entries", Assert.Throws<ArgumentException>(() => new PageTable([0, 2], [0], [1], 16)).Message);
        Assert.Contains("negative", Assert.Throws<ArgumentException>(() => new PageTable([0, 1], [-1], [1], 16)).Message);
        Assert.Contains("multiple of kv heads", Assert.Throws<ArgumentException>(() => new AttentionShape(6, 4, 64)).Message);
    }

    [Fact]
    public void Plan_TargetItems_SetsTheSplit()
    {
        // One sequence of 2048 pages (32k tokens, page 16): 64 items by default, 16 when asked; the minimum chunk (256 tokens)
        // still bounds the split; a target below 1 is rejected.
        var shape = new AttentionShape(32, 8, 128);
        var table = new PageTable([0, 2048], Enumerable.Range(0, 2048).ToArray(), [16], 16);
        Assert.Equal(32, DecodePlanner.Plan(table, shape, 2048, new AttentionWorkspace()).ChunkPages);
        var plan = DecodePlanner.Plan(table, shape, 2048, new AttentionWorkspace(), targetItems: 16);
        Assert.Equal(128, plan.ChunkPages);
        Assert.Equal(16, plan.WorkItemCount);
        Assert.Equal(16, DecodePlanner.Plan(table, shape, 2048, new AttentionWorkspace(), targetItems: 100_000).ChunkPages);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(table, shape, 2048, new AttentionWorkspace(), targetItems: 0));
        Assert.Contains("targetItems must be ≥ 1; got 0", ex.Message);
    }

    [Fact]
    public void Run_ShapesNotMatchingPlan_ThrowArgument()
    {
        var spec = new CacheSpec([20], 16, 2, 64, DType.F32, KvLayout.Nhd, KvScaleMode.None, 1);
        var (cache, table) = Build(spec);
        var plan = DecodePlanner.Plan(table, new AttentionShape(4, 2, 64), cache.NumPages, new AttentionWorkspace());
        var q = new float[4 * 64];
        var o = new float[4 * 64];
        Assert.Throws<ArgumentException>(() => PagedDecode.Run(plan, new float[5], cache, o, default));
        Assert.Throws<ArgumentException>(() => PagedDecode.Run(plan, q, cache, new float[3], default));
        Assert.Throws<ArgumentException>(() => PagedDecode.Run(plan, q, cache, o, new float[3]));
        var other = new PagedKvCache(cache.NumPages, 8, 2, 64, DType.F32);
        Assert.Contains("page_size 8", Assert.Throws<ArgumentException>(() => PagedDecode.Run(plan, q, other, o, default)).Message);
        var small = new PagedKvCache(1, 16, 2, 64, DType.F32);
        Assert.Throws<ArgumentException>(() => PagedDecode.Run(plan, q, small, o, default));
        var odd = new AttentionShape(2, 1, 48);
        var oddCache = new PagedKvCache(2, 16, 1, 48, DType.F32);
        var oddPlan = DecodePlanner.Plan(new PageTable([0, 1], [0], [3], 16), odd, 2, new AttentionWorkspace());
        Assert.Throws<NotSupportedException>(() => PagedDecode.Run(oddPlan, new float[96], oddCache, new float[96], default));
    }
}
