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

/// <summary>In-kernel RoPE (<see cref="AttentionOptions.Rope"/>, FlashInfer's <c>ROPE_LLAMA</c> mode): the oracle's definition,
/// decode, prefill and cascades on every ISA path against it, and the plan-time errors.</summary>
public class InKernelRopeTests
{
    public sealed record RopeCase(CacheSpec Cache, int Group, bool Interleaved, int RotaryDim, int Window, bool ForceSplit)
    {
        public override string ToString() =>
            $"{Cache} group={Group} {(Interleaved ? "gptj" : "neox")} rotary={RotaryDim} window={Window} split={ForceSplit}";
    }

    private static readonly (DType, KvScaleMode)[] Formats =
        [(DType.F32, KvScaleMode.None), (DType.F16, KvScaleMode.None), (DType.BF16, KvScaleMode.None),
         (DType.F8E4M3, KvScaleMode.None), (DType.I8, KvScaleMode.PerToken), (DType.I4, KvScaleMode.None)];

    private static Arbitrary<RopeCase> Cases =>
        (from batch in Gen.Choose(1, 3)
         from lens in Gen.ArrayOf(Gen.OneOf(Gen.Elements(0, 1, 16, 17), Gen.Choose(0, 70)), batch)
         from page in Gen.Elements(1, 16, 5)
         from kvHeads in Gen.Elements(1, 2)
         from d in Gen.Elements(64, 128, 32)
         from fmt in Gen.Elements(Formats)
         from layout in Gen.Elements(KvLayout.Nhd, KvLayout.Hnd)
         from grp in Gen.Elements(1, 4, 5, 16)
         from interleaved in Gen.Elements(false, true)
         from partial in Gen.Elements(false, true)
         from window in Gen.Elements(-1, -1, 7)
         from split in Gen.Elements(false, true)
         from seed in Gen.Choose(0, int.MaxValue)
         select new RopeCase(new CacheSpec(lens, page, kvHeads, d, fmt.Item1, layout, fmt.Item2, seed), grp, interleaved,
             partial ? d / 2 : d, window, split)).ToArbitrary();

    private static RopeTable Table(RopeCase c, int maxPositions = 80) =>
        new(new RopeOptions { Interleaved = c.Interleaved, RotaryDim = c.RotaryDim, Theta = 500000 }, c.Cache.HeadDim, maxPositions);

    [Fact]
    public void Reference_EqualsRotatingFirst()
    {
        // The oracle's definition: the same attention as rotating q (at kv_len − qo_len + i) and every key (at its index)
        // first, then attending without RoPE.
        var c = new RopeCase(new CacheSpec([37], 16, 2, 64, DType.F32, KvLayout.Nhd, KvScaleMode.None, 7), 4, false, 64, -1, false);
        var (cache, table) = Build(c.Cache);
        using var _ = cache;
        var shape = new AttentionShape(8, 2, 64);
        var rope = Table(c);
        int qo = 5, kv = 37;
        var q = Queries(new Random(3), qo, shape);
        var (keys, values) = AttentionReference.Gather(cache, table, 0);
        var withRope = new float[q.Length];
        var lseRope = new float[qo * shape.QoHeads];
        AttentionReference.Dense(q, keys, values, qo, kv, shape, new AttentionOptions { Rope = rope }, withRope, lseRope);

        var qr = new float[q.Length];
        var kr = new float[keys.Length];
        RopeReference.Apply(rope.Options, 64, Enumerable.Range(kv - qo, qo).ToArray(), q, qr);
        RopeReference.Apply(rope.Options, 64, Enumerable.Range(0, kv).ToArray(), keys, kr);
        var rotatedFirst = new float[q.Length];
        var lseFirst = new float[lseRope.Length];
        AttentionReference.Dense(qr, kr, values, qo, kv, shape, AttentionOptions.Default, rotatedFirst, lseFirst);
        for (int i = 0; i < q.Length; i++) Assert.True(Math.Abs(withRope[i] - rotatedFirst[i]) <= 1e-5, $"output {i}: {withRope[i]} vs {rotatedFirst[i]}");
        for (int i = 0; i < lseRope.Length; i++) Assert.True(Math.Abs(lseRope[i] - lseFirst[i]) <= 1e-5, $"lse {i}: {lseRope[i]} vs {lseFirst[i]}");
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Decode_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(Cases, c => PagedDecodeTests.Check(new PagedDecodeTests.DecodeCase(c.Cache, c.Group, 0f, c.Window, c.ForceSplit), options,
            ropeFor: _ => Table(c))).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Prefill_EachIsa_MatchesReference(IsaPath isa)
    {
        // Ragged causal prefill: each request's queries are its last keys (qo ≤ kv), so rows see different key ranges and
        // queries sit at different positions.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in Cases.Generator
                     from fractions in Gen.ArrayOf(Gen.Choose(0, 4), c.Cache.SeqLens.Length)
                     select (c, fractions)).ToArbitrary();
        Prop.ForAll(cases, x =>
        {
            var c = x.c;
            int[] qoLens = c.Cache.SeqLens.Select((len, b) => len * x.fractions[b] / 4).ToArray(); // 0 … kv_len
            PagedPrefillTests.Check(new PagedPrefillTests.PrefillCase(c.Cache, qoLens, c.Group, true, c.Window, 0f), options, ropeFor: _ => Table(c));
        }).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Decode_F32Cache_IsBitIdenticalToRotatingFirst(IsaPath isa)
    {
        // The kernels rotate with ApplyRope's formula, so on an fp32 cache in-kernel RoPE gives the same bits as rotating the
        // queries and the cached keys with RopeKernel first and decoding without RoPE (same path, same plan shape).
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        // NeoX over the whole row (AVX-512 and AVX2 rotate inside the logit blocks of four queries, and of one for the fifth
        // head of a group of 5), NeoX over part of it, and GPT-J pairs.
        foreach (var (interleaved, rotary, group) in new[] { (false, 128, 4), (false, 128, 5), (false, 96, 4), (true, 128, 4) })
        {
            var c = new RopeCase(new CacheSpec([45, 1, 16], 16, 2, 128, DType.F32, KvLayout.Nhd, KvScaleMode.None, 11), group, interleaved, rotary, -1, true);
            var (cache, table) = Build(c.Cache);
            using var _ = cache;
            var shape = new AttentionShape(2 * group, 2, 128);
            var rope = Table(c);
            int batch = table.BatchSize;
            var q = Queries(new Random(5), batch, shape);
            var inKernel = new float[q.Length];
            var lseIn = new float[batch * shape.QoHeads];
            var opts = new AttentionOptions { Rope = rope };
            PagedDecode.Run(DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts, fixedChunkPages: 2), q, cache, inKernel, lseIn, options);

            // Rotate q at kv_len − 1 and every cached key at its index, in place in the pool, then decode without RoPE.
            var positions = Enumerable.Range(0, batch).Select(b => Math.Max(0, table.KvLength(b) - 1)).ToArray();
            var qr = new float[q.Length];
            RopeKernel.Apply(rope, positions, q, qr, options);
            RotateCachedKeys(cache, table, rope, options);
            var first = new float[q.Length];
            var lseFirst = new float[lseIn.Length];
            PagedDecode.Run(DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), AttentionOptions.Default, fixedChunkPages: 2),
                qr, cache, first, lseFirst, options);
            Assert.True(first.AsSpan().SequenceEqual(inKernel), $"outputs differ: interleaved={interleaved} rotary={rotary} group={group} {isa}");
            Assert.True(lseFirst.AsSpan().SequenceEqual(lseIn), $"lse differ: interleaved={interleaved} rotary={rotary} group={group} {isa}");
        }
    }

    /// <summary>Rotates every cached key (2 kv heads × 128, 16-token pages) at its index, in place in the pool.</summary>
    private static void RotateCachedKeys(PagedKvCache cache, PageTable table, RopeTable rope, KernelOptions options)
    {
        var k = new float[2 * 128];
        var v = new float[2 * 128];
        var row = new float[2 * 128];
        for (int b = 0; b < table.BatchSize; b++)
            for (int t = 0; t < table.KvLength(b); t++)
            {
                int page = table.Indices[table.Indptr[b] + t / 16];
                for (int h = 0; h < 2; h++)
                {
                    cache.ReadKey(page, t % 16, h, k.AsSpan(h * 128, 128));
                    cache.ReadValue(page, t % 16, h, v.AsSpan(h * 128, 128));
                }
                RopeKernel.Apply(rope, [t], k, row, options);
                cache.WriteToken(page, t % 16, row, v);
            }
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Prefill_F32Cache_IsBitIdenticalToRotatingFirst(IsaPath isa)
    {
        // Prefill-type items widen each tile's K rows once and rotate them with RopeKernel's row code: the same bits as
        // rotating q (row i at kv_len − qo_len + i) and the cached keys first. Not on AVX-512: there an
        // fp32 cache without RoPE is read in place by the 4 × 4 blocks while the widened rows take the query-lane logits, a
        // different summation order (Decode_F32Cache_IsBitIdenticalToRotatingFirst checks its rotation bit for bit).
        if (isa == IsaPath.Avx512 || IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        foreach (var (interleaved, rotary) in new[] { (false, 128), (false, 96), (true, 128) })
        {
            var c = new RopeCase(new CacheSpec([45, 20], 16, 2, 128, DType.F32, KvLayout.Nhd, KvScaleMode.None, 13), 4, interleaved, rotary, -1, false);
            var (cache, table) = Build(c.Cache);
            using var _ = cache;
            var shape = new AttentionShape(8, 2, 128);
            var rope = Table(c);
            int[] qoIndptr = [0, 6, 9];
            var q = Queries(new Random(6), qoIndptr[^1], shape);
            var inKernel = new float[q.Length];
            var lseIn = new float[qoIndptr[^1] * shape.QoHeads];
            PagedPrefill.Run(PrefillPlanner.Plan(qoIndptr, table, shape, cache.NumPages, new AttentionOptions { Rope = rope }), q, cache, inKernel, lseIn, options);

            var positions = new int[qoIndptr[^1]];
            for (int b = 0; b < 2; b++)
                for (int r = qoIndptr[b]; r < qoIndptr[b + 1]; r++) positions[r] = table.KvLength(b) - (qoIndptr[b + 1] - qoIndptr[b]) + (r - qoIndptr[b]);
            var qr = new float[q.Length];
            RopeKernel.Apply(rope, positions, q, qr, options);
            RotateCachedKeys(cache, table, rope, options);
            var first = new float[q.Length];
            var lseFirst = new float[lseIn.Length];
            PagedPrefill.Run(PrefillPlanner.Plan(qoIndptr, table, shape, cache.NumPages), qr, cache, first, lseFirst, options);
            Assert.True(first.AsSpan().SequenceEqual(inKernel), $"outputs differ: interleaved={interleaved} rotary={rotary} {isa}");
            Assert.True(lseFirst.AsSpan().SequenceEqual(lseIn), $"lse differ: interleaved={interleaved} rotary={rotary} {isa}");
        }
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Cascade_EachIsa_MatchesFlatReference(IsaPath isa)
    {
        // A cascade's levels count keys and the query from the level's start; RoPE depends on their distance only, so the
        // result is the flat oracle's (rotating at true positions) up to the table's rounding.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in CascadeTests.Cases.Generator
                     from interleaved in Gen.Elements(false, true)
                     from partial in Gen.Elements(false, true)
                     select (c, interleaved, partial)).ToArbitrary();
        Prop.ForAll(cases, x => CascadeTests.Check(x.c, options, ropeFor: d =>
            new RopeTable(new RopeOptions { Interleaved = x.interleaved, RotaryDim = x.partial ? d / 2 : 0 }, d, 130))).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Plans_RejectWhatRopeCannotServe()
    {
        var spec = new CacheSpec([40, 10], 16, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 1);
        var (cache, table) = Build(spec);
        using var _ = cache;
        var shape = new AttentionShape(8, 2, 64);
        var rope = new RopeTable(new RopeOptions(), 64, 32);

        // Sequence 0 has 40 keys; the table covers 32 positions.
        var e = Assert.Throws<ArgumentException>(() => DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), new AttentionOptions { Rope = rope }));
        Assert.Contains("40 keys", e.Message);
        Assert.Contains("[0, 32)", e.Message);
        // A table for another head_dim.
        e = Assert.Throws<ArgumentException>(() => DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(),
            new AttentionOptions { Rope = new RopeTable(new RopeOptions(), 128, 64) }));
        Assert.Contains("head_dim 128", e.Message);
        // More queries than keys: the first query's position would be negative.
        var wide = new RopeTable(new RopeOptions(), 64, 64);
        e = Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, 4, 16], table, shape, cache.NumPages, new AttentionOptions { Rope = wide }));
        Assert.Contains("12 queries over 10 keys", e.Message);
        // Integer query dot products cannot take rotated keys.
        Assert.Throws<ArgumentException>(() => new AttentionOptions { Rope = wide, QuantizedQueryDot = true }.Validate());
        // A cascade's sequences count every level's keys: 40 shared + 40 own keys pass a 64-position table.
        e = Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([0, 1, 2], table, table, shape, cache.NumPages, new AttentionWorkspace(),
            new AttentionOptions { Rope = wide }));
        Assert.Contains("80 keys", e.Message);
    }
}
