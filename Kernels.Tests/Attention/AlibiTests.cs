using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Cpu.Attention;
using Kernels.Tests.TestUtilities;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

/// <summary>ALiBi (<see cref="AttentionOptions.AlibiSlopes"/>): the slopes, the planners' checks, and decode and prefill on
/// every ISA path against the oracle.</summary>
public class AlibiTests
{
    /// <summary>Slopes per query head: the standard ones, or random in [−0.25, 1) (seeded).</summary>
    public sealed record SlopeSpec(bool Standard, int Seed)
    {
        public override string ToString() => Standard ? "standard slopes" : $"random slopes seed={Seed}";

        public float[] For(int heads)
        {
            if (Standard) return AttentionOptions.DefaultAlibiSlopes(heads);
            var rng = new Random(Seed);
            return Enumerable.Range(0, heads).Select(_ => (float)(rng.NextDouble() * 1.25 - 0.25)).ToArray();
        }
    }

    internal static Gen<SlopeSpec> Slopes => from standard in Gen.Elements(true, false) from seed in Gen.Choose(0, int.MaxValue) select new SlopeSpec(standard, seed);

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Decode_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in PagedDecodeTests.Cases.Generator from s in Slopes select (c, s)).ToArbitrary();
        Prop.ForAll(cases, x => PagedDecodeTests.Check(x.c, options, alibiFor: x.s.For)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Decode_QuantizedQueryDot_EachIsa_MatchesReference(IsaPath isa)
    {
        // Integer q·k dot products (int8 and int4 caches) with the bias added after the K multiplier.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in PagedDecodeTests.Cases.Generator where c.Cache.DType is DType.I8 or DType.I4 from s in Slopes select (c, s)).ToArbitrary();
        Prop.ForAll(cases, x => PagedDecodeTests.Check(x.c, options, quantizedQ: true, alibiFor: x.s.For)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Prefill_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in PagedPrefillTests.Cases.Generator from s in Slopes from n in Gen.Elements(0, 0, 2)
                     select (c, s, n: PagedPrefillTests.NonFiniteFor(c, n))).ToArbitrary();
        Prop.ForAll(cases, x => PagedPrefillTests.Check(x.c, options, nonFinite: x.n, alibiFor: x.s.For)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Prefill_48QueriesPerItem_WithCustomMask_EachIsa_MatchesReference(IsaPath isa)
    {
        // Items the AVX-512 path would otherwise run with the queries in the lanes; ALiBi takes the row-wise path instead.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var c = new PagedPrefillTests.PrefillCase(new CacheSpec([40, 23], 16, 1, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 31), [12, 12], 4, true, 5, 0f);
        PagedPrefillTests.Check(c, options, alibiFor: new SlopeSpec(true, 0).For);
        PagedPrefillTests.Check(c, options, maskOf: new CustomMaskTests.MaskSpec(-1, 3).Make, alibiFor: new SlopeSpec(false, 4).For);
    }

    [Fact]
    public void DefaultSlopes_AreBloomsBuildAlibiTensor()
    {
        // 8 heads: 2^−1 … 2^−8. 12 heads: those, then 2^−0.5, 2^−1.5, 2^−2.5, 2^−3.5 (the interleaved slopes of 16 heads).
        Assert.Equal(Enumerable.Range(1, 8).Select(k => (float)Math.Pow(2, -k)), AttentionOptions.DefaultAlibiSlopes(8));
        float[] twelve = AttentionOptions.DefaultAlibiSlopes(12);
        Assert.Equal(Enumerable.Range(1, 8).Select(k => (float)Math.Pow(2, -k)), twelve[..8]);
        Assert.Equal(new[] { 0.5, 1.5, 2.5, 3.5 }.Select(e => (float)Math.Pow(2, -e)), twelve[8..]);
        Assert.Equal([0.00390625f], AttentionOptions.DefaultAlibiSlopes(1)); // n = 1: 2^−8
        Assert.Throws<ArgumentOutOfRangeException>(() => AttentionOptions.DefaultAlibiSlopes(0));
    }

    [Fact]
    public void ZeroSlopes_EqualNoAlibi_AndTheBiasFavoursNearKeys()
    {
        var spec = new CacheSpec([70], 16, 1, 64, DType.F32, KvLayout.Nhd, KvScaleMode.None, 2);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(2, 1, 64);
        var q = new float[2 * 64]; // zero queries: every logit is 0 but for the bias
        float[] Run(AttentionOptions o, float[] lse)
        {
            var output = new float[q.Length];
            PagedDecode.Run(DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), o), q, cache, output, lse);
            return output;
        }
        float[] l0 = new float[2], l1 = new float[2], l2 = new float[2];
        var plain = Run(AttentionOptions.Default, l0);
        Assert.Equal(plain, Run(new AttentionOptions { AlibiSlopes = [0f, 0f] }, l1));
        Assert.Equal(l0, l1);
        // Slope ln 2: key at distance −k weighs 2^−k, so lse = ln Σ_{k<70} 2^−k = ln(2 − 2^−69) and the newest key dominates.
        Run(new AttentionOptions { AlibiSlopes = [MathF.Log(2f), 0f] }, l2);
        Assert.Equal(Math.Log(2 - Math.Pow(2, -69)), l2[0], 5);
        Assert.Equal(Math.Log(70), l2[1], 5);
    }

    [Fact]
    public void Invalid_Throws()
    {
        var (cache, table) = Build(new CacheSpec([5], 4, 1, 32, DType.F32, KvLayout.Nhd, KvScaleMode.None, 1));
        var shape = new AttentionShape(4, 1, 32);
        var ex = Assert.Throws<ArgumentException>(() => DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(),
            new AttentionOptions { AlibiSlopes = [1f, 2f] }));
        Assert.Contains("2 entries", ex.Message);
        Assert.Contains("4 query heads", ex.Message);
        Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, 1], table, shape, cache.NumPages, new AttentionOptions { AlibiSlopes = [1f, 2f, float.NaN, 0f] }));
        var level = new CascadeLevel([0, 1], table);
        Assert.Throws<ArgumentException>(() => CascadePlanner.Plan([level], table, shape, cache.NumPages, new AttentionWorkspace(),
            new AttentionOptions { AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(2) }));
    }
}
