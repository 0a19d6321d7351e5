using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Positional;
using Kernels.Cpu.Attention;
using Kernels.Tests.TestUtilities;
using Xunit.Abstractions;

namespace Kernels.Tests.Attention;

/// <summary>A differential fuzz of decode, prefill and cascade decode against the oracle with every option drawn at once
/// (the other properties vary one or two options at a time): soft cap, window, causal, custom masks, ALiBi, sinks,
/// in-kernel RoPE (NeoX and GPT-J, full and half rotary_dim), integer query dots, forced split-KV and Inf/NaN in K/V rows,
/// over every KV format, layout, page size 1–32 and GQA ratio 1–20, one sequence in ten a few hundred tokens long, on each
/// ISA path.</summary>
/// <remarks>CI runs a few hundred cases per path; <c>KERNELS_FUZZ_CASES=N</c> runs N (the number quoted in
/// docs/attention.md was run that way).</remarks>
public class CombinedOptionsFuzzTests(ITestOutputHelper output)
{
    internal static int CaseCount(int ci) => int.TryParse(Environment.GetEnvironmentVariable("KERNELS_FUZZ_CASES"), out int n) && n > 0 ? n : ci;

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void DecodeAndPrefill_EveryOptionAtOnce_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        int count = CaseCount(150), prefills = 0, decodes = 0, cascades = 0;
        var failures = new List<string>();
        var master = new Random(20261203 + (int)isa);
        for (int n = 0; n < count; n++)
        {
            int seed = master.Next();
            var rng = new Random(seed);
            int kind = rng.Next(5); // 0–1 prefill, 2–3 decode, 4 cascade
            bool prefill = kind < 2;
            try
            {
                if (kind == 4)
                {
                    var c = CascadeCase(rng);
                    CascadeTests.Check(c, options, window: Pick(rng, -1, -1, 0, 9),
                        alibiFor: Slopes(rng), sinksFor: rng.Next(3) == 0 ? Sinks(rng.Next()) : null, ropeFor: rng.Next(3) == 0 ? Rope(rng) : null);
                    cascades++;
                }
                else if (prefill)
                {
                    CheckPrefill(rng, PrefillCase(rng), (plan, q, cache, o, lse) => PagedPrefill.Run(plan, q, cache, o, lse, options), isa.ToString());
                    prefills++;
                }
                else
                {
                    var c = DecodeCase(rng);
                    bool rope = rng.Next(3) == 0, intKv = c.Cache.DType is DType.I8 or DType.I4;
                    PagedDecodeTests.Check(c, options, quantizedQ: intKv && !rope && rng.Next(2) == 0, alibiFor: Slopes(rng),
                        sinksFor: rng.Next(3) == 0 ? Sinks(rng.Next()) : null, ropeFor: rope ? Rope(rng) : null);
                    decodes++;
                }
            }
            catch (Exception e) when (e is Xunit.Sdk.XunitException or ArgumentException or InvalidOperationException or IndexOutOfRangeException or NullReferenceException)
            {
                failures.Add($"case {n} (seed {seed}, {(kind == 4 ? "cascade" : prefill ? "prefill" : "decode")}): {e.GetType().Name}: {e.Message}");
            }
        }
        output.WriteLine($"{isa}: {prefills} prefill, {decodes} decode and {cascades} cascade cases, {failures.Count} failures");
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(10)));
    }

    /// <summary>Draws a prefill case's options (integer query dots for int8/int4 without RoPE, 0–2 Inf/NaN values in K/V,
    /// a custom mask, ALiBi, sinks, RoPE) and checks <paramref name="run"/> against the oracle.</summary>
    internal static void CheckPrefill(Random rng, PagedPrefillTests.PrefillCase c, Action<PrefillPlan, float[], PagedKvCache, float[], float[]> run, string what)
    {
        bool rope = rng.Next(3) == 0, intKv = c.Cache.DType is DType.I8 or DType.I4;
        if (rope) c = c with { QoLens = c.QoLens.Select((q, b) => Math.Min(q, c.Cache.SeqLens[b])).ToArray() }; // positions ≥ 0
        var mask = rng.Next(3) == 0 ? new CustomMaskTests.MaskSpec(rng.Next(2) == 0 ? -1 : rng.Next(0, 101), rng.Next()) : null;
        int nonFinite = PagedPrefillTests.NonFiniteFor(c, rng.Next(3));
        PagedPrefillTests.Check(c, run, what,
            quantizedQ: intKv && !rope && rng.Next(2) == 0, // rotated keys are not integer codes (the planner rejects the pair)
            nonFinite: nonFinite,
            maskOf: mask is null ? null : mask.Make,
            // Not ALiBi with Inf/NaN in K/V: large slopes raise a row's maximum by > 87 over several tiles, where an Inf V
            // element stays Inf through rescalings that the oracle's flushed weight turns into 0·Inf = NaN (the one documented
            // exception to the non-finite rule, docs/attention.md "Non-finite values").
            alibiFor: nonFinite == 0 ? Slopes(rng) : null,
            sinksFor: rng.Next(3) == 0 ? Sinks(rng.Next()) : null,
            ropeFor: rope ? Rope(rng) : null);
    }

    /// <summary>ALiBi slopes one time in three (standard or random), else none.</summary>
    internal static Func<int, float[]>? Slopes(Random rng) => rng.Next(3) == 0 ? new AlibiTests.SlopeSpec(rng.Next(2) == 0, rng.Next()).For : null;

    internal static readonly (DType, KvScaleMode)[] Formats =
        [(DType.F32, KvScaleMode.None), (DType.F16, KvScaleMode.None), (DType.BF16, KvScaleMode.None),
         (DType.F8E4M3, KvScaleMode.None), (DType.F8E5M2, KvScaleMode.None), (DType.F8E4M3, KvScaleMode.PerHead),
         (DType.I8, KvScaleMode.PerToken), (DType.I8, KvScaleMode.PerHead), (DType.I4, KvScaleMode.None)];

    internal static T Pick<T>(Random rng, params T[] xs) => xs[rng.Next(xs.Length)];

    internal static AttentionTestData.CacheSpec Cache(Random rng, int maxLen, int[] dims)
    {
        int[] lens = Enumerable.Range(0, rng.Next(1, 4)).Select(_ => rng.Next(2) == 0 ? Pick(rng, 0, 1, 15, 16, 17) : rng.Next(0, maxLen + 1)).ToArray();
        var (dtype, mode) = Pick(rng, Formats);
        return new AttentionTestData.CacheSpec(lens, Pick(rng, 1, 3, 5, 16, 32), rng.Next(1, 4), Pick(rng, dims), dtype,
            Pick(rng, KvLayout.Nhd, KvLayout.Hnd), mode, rng.Next());
    }

    internal static PagedDecodeTests.DecodeCase DecodeCase(Random rng) =>
        new(Cache(rng, rng.Next(10) == 0 ? 700 : 75, [32, 64, 128, 256]), Pick(rng, 1, 3, 4, 8, 20), Pick(rng, 0f, 0f, 5f), Pick(rng, -1, -1, 0, 7), rng.Next(2) == 0);

    internal static PagedPrefillTests.PrefillCase PrefillCase(Random rng)
    {
        var cache = Cache(rng, rng.Next(10) == 0 ? 200 : 45, [32, 64, 128]);
        int[] qo = cache.SeqLens.Select(l => Math.Min(l + 2, (l + 2) * rng.Next(0, 101) / 100 + 1)).ToArray();
        return new(cache, qo, Pick(rng, 1, 2, 4, 5, 16), rng.Next(2) == 0, Pick(rng, -1, 0, 5), Pick(rng, 0f, 3f), Pick(rng, 0, 0, 1, 2));
    }

    internal static CascadeTests.CascadeCase CascadeCase(Random rng)
    {
        int groups = rng.Next(1, 4);
        int[] sizes = Enumerable.Range(0, groups).Select(_ => Pick(rng, 0, 1, 2, 5, 20)).ToArray();
        int Len() => rng.Next(2) == 0 ? Pick(rng, 0, 1, 2, 15, 16, 17) : rng.Next(0, rng.Next(10) == 0 ? 300 : 61);
        int[] lens = [.. Enumerable.Range(0, groups).Select(_ => Len()), .. Enumerable.Range(0, sizes.Sum()).Select(_ => Len())];
        var (dtype, mode) = Pick(rng, Formats);
        var cache = new AttentionTestData.CacheSpec(lens, Pick(rng, 1, 5, 16), rng.Next(1, 3), Pick(rng, 32, 64, 128), dtype,
            Pick(rng, KvLayout.Nhd, KvLayout.Hnd), mode, rng.Next());
        return new(cache, sizes, Pick(rng, 1, 4, 8, 20), Pick(rng, 0f, 0f, 5f), Pick(rng, 1, 8, 64));
    }

    internal static Func<int, float[]> Sinks(int seed) => heads =>
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, heads).Select(_ => (float)(rng.NextDouble() * 10 - 4)).ToArray();
    };

    internal static Func<int, RopeTable> Rope(Random rng)
    {
        bool interleaved = rng.Next(2) == 0, partial = rng.Next(2) == 0;
        return d => new RopeTable(new RopeOptions { Interleaved = interleaved, RotaryDim = partial ? d / 2 : d, Theta = 500000 }, d, 704);
    }
}
