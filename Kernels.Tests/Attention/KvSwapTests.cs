using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Cpu;
using Kernels.Gpu;
using Kernels.Tests.Gpu;

namespace Kernels.Tests.Attention;

/// <summary>Swapping pages between a backend cache and a separate host pool (vLLM's <c>swap_blocks</c>):
/// <see cref="DeviceKvCache.SwapIn"/> and <see cref="DeviceKvCache.SwapOut"/> on both backends.</summary>
public static class KvSwapCases
{
    public static TheoryData<DType, KvScaleMode, KvLayout> Formats => new()
    {
        { DType.F16, KvScaleMode.None, KvLayout.Nhd },
        { DType.BF16, KvScaleMode.None, KvLayout.Hnd },
        { DType.I8, KvScaleMode.PerToken, KvLayout.Nhd },
        { DType.I4, KvScaleMode.None, KvLayout.Hnd },
        { DType.F8E4M3, KvScaleMode.PerHead, KvLayout.Nhd },
    };

    private static readonly float[] HeadScales = [0.03f, 0.05f];

    public static PagedKvCache NewCache(int pages, DType dtype, KvScaleMode mode, KvLayout layout) =>
        mode == KvScaleMode.PerHead
            ? new PagedKvCache(pages, 4, 2, 32, dtype, layout, mode, HeadScales, HeadScales)
            : new PagedKvCache(pages, 4, 2, 32, dtype, layout, mode);

    /// <summary>Fills every slot of every page with random rows (one NaN in page 1's K for the float formats).</summary>
    public static void Fill(PagedKvCache cache, int seed)
    {
        var rng = new Random(seed);
        var k = new float[2 * 32];
        var v = new float[k.Length];
        for (int p = 0; p < cache.NumPages; p++)
            for (int s = 0; s < cache.PageSize; s++)
            {
                for (int j = 0; j < k.Length; j++)
                {
                    k[j] = (float)(rng.NextDouble() * 2 - 1);
                    v[j] = (float)(rng.NextDouble() * 2 - 1);
                }
                if (p == 1 && s == 2 && cache.DType is DType.F16 or DType.BF16 or DType.F8E4M3) k[5] = float.NaN;
                cache.WriteToken(p, s, k, v);
            }
    }

    /// <summary>Asserts that page <paramref name="pa"/> of <paramref name="a"/> reads as page <paramref name="pb"/> of <paramref name="b"/>.</summary>
    public static void AssertSamePage(PagedKvCache a, int pa, PagedKvCache b, int pb)
    {
        float[] x = new float[32], y = new float[32];
        for (int s = 0; s < a.PageSize; s++)
            for (int h = 0; h < 2; h++)
            {
                a.ReadKey(pa, s, h, x);
                b.ReadKey(pb, s, h, y);
                Assert.Equal(y, x);
                a.ReadValue(pa, s, h, x);
                b.ReadValue(pb, s, h, y);
                Assert.Equal(y, x);
            }
        Assert.Equal(b.NonFinitePageArray[pb], a.NonFinitePageArray[pa]);
    }

    /// <summary>Swaps host pages 0, 1, 4 into pages 5, 2, 0 of a backend cache and out again into a fresh pool; checks both
    /// against the originals, that other pages keep their contents, and the errors (before any copy).</summary>
    public static void RoundTrip(IPagedAttentionOps ops, DType dtype, KvScaleMode mode, KvLayout layout)
    {
        using var swap = NewCache(6, dtype, mode, layout);
        Fill(swap, 1);
        using var pool = NewCache(6, dtype, mode, layout);
        Fill(pool, 2);
        using var before = NewCache(6, dtype, mode, layout);
        for (int p = 0; p < 6; p++) before.CopyPageFrom(pool, p, p);
        using var kv = ops.UploadKvCache(pool);
        PageCopy[] swapIn = [new(0, 5), new(1, 2), new(4, 0)];
        kv.SwapIn(swap, swapIn);
        kv.Download(); // the device pool into its host mirror (no-op on the CPU)
        foreach (var c in swapIn) AssertSamePage(pool, c.Destination, swap, c.Source);
        foreach (int p in new[] { 1, 3, 4 }) AssertSamePage(pool, p, before, p);

        using var back = NewCache(4, dtype, mode, layout);
        PageCopy[] swapOut = [new(5, 3), new(2, 0)];
        kv.SwapOut(back, swapOut);
        AssertSamePage(back, 3, swap, 0);
        AssertSamePage(back, 0, swap, 1); // the NaN page: its flag comes along

        // Errors, before any copy: a page past either pool, another format, other per-head scales.
        Assert.Throws<ArgumentOutOfRangeException>(() => kv.SwapIn(swap, [new(0, 1), new(6, 0)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => kv.SwapOut(back, [new(0, 4)]));
        using var other = new PagedKvCache(6, 4, 2, 32, dtype == DType.F16 ? DType.BF16 : DType.F16);
        var ex = Assert.Throws<ArgumentException>(() => kv.SwapIn(other, [new(0, 1)]));
        Assert.Contains("dtype", ex.Message);
        if (mode == KvScaleMode.PerHead)
        {
            using var scaled = new PagedKvCache(6, 4, 2, 32, dtype, layout, mode, [0.03f, 0.06f], [0.03f, 0.05f]);
            Assert.Contains("per-head", Assert.Throws<ArgumentException>(() => kv.SwapIn(scaled, [new(0, 1)])).Message);
        }
        kv.Download();
        AssertSamePage(pool, 1, before, 1); // untouched by the failed calls
    }
}

public class KvSwapTests
{
    [Theory]
    [MemberData(nameof(KvSwapCases.Formats), MemberType = typeof(KvSwapCases))]
    public void Cpu_SwapInAndOut_MovePagesExactly(DType dtype, KvScaleMode mode, KvLayout layout)
    {
        using var cpu = new CpuBackend();
        KvSwapCases.RoundTrip(cpu, dtype, mode, layout);
    }
}

[Collection(GpuCollection.Name)]
public class KvSwapGpuTests(GpuFixture fixture)
{
    [Theory]
    [MemberData(nameof(KvSwapCases.Formats), MemberType = typeof(KvSwapCases))]
    public void Gpu_SwapInAndOut_MovePagesExactly(DType dtype, KvScaleMode mode, KvLayout layout) =>
        KvSwapCases.RoundTrip(fixture.Backend, dtype, mode, layout);
}
