using FsCheck;
using FsCheck.Fluent;
using ILGPU;
using ILGPU.Runtime;
using Kernels.Attention;
using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu;
using Kernels.Gpu;
using Kernels.Tests.Gpu;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

/// <summary>The ILGPU kernels on the CPU accelerator (tiny shapes: one OS thread per GPU thread), and the CPU backend through
/// the same <see cref="IPagedAttentionOps"/> interface.</summary>
[Collection(GpuCollection.Name)]
public class PagedAttentionGpuTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    public static TheoryData<DType, KvScaleMode, KvLayout, int, bool> Cases => new()
    {
        { DType.F32, KvScaleMode.None, KvLayout.Nhd, 16, false },
        { DType.F16, KvScaleMode.None, KvLayout.Hnd, 1, true },
        { DType.BF16, KvScaleMode.None, KvLayout.Nhd, 5, true },
        { DType.I8, KvScaleMode.PerToken, KvLayout.Nhd, 16, true },
        { DType.I8, KvScaleMode.PerHead, KvLayout.Hnd, 4, false },
        { DType.I4, KvScaleMode.None, KvLayout.Nhd, 3, true },
        { DType.F8E4M3, KvScaleMode.None, KvLayout.Nhd, 16, true },
        { DType.F8E5M2, KvScaleMode.None, KvLayout.Hnd, 5, false },
        { DType.F8E4M3, KvScaleMode.PerHead, KvLayout.Hnd, 4, true },
    };

    private void RunBoth(AttentionPlan plan, float[] q, PagedKvCache cache, int rows, int qoHeads, int d, float[] expected, float[] lseE, double[] mag, double eps, int maxLen, string what)
    {
        foreach (IPagedAttentionOps ops in new IPagedAttentionOps[] { _gpu, new CpuBackend() })
        {
            var backend = (IKernelBackend)ops;
            using var kv = ops.UploadKvCache(cache);
            using DeviceTensor<float> qt = backend is GpuBackend g ? g.Upload(q, rows, qoHeads, d) : ((CpuBackend)backend).Upload(q, rows, qoHeads, d);
            using var ot = backend.Allocate<float>(rows, qoHeads, d);
            using var lt = backend.Allocate<float>(rows, qoHeads);
            ops.Attention(plan, qt, kv, ot, lt);
            backend.Synchronize();
            AssertClose(expected, ot.ToArray(), mag, lseE, lt.ToArray(), eps, maxLen, $"{what} {backend.Name}");
        }
    }

    [Theory]
    [InlineData(DType.I8, KvScaleMode.PerToken)]
    [InlineData(DType.I4, KvScaleMode.None)]
    public void QuantizedQueryDot_MatchesReference(DType dtype, KvScaleMode mode)
    {
        // The oracle applies the same int8 query quantization, so both backends must match it to fp32 rounding.
        var spec = new CacheSpec([0, 9, 21], 4, 2, 64, dtype, KvLayout.Nhd, mode, 9);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(4, 2, 64);
        var opts = new AttentionOptions { QuantizedQueryDot = true };
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts, fixedChunkPages: 2);
        var q = Queries(new Random(10), 3, shape, 2f);
        float[] e = new float[q.Length], le = new float[12];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, opts, e, le, mag);
        var qd = QueryQuantization.Dequantized(q, 64);
        RunBoth(plan, q, cache, 3, 4, 64, e, le, mag, LogitError(qd, shape, plan.SmScale, GatherKeys(cache, table)), 21, $"QuantizedQueryDot {dtype}");
        // And the option changed the answer: without it the outputs differ.
        float[] plain = new float[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, plain, default);
        Assert.NotEqual(plain, e);
    }

    [Fact]
    public void DequantizeQueriesKernel_IsBitIdenticalToTheReference()
    {
        // Rows of 64: random values, ties (x/s = k + 0.5 exactly), a zero row, a row with NaN, one with +Inf, one with
        // −Inf, negative values rounding to −0, and subnormals.
        const int d = 64;
        var rng = new Random(12);
        var rows = new List<float[]>();
        for (int r = 0; r < 6; r++) rows.Add(Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray());
        var ties = new float[d];
        ties[0] = 127f; // s = 1: every element is its own x/s
        for (int i = 1; i < d; i++) ties[i] = (i % 2 == 0 ? -1 : 1) * (i / 2 + 0.5f);
        rows.Add(ties);
        rows.Add(new float[d]);
        var withNaN = (float[])rows[0].Clone();
        withNaN[5] = float.NaN;
        rows.Add(withNaN);
        var withInf = (float[])rows[1].Clone();
        withInf[63] = float.PositiveInfinity;
        rows.Add(withInf);
        var withNegInf = (float[])rows[2].Clone();
        withNegInf[0] = float.NegativeInfinity;
        rows.Add(withNegInf);
        var small = Enumerable.Range(0, d).Select(i => i == 0 ? 1f : -0.001f * i).ToArray();
        rows.Add(small);
        rows.Add(Enumerable.Range(0, d).Select(i => (i % 3 - 1) * 1e-40f).ToArray()); // subnormals only
        float[] q = rows.SelectMany(x => x).ToArray();
        float[] expected = QueryQuantization.Dequantized(q, d);

        var acc = _gpu.Accelerator;
        var kernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(Kernels.Gpu.Attention.PagedAttentionKernels.DequantizeQueries);
        using var src = acc.Allocate1D(q);
        using var dst = acc.Allocate1D<float>(q.Length);
        kernel(rows.Count, src.View, dst.View, d);
        acc.Synchronize();
        float[] got = dst.GetAsArray1D();
        for (int i = 0; i < q.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(got[i]),
                $"row {i / d} element {i % d}: reference {expected[i]:R}, kernel {got[i]:R}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Decode_MatchesReference(DType dtype, KvScaleMode mode, KvLayout layout, int pageSize, bool split)
    {
        var spec = new CacheSpec([0, 1, 23], pageSize, 2, 64, dtype, layout, mode, 3);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(4, 2, 64);
        var opts = new AttentionOptions { LogitsSoftCap = split ? 0 : 4f };
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts, fixedChunkPages: split ? 2 : null);
        var q = Queries(new Random(5), 3, shape);
        float[] e = new float[q.Length], le = new float[12];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, opts, e, le, mag);
        RunBoth(plan, q, cache, 3, 4, 64, e, le, mag, LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 23, $"decode {dtype} {mode} {layout} page {pageSize}");
    }

    [Theory]
    [InlineData(10, 2, 128, 64, DType.F16, KvScaleMode.None)]   // 5 query heads per kv head: groups of 4 + 1; 64-token pages, 32-token chunks
    [InlineData(3, 1, 256, 16, DType.I4, KvScaleMode.None)]     // head_dim 256: 16-token chunks; 3 heads per group
    [InlineData(2, 2, 32, 7, DType.I8, KvScaleMode.PerToken)]  // MHA (one head per group), pages of 7 straddling chunks
    public void Decode_GroupSizesAndHeadDims_MatchReference(int qoHeads, int kvHeads, int d, int pageSize, DType dtype, KvScaleMode mode)
    {
        var spec = new CacheSpec([0, 33, 70], pageSize, kvHeads, d, dtype, KvLayout.Nhd, mode, 13);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(qoHeads, kvHeads, d);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), AttentionOptions.Default, fixedChunkPages: pageSize == 64 ? 1 : 3);
        var q = Queries(new Random(14), 3, shape);
        float[] e = new float[q.Length], le = new float[3 * qoHeads];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        RunBoth(plan, q, cache, 3, qoHeads, d, e, le, mag, LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 70, $"decode {qoHeads}/{kvHeads} d={d} page {pageSize}");
    }

    [Fact]
    public void Decode_F16InfAndNaN_PropagateAsInReference()
    {
        // +Inf, an fp16 overflow and NaN in a live page's V rows: both backends propagate them as the oracle does.
        var spec = new CacheSpec([40], 16, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 15);
        var (cache, table) = Build(spec);
        var (k, v) = RandomRows(16, 128);
        v[3] = float.PositiveInfinity; // head 0, dim 3
        v[75] = float.NaN;             // head 1, dim 11
        v[70] = 1e6f;                  // head 1, dim 6: overflows fp16 to +Inf
        cache.WriteToken(table.Indices[1], 5, k, v); // token 21
        var shape = new AttentionShape(8, 2, 64);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), AttentionOptions.Default, fixedChunkPages: 2);
        var q = Queries(new Random(17), 1, shape);
        float[] e = new float[q.Length], le = new float[8];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        Assert.Contains(e, float.IsNaN);
        Assert.Contains(e, float.IsPositiveInfinity);
        Assert.Contains(e, x => !float.IsNaN(x));
        RunBoth(plan, q, cache, 1, 8, 64, e, le, mag, LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 40, "fp16 Inf/NaN");
    }

    [Fact]
    public void Decode_F16InfInKeys_FollowsTheOraclesRule()
    {
        // An fp16 overflow in a K row (token 21, dim 20 of kv head 0) with V = +Inf at dim 3 of the same token: query head 0
        // (q[20] > 0) has a +∞ logit, so NaN output and lse; head 1 (q[20] < 0) a −∞ logit, weight 0 but 0·Inf = NaN at
        // dim 3 only; the other kv head is untouched. Split over 2-page chunks: the NaN partial must survive the merge.
        var spec = new CacheSpec([40], 16, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 18);
        var (cache, table) = Build(spec);
        var (k, v) = RandomRows(19, 128);
        k[20] = 1e6f;
        v[3] = float.PositiveInfinity;
        cache.WriteToken(table.Indices[1], 5, k, v);
        var shape = new AttentionShape(8, 2, 64);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), AttentionOptions.Default, fixedChunkPages: 2);
        var q = Queries(new Random(20), 1, shape);
        q[20] = 0.5f;
        q[64 + 20] = -0.5f;
        float[] e = new float[q.Length], le = new float[8];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        Assert.True(float.IsNaN(le[0]) && e.Take(64).All(float.IsNaN));
        Assert.True(float.IsFinite(le[1]) && float.IsNaN(e[64 + 3]) && float.IsFinite(e[64 + 4]));
        Assert.True(e.Skip(4 * 64).All(float.IsFinite));
        var finiteKeys = FiniteKeys(cache, table);
        RunBoth(plan, q, cache, 1, 8, 64, e, le, mag, LogitError(q, shape, plan.SmScale, finiteKeys), 40, "fp16 Inf in K");
    }

    [Fact]
    public void Decode_NonFiniteKeysAndValues_FollowTheOraclesRule()
    {
        // The CPU property PagedDecodeTests.Run_NonFiniteKeysAndValues_EachIsa_FollowTheOraclesRule, on the GPU kernel
        // (fewer, smaller cases: the CPU accelerator runs one OS thread per GPU thread).
        var small = PagedDecodeTests.NonFiniteCases.Generator
            .Where(x => x.Case.Group <= 8 && x.Case.Cache.SeqLens.Sum() <= 90)
            .ToArbitrary();
        Prop.ForAll(small, x =>
        {
            PagedDecodeTests.CheckNonFinite(x.Case, x.Count, RunGpu, "gpu");
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(25));
    }

    [Fact]
    public void Prefill_CausalWindow_MatchesReference()
    {
        var spec = new CacheSpec([7, 12], 4, 1, 32, DType.F16, KvLayout.Nhd, KvScaleMode.None, 8);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(2, 1, 32);
        var opts = new AttentionOptions { Causal = true, WindowLeft = 3 };
        int[] qo = [0, 3, 8];
        var plan = PrefillPlanner.Plan(qo, table, shape, cache.NumPages, opts);
        var q = Queries(new Random(6), 8, shape);
        float[] e = new float[q.Length], le = new float[16];
        double[] mag = new double[q.Length];
        AttentionReference.Prefill(qo, q, cache, table, shape, opts, e, le, mag);
        RunBoth(plan, q, cache, 8, 2, 32, e, le, mag, LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 12, "prefill");
    }

    [Theory]
    [InlineData(DType.F16, false, 64, false)] // NeoX pairs, decode with split-KV
    [InlineData(DType.I4, true, 32, false)]   // GPT-J pairs over half of head_dim
    [InlineData(DType.F32, false, 32, true)]  // causal ragged prefill with a window, partial rotary
    [InlineData(DType.BF16, true, 64, true)]
    public void Rope_InKernel_MatchesReference(DType dtype, bool interleaved, int rotary, bool prefill)
    {
        var spec = new CacheSpec([0, 1, 23], 5, 2, 64, dtype, KvLayout.Nhd, KvScaleMode.None, 4);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(4, 2, 64);
        var rope = new Kernels.Attention.Positional.RopeTable(new Kernels.Attention.Positional.RopeOptions { Interleaved = interleaved, RotaryDim = rotary }, 64, 30);
        var opts = new AttentionOptions { Rope = rope, WindowLeft = prefill ? 9 : -1 };
        int[] qo = prefill ? [0, 0, 1, 7] : [0, 1, 2, 3];
        AttentionPlan plan = prefill
            ? PrefillPlanner.Plan(qo, table, shape, cache.NumPages, opts)
            : DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts, fixedChunkPages: 2);
        int rows = qo[^1];
        var q = Queries(new Random(9), rows, shape, 2f);
        float[] e = new float[q.Length], le = new float[rows * 4];
        double[] mag = new double[q.Length];
        AttentionReference.Prefill(qo, q, cache, table, shape, opts, e, le, mag);
        RunBoth(plan, q, cache, rows, 4, 64, e, le, mag, RopeFactor(opts) * LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 23,
            $"rope {dtype} interleaved={interleaved} rotary={rotary} prefill={prefill}");
    }

    [Fact]
    public void Rope_InKernel_Cascade_MatchesReference()
    {
        // Levels count positions from their own start; RoPE depends on distances only (InKernelRopeTests).
        var c = new CascadeTests.CascadeCase(new CacheSpec([19, 3, 7, 0], 4, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 12), [3], 2, 0f, 2);
        var (cache, prefixes, suffixes, groupIndptr) = CascadeTests.BuildCascade(c);
        var shape = new AttentionShape(4, 2, 64);
        var rope = new Kernels.Attention.Positional.RopeTable(new Kernels.Attention.Positional.RopeOptions { Interleaved = true }, 64, 32);
        var opts = new AttentionOptions { Rope = rope };
        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, c.TargetItems);
        var (q, e, le, mag, eps, maxLen) = CascadeTests.Oracle(c, cache, prefixes, suffixes, groupIndptr, shape, opts);
        RunBoth(plan, q, cache, 3, 4, 64, e, le, mag, eps, maxLen, "rope cascade"); // Oracle's eps carries RopeFactor
    }

    private void RunGpu(AttentionPlan plan, float[] q, PagedKvCache cache, float[] o, float[] lse) => Run(_gpu, plan, q, cache, o, lse);

    /// <summary>Runs a plan on a GPU backend into the oracle check's output and lse arrays.</summary>
    internal static void Run(GpuBackend gpu, AttentionPlan plan, float[] q, PagedKvCache cache, float[] o, float[] lse)
    {
        int rows = plan.QueryRows, hq = plan.Shape.QoHeads, d = plan.Shape.HeadDim;
        using var kv = gpu.UploadKvCache(cache);
        using var qt = gpu.Upload(q, rows, hq, d);
        using var ot = gpu.Allocate<float>(rows, hq, d);
        using var lt = gpu.Allocate<float>(rows, hq);
        gpu.Attention(plan, qt, kv, ot, lt);
        gpu.Synchronize();
        ot.ToArray().CopyTo(o, 0);
        lt.ToArray().CopyTo(lse, 0);
    }

    /// <summary>The prefill property's cases at GPU-test size (the CPU accelerator runs one OS thread per GPU thread).</summary>
    private static Gen<PagedPrefillTests.PrefillCase> SmallPrefillCases =>
        from c in PagedPrefillTests.Cases.Generator where c.Cache.SeqLens.Sum() <= 60 && c.QoLens.Sum() <= 24 select FewChunks(c);

    /// <summary>Half of the drawn forced splits, of two chunks per tile: chunks of 1 page over 60 one-token pages would
    /// launch a thread group per page and kv head, each of 32 OS threads per warp on the CPU accelerator.</summary>
    internal static PagedPrefillTests.PrefillCase FewChunks(PagedPrefillTests.PrefillCase c)
    {
        if (c.SplitPages <= 0) return c;
        if (c.Cache.Seed % 2 == 0) return c with { SplitPages = 0 };
        int pages = c.Cache.SeqLens.DefaultIfEmpty(0).Max(l => (l + c.Cache.PageSize - 1) / c.Cache.PageSize);
        return c with { SplitPages = Math.Max(c.SplitPages, (pages + 1) / 2) };
    }

    [Fact]
    public void Prefill_RandomCases_MatchReference()
    {
        // The CPU property PagedPrefillTests.Run_EachIsa_MatchesReference (ragged rows, GQA, causal, windows, soft cap, every
        // format and layout) with up to 3 Inf/NaN values injected into K/V, on the GPU kernel's row × head tiles: units of
        // up to 16 (row, head) pairs whose rows see different key ranges, a partial last tile, items of more rows than a
        // tile. Fewer, smaller cases: the CPU accelerator runs one OS thread per GPU thread.
        var small = (from c in SmallPrefillCases
                     from n in Gen.Elements(0, 0, 2)
                     select (c, n)).ToArbitrary();
        Prop.ForAll(small, x => PagedPrefillTests.Check(x.c, RunGpu, "gpu", nonFinite: PagedPrefillTests.NonFiniteFor(x.c, x.n)))
            .Check(Config.QuickThrowOnFailure.WithMaxTest(20));
    }

    [Fact]
    public void Prefill_CustomMask_RandomCases_MatchReference()
    {
        // CustomMaskTests' property on the GPU kernel: random and token-tree masks, rows of one tile keeping different keys
        // (the staged union is taken row by row), Inf/NaN injected into keys the mask may exclude.
        var small = (from x in CustomMaskTests.Cases.Generator
                     where x.Case.Cache.SeqLens.Sum() <= 60 && x.Case.QoLens.Sum() <= 24
                     from n in Gen.Elements(0, 2)
                     select (Case: FewChunks(x.Case), x.Mask, n)).ToArbitrary();
        Prop.ForAll(small, x => PagedPrefillTests.Check(x.Case, RunGpu, "gpu", nonFinite: PagedPrefillTests.NonFiniteFor(x.Case, x.n),
            maskOf: x.Mask.Make)).Check(Config.QuickThrowOnFailure.WithMaxTest(15));
    }

    [Fact]
    public void Alibi_RandomCases_MatchReference()
    {
        // AlibiTests' properties on the GPU kernel: prefill tiles (rows at different query positions) and decode with split-KV.
        var prefill = (from c in SmallPrefillCases
                       from s in AlibiTests.Slopes
                       select (c, s)).ToArbitrary();
        Prop.ForAll(prefill, x => PagedPrefillTests.Check(x.c, RunGpu, "gpu", alibiFor: x.s.For)).Check(Config.QuickThrowOnFailure.WithMaxTest(10));
        var decode = (from c in PagedDecodeTests.Cases.Generator
                      where c.Cache.SeqLens.Sum() <= 80
                      from s in AlibiTests.Slopes
                      select (c, s)).ToArbitrary();
        Prop.ForAll(decode, x => PagedDecodeTests.CheckNonFinite(x.c, 0, RunGpu, "gpu", x.s.For)).Check(Config.QuickThrowOnFailure.WithMaxTest(10));
    }

    /// <summary>A three-level cascade with attention sinks (11 sequences, 8 query heads over 2 kv heads, head_dim 64, fp16),
    /// its plan and the oracle's answer.</summary>
    private static (PagedKvCache Cache, CascadePlan Plan, (float[] Q, float[] Expected, float[] LseE, double[] Mag, double Eps, int MaxLen) Oracle) SinkCascade()
    {
        var mc = new CascadeTests.MultiLevelCase(new CacheSpec([20, 9, 17, 0, 5, 11, 3, 7, 0, 12, 4], 4, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 47),
            [[0, 5], [0, 2, 5], [0, 1, 3, 5]], 4);
        var (cache, levels, suffixes) = CascadeTests.BuildMultiLevel(mc);
        var shape = new AttentionShape(8, 2, 64);
        var opts = new AttentionOptions { AttentionSinks = [0f, 1f, 2f, 3f, -1f, -2f, 5f, 0.5f] };
        var plan = CascadePlanner.Plan(levels, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, targetItems: 64);
        return (cache, plan, CascadeTests.MultiLevelOracle(mc, cache, levels, suffixes, shape, opts));
    }

    [Fact]
    public void AttentionSinks_MatchReference_WithAndWithoutLse()
    {
        // Decode (split), prefill and a cascade with sinks on the GPU kernel; without an lse buffer the backends use scratch.
        var decode = (from c in PagedDecodeTests.Cases.Generator where c.Cache.SeqLens.Sum() <= 80 from s in AttentionSinkTests.Sinks select (c, s)).ToArbitrary();
        Prop.ForAll(decode, x => PagedDecodeTests.CheckNonFinite(x.c, 0, RunGpu, "gpu", sinksFor: x.s)).Check(Config.QuickThrowOnFailure.WithMaxTest(8));
        var prefill = (from c in SmallPrefillCases from s in AttentionSinkTests.Sinks select (c, s)).ToArbitrary();
        Prop.ForAll(prefill, x => PagedPrefillTests.Check(x.c, RunGpu, "gpu", sinksFor: x.s)).Check(Config.QuickThrowOnFailure.WithMaxTest(8));

        var (cache, plan, (q, e, le, mag, eps, maxLen)) = SinkCascade();
        RunBoth(plan, q, cache, 5, 8, 64, e, le, mag, eps, maxLen, "three-level cascade with sinks");

        // No lse buffer: the GPU backend keeps the rows' lse in scratch for the sinks; outputs equal the run with one.
        using var kv = _gpu.UploadKvCache(cache);
        using var qt = _gpu.Upload(q, 5, 8, 64);
        using var o1 = _gpu.Allocate<float>(5, 8, 64);
        using var o2 = _gpu.Allocate<float>(5, 8, 64);
        using var l1 = _gpu.Allocate<float>(5, 8);
        _gpu.Attention(plan, qt, kv, o1, l1);
        _gpu.Attention(plan, qt, kv, o2, null);
        _gpu.Synchronize();
        Assert.Equal(o1.ToArray(), o2.ToArray());
    }

    [Theory]
    [InlineData(256, 4, 9, -1)] // head_dim 256: 8 pairs per tile (2 rows × 4 heads), 16-token chunks
    [InlineData(64, 8, 5, 6)]   // 8 query heads per kv head: 2 rows × 8 heads per tile, a sliding window
    [InlineData(32, 1, 37, -1)] // MHA: 16 rows per tile, a partial last tile of 5 rows
    public void Prefill_TileShapes_MatchReference(int d, int group, int qoLen, int window)
    {
        var c = new PagedPrefillTests.PrefillCase(new CacheSpec([40, 3], 16, 1, d, DType.F16, KvLayout.Nhd, KvScaleMode.None, 33 + d), [qoLen, 2], group, true, window, 0f);
        PagedPrefillTests.Check(c, RunGpu, "gpu", nonFinite: 2);
    }

    [Theory]
    [InlineData(DType.F16, KvScaleMode.None, KvLayout.Nhd, 4, 1)]   // the suffix level split into chunks
    [InlineData(DType.I4, KvScaleMode.None, KvLayout.Hnd, 3, 64)]
    [InlineData(DType.I8, KvScaleMode.PerToken, KvLayout.Nhd, 1, 64)]
    public void Cascade_MatchesReference(DType dtype, KvScaleMode mode, KvLayout layout, int pageSize, int targetItems)
    {
        // Two groups (3 sequences on a 9-token prefix, 1 on an empty one), then a group with no sequence; suffixes of 0–11 tokens.
        var c = new CascadeTests.CascadeCase(new CacheSpec([9, 0, 5, 11, 0, 7, 1], pageSize, 2, 64, dtype, layout, mode, 21), [3, 1, 0], 2, 0, targetItems);
        var (cache, prefixes, suffixes, groupIndptr) = CascadeTests.BuildCascade(c);
        var shape = new AttentionShape(4, 2, 64);
        var opts = AttentionOptions.Default;
        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, targetItems);
        var (q, e, le, mag, eps, maxLen) = CascadeTests.Oracle(c, cache, prefixes, suffixes, groupIndptr, shape, opts);
        RunBoth(plan, q, cache, 4, 4, 64, e, le, mag, eps, maxLen, $"cascade {dtype} {layout} page {pageSize}");
    }

    [Fact]
    public void Prefill_SplitKv_MatchesReference()
    {
        // Tree verification on a 300-token prompt (one kv head: 2 items unsplit, so the planner's rule cuts the prompt into
        // 16-page chunks) and forced 2-page chunks under a window: multi-row items write row r to their slot + r and the
        // merge kernel reads each row's chunks a tile's rows apart.
        var c = new PagedPrefillTests.PrefillCase(new CacheSpec([300, 70], 16, 1, 32, DType.F16, KvLayout.Nhd, KvScaleMode.None, 7), [3, 2], 2, true, -1, 0f,
            SplitPages: -1);
        PagedPrefillTests.Check(c, RunGpu, "gpu rule split", maskOf: new CustomMaskTests.MaskSpec(-1, 3).Make);
        PagedPrefillTests.Check(c with { SplitPages = 2, Window = 40 }, RunGpu, "gpu forced split");
        // One-row requests (masked decode steps) planned with a workspace: items of both kv heads, split by the rule.
        var oneRow = new PagedPrefillTests.PrefillCase(new CacheSpec([300, 40], 16, 2, 32, DType.BF16, KvLayout.Nhd, KvScaleMode.None, 8), [1, 1], 2, true, -1, 0f,
            SplitPages: -1);
        PagedPrefillTests.Check(oneRow, RunGpu, "gpu one-row items", maskOf: new CustomMaskTests.MaskSpec(50, 5).Make);
    }

    [Fact]
    public void Cascade_LongSharedPrompt_SplitLevel_MatchesReference()
    {
        // 3 sequences on a 300-token shared prompt: the shared level is split into chunks and merged before the suffix level.
        var c = new CascadeTests.CascadeCase(new CacheSpec([300, 4, 9, 1], 16, 1, 32, DType.BF16, KvLayout.Nhd, KvScaleMode.None, 17), [3], 2, 0, 64);
        var (cache, prefixes, suffixes, groupIndptr) = CascadeTests.BuildCascade(c);
        var shape = new AttentionShape(2, 1, 32);
        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace(), AttentionOptions.Default, 64);
        Assert.True(plan.Prefix.PartialSlots > 0);
        var (q, e, le, mag, eps, maxLen) = CascadeTests.Oracle(c, cache, prefixes, suffixes, groupIndptr, shape, AttentionOptions.Default);
        RunBoth(plan, q, cache, 3, 2, 32, e, le, mag, eps, maxLen, "cascade with a split shared level");
    }

    [Theory]
    [InlineData(7, false)]
    [InlineData(-1, true)]
    [InlineData(12, true)]
    public void Cascade_WindowAndAlibi_MatchReference(int window, bool alibi)
    {
        // Each shared-level row (a sequence of the group) has its own query position: the tile's union is taken row by row.
        var c = new CascadeTests.MultiLevelCase(new CacheSpec([20, 9, 17, 0, 5, 11, 3, 7, 0, 12, 4], 4, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 43),
            [[0, 5], [0, 2, 5], [0, 1, 3, 5]], 4);
        var (cache, levels, suffixes) = CascadeTests.BuildMultiLevel(c);
        var shape = new AttentionShape(8, 2, 64);
        var opts = new AttentionOptions { WindowLeft = window, AlibiSlopes = alibi ? AttentionOptions.DefaultAlibiSlopes(8) : null };
        var plan = CascadePlanner.Plan(levels, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, targetItems: 64);
        var (q, e, le, mag, eps, maxLen) = CascadeTests.MultiLevelOracle(c, cache, levels, suffixes, shape, opts);
        RunBoth(plan, q, cache, 5, 8, 64, e, le, mag, eps, maxLen, $"three-level cascade window={window} alibi={alibi}");
    }

    [Fact]
    public void MultiLevelCascade_MatchesReference()
    {
        // Three shared levels (whole batch; 2 + 3 sequences; groups that do not nest with the level above) and split suffixes.
        var c = new CascadeTests.MultiLevelCase(new CacheSpec([20, 9, 17, 0, 5, 11, 3, 7, 0, 12, 4], 4, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 41),
            [[0, 5], [0, 2, 5], [0, 1, 3, 5]], 4);
        var (cache, levels, suffixes) = CascadeTests.BuildMultiLevel(c);
        var shape = new AttentionShape(8, 2, 64);
        var plan = CascadePlanner.Plan(levels, suffixes, shape, cache.NumPages, new AttentionWorkspace(), targetItems: 64);
        var (q, e, le, mag, eps, maxLen) = CascadeTests.MultiLevelOracle(c, cache, levels, suffixes, shape);
        RunBoth(plan, q, cache, 5, 8, 64, e, le, mag, eps, maxLen, "three-level cascade");
    }

    [Fact]
    public void MinusInfinityLogitWithNaNValue_SplitAndCascade_KeepTheOraclesNaN()
    {
        var (cache, table, q, shape) = CascadeTests.MinusInfinityKeyWithNaNValue(DType.F16);
        float[] expected = new float[q.Length], lseE = new float[8];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, expected, lseE, mag);
        double eps = LogitError(q, shape, AttentionOptions.Default.ScaleFor(32), FiniteKeys(cache, table));
        var split = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), fixedChunkPages: 1);
        RunBoth(split, q, cache, 2, 4, 32, expected, lseE, mag, eps, 15, "split, −∞ logit with NaN V");
        var prefixes = new PageTable([0, 0, 14], table.Indices[..14], [0, 1], 1);
        var suffixes = new PageTable([0, 0, 1], table.Indices[14..15], [0, 1], 1);
        var cascade = CascadePlanner.Plan([0, 1, 2], prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace());
        RunBoth(cascade, q, cache, 2, 4, 32, expected, lseE, mag, eps, 15, "cascade, −∞ logit with NaN V");
    }

    [Fact]
    public void MergeStates_MatchesAttentionStateBitForBit()
    {
        // Weights are computed as on the CPU (XMath.Exp/Log on the CPU accelerator are the BCL's), so the bits agree there.
        const int d = 40;
        var (v, l, o, ol) = CascadeTests.MergeInputs(8, rows: 12, d);
        var (ev, el) = CascadeTests.MergeExpected(v, l, o, ol, d);
        using var vt = _gpu.Upload(v, 12, d);
        using var lt = _gpu.Upload(l, 12);
        using var ot = _gpu.Upload(o, 12, d);
        using var olt = _gpu.Upload(ol, 12);
        _gpu.MergeStates(vt, lt, ot, olt);
        _gpu.Synchronize();
        Assert.Equal(ev, vt.ToArray());
        Assert.Equal(el, lt.ToArray());
        Assert.Throws<ArgumentException>(() => _gpu.MergeStates(vt, lt, olt, olt));
    }

    [Fact]
    public void BlockSparse_ElementMask_RandomCases_MatchReference()
    {
        // PagedPrefillTests' block-sparse property with element masks inside the blocks, on the GPU kernel.
        var small = (from c in PagedPrefillTests.SparseCases.Generator
                     where c.M <= 24 && c.N <= 40
                     from density in Gen.Elements(0, 50, 100)
                     select (c: c.SplitBlocks > 0 ? c with { SplitBlocks = Math.Max(c.SplitBlocks, ((c.N + c.C - 1) / c.C + 1) / 2) } : c, density))
                     .ToArbitrary(); // at most 2 chunks per block row, as FewChunks
        Prop.ForAll(small, x => PagedPrefillTests.CheckSparse(x.c, KernelOptions.Default, x.density, RunGpu)).Check(Config.QuickThrowOnFailure.WithMaxTest(10));
    }

    [Fact]
    public void BlockSparse_MatchesReference()
    {
        // M = 6 queries in blocks of 2, N = 10 keys in blocks of 4 (last block partial); block row 1 is empty.
        var mask = new BlockSparseMask([0, 2, 2, 3], [0, 2, 1], 6, 10, 2, 4);
        var shape = new AttentionShape(2, 1, 32);
        var cache = new PagedKvCache(3, 4, 1, 32, DType.BF16);
        var rng = new Random(2);
        var k = new float[10 * 32];
        var v = new float[10 * 32];
        var row = new float[32];
        var row2 = new float[32];
        for (int t = 0; t < 12; t++)
        {
            for (int i = 0; i < 32; i++)
            {
                row[i] = (float)rng.NextDouble() - 0.5f;
                row2[i] = (float)rng.NextDouble() - 0.5f;
            }
            cache.WriteToken(t / 4, t % 4, row, row2);
            if (t >= 10) continue;
            cache.ReadKey(t / 4, t % 4, 0, k.AsSpan(t * 32, 32));
            cache.ReadValue(t / 4, t % 4, 0, v.AsSpan(t * 32, 32));
        }
        var opts = new AttentionOptions { Causal = false };
        var plan = PrefillPlanner.PlanBlockSparse(mask, shape, cache.NumPages, opts);
        var q = Queries(new Random(4), 6, shape);
        float[] e = new float[q.Length], le = new float[12];
        double[] mag = new double[q.Length];
        AttentionReference.BlockSparse(mask, q, k, v, shape, opts, e, le, mag);
        RunBoth(plan, q, cache, 6, 2, 32, e, le, mag, LogitError(q, shape, plan.SmScale, [k]), 10, "block-sparse");
    }

    [Fact]
    public void Decode_PoolBeyond2GB_ReadsThePagePast2GB()
    {
        // 1,048,577 pages × 16 slots × 1 head × 128 B = 2^31 + 2 KiB per pool: the last page starts past 2^31 bytes. The source
        // pools are lazily zeroed (untouched pages cost no memory); the device copies on the CPU accelerator are 2 GB each.
        const int d = 64, pageSize = 16;
        using var cache = new PagedKvCache(1_048_577, pageSize, 1, d, DType.F16);
        Assert.True(cache.PoolBytes > int.MaxValue);
        int last = cache.NumPages - 1;
        var rng = new Random(43);
        var k = new float[d];
        var v = new float[d];
        for (int slot = 0; slot < pageSize; slot++)
        {
            for (int j = 0; j < d; j++)
            {
                k[j] = (float)(rng.NextDouble() * 2 - 1);
                v[j] = (float)(rng.NextDouble() * 2 - 1);
            }
            cache.WriteToken(last, slot, k, v);
        }
        var table = new PageTable([0, 2], [0, last], [pageSize], pageSize); // page 0 (zeros) then the last page
        var shape = new AttentionShape(2, 1, d);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace());
        var q = Queries(new Random(44), 1, shape);
        float[] e = new float[q.Length], le = new float[2];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        using (var kv = _gpu.UploadKvCache(cache))
        {
            using var qt = _gpu.Upload(q, 1, 2, d);
            using var ot = _gpu.Allocate<float>(1, 2, d);
            using var lt = _gpu.Allocate<float>(1, 2);
            _gpu.Attention(plan, qt, kv, ot, lt);
            _gpu.Synchronize();
            AssertClose(e, ot.ToArray(), mag, le, lt.ToArray(), LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 2 * pageSize, "2 GB+ pool on the GPU backend");
        }
        // The last page's values matter: without them (page 0 alone is all zeros) the output would be 0.
        Assert.Contains(e, x => Math.Abs(x) > 1e-3);
    }

    [Fact]
    public void TensorsAndCachesOfAnotherBackend_AreRejectedByName()
    {
        // Every attention op takes DeviceTensor/DeviceKvCache: one of another backend (or disposed), or one that does not fit
        // the plan, is an ArgumentException (ObjectDisposedException) naming the parameter, before any kernel runs, on both backends.
        var spec = new CacheSpec([5, 3], 2, 1, 32, DType.F16, KvLayout.Nhd, KvScaleMode.None, 4);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(2, 1, 32);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace());
        var append = KvAppendPlan.ForDecode(table, cache.NumPages);
        using var cpu = new CpuBackend();
        var q = Queries(new Random(3), 2, shape);
        foreach (var (mine, other) in new (IKernelBackend, IKernelBackend)[] { (_gpu, cpu), (cpu, _gpu) })
        {
            var ops = (IPagedAttentionOps)mine;
            using var kv = ops.UploadKvCache(cache);
            using var foreignKv = ((IPagedAttentionOps)other).UploadKvCache(cache);
            using var qt = mine.Allocate<float>(2, 2, 32);
            using var ot = mine.Allocate<float>(2, 2, 32);
            using var lt = mine.Allocate<float>(2, 2);
            using var foreignQ = other.Allocate<float>(2, 2, 32);
            using var foreignL = other.Allocate<float>(2, 2);
            using var kt = mine.Allocate<float>(2, 1, 32);
            using var foreignK = other.Allocate<float>(2, 1, 32);
            Assert.Equal("q", Assert.Throws<ArgumentException>(() => ops.Attention(plan, foreignQ, kv, ot, lt)).ParamName);
            Assert.Equal("output", Assert.Throws<ArgumentException>(() => ops.Attention(plan, qt, kv, foreignQ, lt)).ParamName);
            Assert.Equal("lse", Assert.Throws<ArgumentException>(() => ops.Attention(plan, qt, kv, ot, foreignL)).ParamName);
            Assert.Equal("cache", Assert.Throws<ArgumentException>(() => ops.Attention(plan, qt, foreignKv, ot, lt)).ParamName);
            Assert.Equal("keys", Assert.Throws<ArgumentException>(() => ops.AppendKv(append, foreignK, kt, kv)).ParamName);
            Assert.Equal("values", Assert.Throws<ArgumentException>(() => ops.AppendKv(append, kt, foreignK, kv)).ParamName);
            Assert.Equal("cache", Assert.Throws<ArgumentException>(() => ops.AppendKv(append, kt, kt, foreignKv)).ParamName);
            Assert.Equal("cache", Assert.Throws<ArgumentException>(() => ops.CopyPages(foreignKv, [new PageCopy(0, 1)])).ParamName);
            Assert.Equal("other", Assert.Throws<ArgumentException>(() => ops.MergeStates(ot, lt, foreignQ, lt)).ParamName);
            Assert.Equal("otherLse", Assert.Throws<ArgumentException>(() => ops.MergeStates(ot, lt, ot, foreignL)).ParamName);
            Assert.Equal("q", Assert.Throws<ArgumentNullException>(() => ops.Attention(plan, null!, kv, ot, lt)).ParamName);
            Assert.Equal("output", Assert.Throws<ArgumentNullException>(() => ops.Attention(plan, qt, kv, null!, lt)).ParamName);
            // Tensors that do not fit the plan, or one tensor passed as both q and output: ArgumentException naming it.
            using var shortQ = mine.Allocate<float>(2, 2, 16);
            Assert.Equal("q", Assert.Throws<ArgumentException>(() => ops.Attention(plan, shortQ, kv, ot, lt)).ParamName);
            Assert.Equal("output", Assert.Throws<ArgumentException>(() => ops.Attention(plan, qt, kv, shortQ, lt)).ParamName);
            Assert.Equal("lse", Assert.Throws<ArgumentException>(() => ops.Attention(plan, qt, kv, ot, qt)).ParamName);
            Assert.Equal("output", Assert.Throws<ArgumentException>(() => ops.Attention(plan, qt, kv, qt, lt)).ParamName);
            using var smallKv = ops.UploadKvCache(new PagedKvCache(1, 2, 1, 32, DType.F16));
            Assert.Contains("cache has 1 pages", Assert.Throws<ArgumentException>(() => ops.Attention(plan, qt, smallKv, ot, lt)).Message);
            var disposed = mine.Allocate<float>(2, 2, 32);
            disposed.Dispose();
            Assert.Throws<ObjectDisposedException>(() => ops.Attention(plan, disposed, kv, ot, lt));
            // The inputs were not touched, and a correct call still runs.
            qt.CopyFrom(q);
            ops.Attention(plan, qt, kv, ot, lt);
            mine.Synchronize();
            Assert.Equal(q, qt.ToArray());
        }
    }

    [Fact]
    public void DecodeTargetItems_IsTheBackendsSplitKvSize()
    {
        // CPU: DecodeItemsPerThread chunks per thread of its options; GPU: two per multiprocessor, at least the planners' default. Either plan gives the oracle's answer.
        using var one = new CpuBackend(new KernelOptions { MaxDegreeOfParallelism = 1 });
        using var three = new CpuBackend(new KernelOptions { MaxDegreeOfParallelism = 3 });
        Assert.Equal(CpuBackend.DecodeItemsPerThread, one.DecodeTargetItems);
        Assert.Equal(3 * CpuBackend.DecodeItemsPerThread, three.DecodeTargetItems);
        Assert.Equal(Math.Max(DecodePlanner.TargetItems, 2 * _gpu.Accelerator.NumMultiprocessors), _gpu.DecodeTargetItems);
        var spec = new CacheSpec([4000, 3000], 4, 1, 32, DType.F16, KvLayout.Nhd, KvScaleMode.None, 16);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(4, 1, 32);
        var fewer = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), targetItems: one.DecodeTargetItems);
        var more = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), targetItems: three.DecodeTargetItems);
        Assert.True(fewer.WorkItemCount < more.WorkItemCount, $"{fewer.WorkItemCount} vs {more.WorkItemCount}");
        var q = Queries(new Random(5), 2, shape);
        float[] e = new float[q.Length], le = new float[8];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        foreach (var plan in new[] { fewer, more })
        {
            float[] o = new float[q.Length], l = new float[8];
            Kernels.Cpu.Attention.PagedDecode.Run(plan, q, cache, o, l);
            AssertClose(e, o, mag, le, l, LogitError(q, shape, plan.SmScale, GatherKeys(cache, table)), 4000, $"targetItems {plan.WorkItemCount} items");
        }
    }

    [Fact]
    public void PlanCache_KeepsTheRecentPlans_AndFreesEvictedOnesAtTheNextSynchronize()
    {
        // A runtime plans every step: the backend must not keep every plan's device metadata. 20 steps (one new plan each, run
        // twice as two layers would) leave at most 8 plans cached and at most 8 evicted ones waiting; Synchronize frees those;
        // an evicted plan uploads again and still gives the oracle's answer; ReleasePlan frees one now.
        using var gpu = GpuBackend.CreateCpuSimulator();
        var spec = new CacheSpec([9, 3], 4, 1, 32, DType.F16, KvLayout.Nhd, KvScaleMode.None, 21);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(2, 1, 32);
        var q = Queries(new Random(2), 2, shape);
        float[] e = new float[q.Length], le = new float[4];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        double eps = LogitError(q, shape, 1 / MathF.Sqrt(32), GatherKeys(cache, table));
        using var kv = gpu.UploadKvCache(cache);
        using var qt = gpu.Upload(q, 2, 2, 32);
        using var ot = gpu.Allocate<float>(2, 2, 32);
        using var lt = gpu.Allocate<float>(2, 2);
        var plans = new List<DecodePlan>();
        for (int step = 0; step < 20; step++)
        {
            var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), fixedChunkPages: 1 + step % 3);
            plans.Add(plan);
            gpu.Attention(plan, qt, kv, ot, lt);
            gpu.Attention(plan, qt, kv, ot, lt);
            var (cached, retired) = gpu.PlanCache;
            Assert.True(cached <= 8 && retired <= 8, $"step {step}: {cached} cached, {retired} retired");
        }
        gpu.Synchronize();
        Assert.Equal((8, 0), gpu.PlanCache);
        AssertClose(e, ot.ToArray(), mag, le, lt.ToArray(), eps, 9, "last plan");
        gpu.Attention(plans[0], qt, kv, ot, lt); // evicted long ago: uploaded again
        gpu.Synchronize();
        AssertClose(e, ot.ToArray(), mag, le, lt.ToArray(), eps, 9, "re-uploaded plan");
        Assert.True(gpu.ReleasePlan(plans[0]));
        Assert.False(gpu.ReleasePlan(plans[0]));
        Assert.Equal((7, 0), gpu.PlanCache);
        // A smaller cache: the next call evicts down to it; the size must be at least 1.
        gpu.CachedAttentionPlans = 2;
        gpu.Attention(plans[1], qt, kv, ot, lt);
        gpu.Synchronize();
        Assert.Equal((2, 0), gpu.PlanCache);
        AssertClose(e, ot.ToArray(), mag, le, lt.ToArray(), eps, 9, "after shrinking");
        Assert.Throws<ArgumentOutOfRangeException>(() => gpu.CachedAttentionPlans = 0);

        // One call may need more plans than the cache holds (a cascade runs each level's plan, the suffix's and its own for
        // the sinks): none of them is evicted before the call ends, and the answer is the oracle's. The next call evicts them.
        gpu.CachedAttentionPlans = 1;
        var (mcache, cascade, (mq, me, mle, mmag, meps, mmax)) = SinkCascade();
        using (var mkv = gpu.UploadKvCache(mcache))
        using (var mqt = gpu.Upload(mq, 5, 8, 64))
        using (var mot = gpu.Allocate<float>(5, 8, 64))
        using (var mlt = gpu.Allocate<float>(5, 8))
        {
            gpu.Attention(cascade, mqt, mkv, mot, mlt);
            gpu.Synchronize();
            Assert.True(gpu.PlanCache.Cached >= 4, $"{gpu.PlanCache.Cached} plans cached after a three-level cascade with sinks");
            AssertClose(me, mot.ToArray(), mmag, mle, mlt.ToArray(), meps, mmax, "cascade with a one-plan cache");
        }
        gpu.Attention(plans[2], qt, kv, ot, lt);
        gpu.Synchronize();
        Assert.Equal((1, 0), gpu.PlanCache);
    }
}
