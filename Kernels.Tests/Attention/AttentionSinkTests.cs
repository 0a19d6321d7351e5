using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Tests.TestUtilities;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

/// <summary>Attention sinks (<see cref="AttentionOptions.AttentionSinks"/>, gpt-oss): the merge rule, and decode, prefill and
/// cascade plans on every ISA path against the oracle.</summary>
public class AttentionSinkTests
{
    /// <summary>Sinks per query head, uniform in [−4, 6) (seeded): below, near and above typical logits.</summary>
    internal static Gen<Func<int, float[]>> Sinks =>
        from seed in Gen.Choose(0, int.MaxValue)
        select (Func<int, float[]>)(heads =>
        {
            var rng = new Random(seed);
            return Enumerable.Range(0, heads).Select(_ => (float)(rng.NextDouble() * 10 - 4)).ToArray();
        });

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Decode_EachIsa_MatchesReference(IsaPath isa)
    {
        // Split-KV cases included: the sink joins once, after the chunks merge.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in PagedDecodeTests.Cases.Generator from s in Sinks select (c, s)).ToArbitrary();
        Prop.ForAll(cases, x => PagedDecodeTests.Check(x.c, options, sinksFor: x.s)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Prefill_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from c in PagedPrefillTests.Cases.Generator from s in Sinks from n in Gen.Elements(0, 0, 2)
                     select (c, s, n: PagedPrefillTests.NonFiniteFor(c, n))).ToArbitrary();
        Prop.ForAll(cases, x => PagedPrefillTests.Check(x.c, options, nonFinite: x.n, sinksFor: x.s)).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void ApplySink_IsTheMergeWithAZeroState()
    {
        var rng = new Random(3);
        float[] lses = [float.NegativeInfinity, float.NaN, -300f, -2f, 0f, 5f, 90f];
        foreach (float lse0 in lses)
            foreach (float sink in new[] { -90f, -1f, 0f, 3f, 100f })
            {
                var v = Enumerable.Range(0, 37).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                v[5] = lse0 == -2f ? float.NaN : v[5];
                float[] a = (float[])v.Clone(), b = (float[])v.Clone();
                float la = lse0, lb = lse0;
                AttentionState.ApplySink(a, ref la, sink);
                AttentionState.MergeInPlace(b, ref lb, new float[37], sink);
                Assert.Equal(lb, la);
                for (int i = 0; i < 37; i++) Assert.Equal(b[i] + 0f, a[i] + 0f); // ±0 aside
            }
    }

    [Fact]
    public void ZeroQueries_GiveTheClosedForm_WithAndWithoutLse_OnBothPaths()
    {
        // q = 0: every logit is 0, so o = mean(v)·n/(n + e^s) and lse = ln(n + e^s); the sink-free head (s very negative) is the mean.
        var spec = new CacheSpec([40, 0], 16, 1, 32, DType.F32, KvLayout.Nhd, KvScaleMode.None, 4);
        var (cache, table) = Build(spec);
        var shape = new AttentionShape(2, 1, 32);
        var opts = new AttentionOptions { AttentionSinks = [1.5f, -80f] };
        var q = new float[2 * 2 * 32];
        var (_, values) = AttentionReference.Gather(cache, table, 0);
        var mean = Enumerable.Range(0, 32).Select(c => Enumerable.Range(0, 40).Average(t => (double)values[t * 32 + c])).ToArray();
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts, fixedChunkPages: 1);
        float[] o = new float[q.Length], lse = new float[4], oNoLse = new float[q.Length];
        PagedDecode.Run(plan, q, cache, o, lse);
        PagedDecode.Run(plan, q, cache, oNoLse, default);
        Assert.Equal(o, oNoLse);
        double share = 40 / (40 + Math.Exp(1.5));
        for (int c = 0; c < 32; c++)
        {
            Assert.Equal(mean[c] * share, o[c], 5);
            Assert.Equal(mean[c], o[32 + c], 5);
        }
        Assert.Equal(Math.Log(40 + Math.Exp(1.5)), lse[0], 5);
        Assert.Equal(Math.Log(40), lse[1], 4);
        // Sequence 1 has no keys: o = 0, lse = the sink.
        Assert.All(o.AsSpan(64, 64).ToArray(), x => Assert.Equal(0f, x));
        Assert.Equal(1.5f, lse[2]);
        Assert.Equal(-80f, lse[3]);
    }

    [Fact]
    public void Cascade_AppliesTheSinkOnce()
    {
        var c = new CascadeTests.CascadeCase(new CacheSpec([9, 0, 5, 11, 0, 7, 1], 4, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 21), [3, 1, 0], 2, 0, 1);
        var (cache, prefixes, suffixes, groupIndptr) = CascadeTests.BuildCascade(c);
        var shape = new AttentionShape(4, 2, 64);
        var opts = new AttentionOptions { AttentionSinks = [0.5f, 2f, -1f, 4f] };
        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, cache.NumPages, new AttentionWorkspace(), opts, 1);
        var (q, e, le, mag, eps, maxLen) = CascadeTests.Oracle(c, cache, prefixes, suffixes, groupIndptr, shape, opts);
        float[] a = new float[q.Length], la = new float[le.Length], noLse = new float[q.Length];
        CascadeDecode.Run(plan, q, cache, a, la);
        AssertClose(e, a, mag, le, la, eps, maxLen, "cascade with sinks");
        CascadeDecode.Run(plan, q, cache, noLse, default);
        Assert.Equal(a, noLse);
    }

    [Fact]
    public void Invalid_Throws()
    {
        var (cache, table) = Build(new CacheSpec([5], 4, 1, 32, DType.F32, KvLayout.Nhd, KvScaleMode.None, 1));
        var shape = new AttentionShape(2, 1, 32);
        var ex = Assert.Throws<ArgumentException>(() => DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(),
            new AttentionOptions { AttentionSinks = [1f] }));
        Assert.Contains("1 entries", ex.Message);
        Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, 1], table, shape, cache.NumPages, new AttentionOptions { AttentionSinks = [1f, float.PositiveInfinity] }));
    }
}
