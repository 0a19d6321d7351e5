using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Tests.TestUtilities;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

/// <summary>Element-wise custom masks (FlashInfer's <c>custom_mask</c>) in batch prefill: the format, the planner's checks,
/// and every ISA path against the oracle.</summary>
public class CustomMaskTests
{
    /// <summary>How a random mask is drawn: kept with probability <c>Density</c>% per (query, key), or a token tree
    /// (<c>Density</c> = −1: the prompt plus each draft token's ancestors, as tree speculative decoding verifies).</summary>
    public sealed record MaskSpec(int Density, int Seed)
    {
        public override string ToString() => Density < 0 ? $"tree seed={Seed}" : $"density={Density}% seed={Seed}";

        public CustomMask Make(int[] qoIndptr, int[] kvLens)
        {
            var rng = new Random(Seed);
            if (Density >= 0) return CustomMask.Create(qoIndptr, kvLens, (_, _, _) => rng.Next(100) < Density);
            var parents = new int[kvLens.Length][];
            for (int b = 0; b < kvLens.Length; b++)
            {
                int qn = qoIndptr[b + 1] - qoIndptr[b];
                parents[b] = Enumerable.Range(0, qn).Select(i => i == 0 ? -1 : rng.Next(-1, i)).ToArray();
            }
            return CustomMask.Create(qoIndptr, kvLens, (b, i, j) =>
            {
                int qn = qoIndptr[b + 1] - qoIndptr[b], prompt = kvLens[b] - qn;
                if (j < prompt) return true;
                for (int n = i; n >= 0; n = parents[b][n])
                    if (prompt + n == j) return true; // itself or an ancestor
                return false;
            });
        }
    }

    internal static Arbitrary<(PagedPrefillTests.PrefillCase Case, MaskSpec Mask)> Cases =>
        (from c in PagedPrefillTests.Cases.Generator
         from density in Gen.Elements(-1, 0, 10, 50, 90, 100)
         from seed in Gen.Choose(0, int.MaxValue)
         select (c, new MaskSpec(density, seed))).ToArbitrary();

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(Cases, x => PagedPrefillTests.Check(x.Case, options, maskOf: x.Mask.Make)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_QuantizedQueryDot_EachIsa_MatchesReference(IsaPath isa)
    {
        // The integer q·k path (int8 and int4 caches) under a custom mask and ALiBi.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var cases = (from x in Cases.Generator where x.Case.Cache.DType is DType.I8 or DType.I4 from s in AlibiTests.Slopes from alibi in Gen.Elements(false, true)
                     select (x.Case, x.Mask, alibi ? s : null)).ToArbitrary();
        Prop.ForAll(cases, x => PagedPrefillTests.Check(x.Case, options, quantizedQ: true, maskOf: x.Mask.Make, alibiFor: x.Item3 is { } s ? s.For : null))
            .QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_NonFiniteKeysAndValuesOfExcludedKeys_EachIsa_DoNotLeak(IsaPath isa)
    {
        // A key the mask excludes may hold Inf/NaN in K or V: its V row must not be read (0·NaN), its logit not used.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var floats = (from x in Cases.Generator
                      where x.Case.Cache.DType is DType.F32 or DType.F16 or DType.BF16
                      from n in Gen.Choose(1, 4)
                      select (x.Case, x.Mask, n)).ToArbitrary();
        Prop.ForAll(floats, x => PagedPrefillTests.Check(x.Case, options, nonFinite: x.n, maskOf: x.Mask.Make)).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Run_48QueriesPerItem_EachIsa_MatchesReference(IsaPath isa)
    {
        // Items of 48 queries: the AVX-512 path puts the queries in the vector lanes, each lane testing its row's bits.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        foreach (int density in new[] { -1, 30 })
        {
            var c = new PagedPrefillTests.PrefillCase(new CacheSpec([40, 23], 16, 1, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 31), [12, 12], 4, false, -1, 0f);
            PagedPrefillTests.Check(c, options, nonFinite: 3, maskOf: new MaskSpec(density, 5).Make);
        }
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void DecodeShaped_EachIsa_MatchesReference(IsaPath isa)
    {
        // A decode step with a per-key mask (a token tree's single new node, a retrieval mask) is a prefill plan with one
        // query row per sequence: FlashInfer's decode has no custom mask either. Every format, layout, GQA ratio and option.
        if (!CpuIsa.IsSupported(isa)) return;
        var options = new KernelOptions { Isa = isa };
        var decodeShaped = (from x in Cases.Generator
                            select (x.Case with { QoLens = x.Case.QoLens.Select(_ => 1).ToArray() }, x.Mask)).ToArbitrary();
        Prop.ForAll(decodeShaped, x => PagedPrefillTests.Check(x.Item1, options, maskOf: x.Mask.Make)).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void AllKept_EqualsNoMask_AndNoneKept_GivesEmptyRows()
    {
        var c = new PagedPrefillTests.PrefillCase(new CacheSpec([37, 5], 16, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 3), [6, 5], 2, true, -1, 0f);
        var (cache, table) = Build(c.Cache);
        var shape = new AttentionShape(4, 2, 64);
        int[] qo = [0, 6, 11];
        var q = Queries(new Random(1), 11, shape);
        float[] Run(CustomMask? mask, float[] lse)
        {
            var o = new float[q.Length];
            PagedPrefill.Run(PrefillPlanner.Plan(qo, table, shape, cache.NumPages, null, mask), q, cache, o, lse);
            return o;
        }
        float[] lseNone = new float[11 * 4], lseAll = new float[lseNone.Length], lseEmpty = new float[lseNone.Length];
        var none = Run(null, lseNone);
        var all = Run(CustomMask.Create(qo, [37, 5], (_, _, _) => true), lseAll);
        Assert.Equal(none, all);
        Assert.Equal(lseNone, lseAll);
        var empty = Run(CustomMask.Create(qo, [37, 5], (_, _, _) => false), lseEmpty);
        Assert.All(empty, x => Assert.Equal(0f, x));
        Assert.All(lseEmpty, x => Assert.Equal(float.NegativeInfinity, x));
    }

    [Fact]
    public void FromPacked_FlashInfersSegmentPackbits_EqualsFromBooleans()
    {
        // Two requests of 3 × 5 = 15 and 2 × 3 = 6 bits: 2 bytes and 1 byte, each request padded to a byte (segment_packbits,
        // little bit order).
        int[] qo = [0, 3, 5], kv = [5, 3];
        Assert.Equal(3, CustomMask.PackedLength(qo, kv));
        var rng = new Random(9);
        var bools = Enumerable.Range(0, 21).Select(_ => rng.Next(2) == 1).ToArray();
        var packed = new byte[3];
        for (int i = 0; i < 15; i++) if (bools[i]) packed[i / 8] |= (byte)(1 << (i % 8));
        for (int i = 0; i < 6; i++) if (bools[15 + i]) packed[2] |= (byte)(1 << i);
        var a = CustomMask.FromBooleans(bools, qo, kv);
        var b = CustomMask.FromPacked(packed, qo, kv);
        for (int r = 0; r < 5; r++)
            for (int j = 0; j < kv[r < 3 ? 0 : 1]; j++)
            {
                bool expected = r < 3 ? bools[r * 5 + j] : bools[15 + (r - 3) * 3 + j];
                Assert.Equal(expected, a.IsKept(r, j));
                Assert.Equal(expected, b.IsKept(r, j));
            }
    }

    [Fact]
    public void KeptRange_IsFirstToLastKeptKey()
    {
        int[] qo = [0, 3], kv = [70];
        var m = CustomMask.Create(qo, kv, (_, i, j) => i switch { 0 => j is 5 or 40, 1 => j == 69, _ => false });
        Assert.Equal((5, 41), m.KeptRange(0));
        Assert.Equal((69, 70), m.KeptRange(1));
        Assert.Equal((0, 0), m.KeptRange(2));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.IsKept(3, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.IsKept(0, 70));
    }

    [Fact]
    public void Invalid_Throws_NamingTheSizes()
    {
        int[] qo = [0, 2, 3], kv = [4, 5];
        var ex = Assert.Throws<ArgumentException>(() => CustomMask.FromBooleans(new bool[12], qo, kv));
        Assert.Contains("13", ex.Message); // 2·4 + 1·5 entries expected
        Assert.Throws<ArgumentException>(() => CustomMask.FromPacked(new byte[3], qo, kv)); // needs 1 + 1 bytes
        Assert.Throws<ArgumentException>(() => CustomMask.FromBooleans(new bool[13], [0, 3, 2], kv)); // not monotone
        Assert.Throws<ArgumentException>(() => CustomMask.FromBooleans([], [0, 0], [-1]));

        // A mask made for other query or key lengths than the plan's.
        var (cache, table) = Build(new CacheSpec([4, 5], 4, 1, 32, DType.F32, KvLayout.Nhd, KvScaleMode.None, 1));
        var shape = new AttentionShape(1, 1, 32);
        var wrongQ = CustomMask.Create([0, 1, 3], kv, (_, _, _) => true);
        ex = Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan(qo, table, shape, cache.NumPages, null, wrongQ));
        Assert.Contains("Request 0 has 2 queries", ex.Message);
        var wrongK = CustomMask.Create(qo, [4, 6], (_, _, _) => true);
        ex = Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan(qo, table, shape, cache.NumPages, null, wrongK));
        Assert.Contains("Request 1 has 5 keys", ex.Message);
        var wrongB = CustomMask.Create([0, 2], [4], (_, _, _) => true);
        Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan(qo, table, shape, cache.NumPages, null, wrongB));
    }
}
