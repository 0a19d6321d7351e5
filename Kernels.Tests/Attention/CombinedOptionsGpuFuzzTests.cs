using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Gpu;
using Kernels.Tests.Gpu;
using Xunit.Abstractions;
using static Kernels.Tests.Attention.CombinedOptionsFuzzTests;

namespace Kernels.Tests.Attention;

/// <summary><see cref="CombinedOptionsFuzzTests"/> on the GPU kernels (ILGPU's CPU accelerator): decode and prefill with
/// every option drawn at once, at GPU-test size (the accelerator runs one OS thread per GPU thread).</summary>
/// <remarks>CI runs a dozen cases; <c>KERNELS_FUZZ_CASES=N</c> runs N.</remarks>
[Collection(GpuCollection.Name)]
public class CombinedOptionsGpuFuzzTests(GpuFixture fixture, ITestOutputHelper output)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    [Fact]
    public void DecodeAndPrefill_EveryOptionAtOnce_MatchReference()
    {
        int count = CaseCount(12), prefills = 0, decodes = 0;
        var failures = new List<string>();
        var master = new Random(20261204);
        for (int n = 0; n < count; n++)
        {
            int seed = master.Next();
            var rng = new Random(seed);
            bool prefill = rng.Next(2) == 0;
            try
            {
                if (prefill)
                {
                    var c = PrefillCase(rng);
                    while (c.Cache.SeqLens.Sum() > 60 || c.QoLens.Sum() > 24) c = PrefillCase(rng);
                    CheckPrefill(rng, PagedAttentionGpuTests.FewChunks(c), RunGpu, "gpu");
                    prefills++;
                }
                else
                {
                    var c = DecodeCase(rng);
                    while (c.Cache.SeqLens.Sum() > 120 || c.Group > 8) c = DecodeCase(rng);
                    int nonFinite = c.Cache.DType is DType.F32 or DType.F16 or DType.BF16 ? rng.Next(3) : 0;
                    PagedDecodeTests.CheckNonFinite(c, nonFinite, RunGpu, "gpu",
                        alibiFor: nonFinite == 0 ? Slopes(rng) : null, sinksFor: rng.Next(3) == 0 ? Sinks(rng.Next()) : null,
                        ropeFor: rng.Next(3) == 0 ? Rope(rng) : null);
                    decodes++;
                }
            }
            catch (Exception e) when (e is Xunit.Sdk.XunitException or ArgumentException or InvalidOperationException or IndexOutOfRangeException or NullReferenceException)
            {
                failures.Add($"case {n} (seed {seed}, {(prefill ? "prefill" : "decode")}): {e.GetType().Name}: {e.Message}");
            }
        }
        output.WriteLine($"gpu: {prefills} prefill and {decodes} decode cases, {failures.Count} failures");
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(10)));
    }

    private void RunGpu(AttentionPlan plan, float[] q, PagedKvCache cache, float[] o, float[] lse) => PagedAttentionGpuTests.Run(_gpu, plan, q, cache, o, lse);
}
