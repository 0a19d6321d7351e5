using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Perf.Harness;

namespace Kernels.Perf.Suites;

public sealed partial class AttentionSuite
{
    private const int AppendTokens = 2048;

    private static readonly (DType DType, KvScaleMode Mode, string Name)[] AppendFormats =
        [(DType.F16, KvScaleMode.None, "kv f16"), (DType.BF16, KvScaleMode.None, "kv bf16"), (DType.F8E4M3, KvScaleMode.None, "kv fp8 e4m3"),
         (DType.I8, KvScaleMode.PerToken, "kv i8"), (DType.I4, KvScaleMode.None, "kv i4")];

    /// <summary>Writing a prefill chunk's K/V into the pool (<see cref="IPagedAttentionOps.AppendKv"/>: FlashInfer's
    /// <c>append_paged_kv_cache</c>): 2048 tokens × 8 kv heads × 128 of fp32 keys and values, converted or quantized into
    /// scattered 16-token pages. Bytes: the fp32 input read plus the cache bytes written. The GPU rows compare the device
    /// pool, read back, with the host's write before timing.</summary>
    private static IEnumerable<BenchCase> AppendCases(BenchContext ctx)
    {
        string shape = $"tokens={AppendTokens}";
        foreach (var f in AppendFormats)
        {
            if (ctx.Quick && f.DType != DType.F16) continue;
            if (ctx.Cpu && ctx.Wants("kv append", f.Name, shape, "cpu")) yield return AppendCase(ctx, f.DType, f.Mode, f.Name, shape, null);
            if (ctx.Gpu is { } gpu && ctx.Wants("kv append", f.Name, shape, gpu.Name)) yield return AppendCase(ctx, f.DType, f.Mode, f.Name, shape, gpu);
        }
    }

    private static BenchCase AppendCase(BenchContext ctx, DType dtype, KvScaleMode mode, string format, string shape, Kernels.Gpu.GpuBackend? gpu)
    {
        int pages = AppendTokens / PageSize;
        int[] placement = Enumerable.Range(0, pages).ToArray();
        new Random(13).Shuffle(placement);
        var table = new PageTable([0, pages], placement, [PageSize], PageSize);
        var cache = new PagedKvCache(pages, PageSize, KvHeads, HeadDim, dtype, KvLayout.Nhd, mode);
        var plan = KvAppendPlan.ForAppend(table, [AppendTokens], pages);
        float[] k = DenseSuite.RandomFloats(AppendTokens * KvHeads * HeadDim, 5), v = DenseSuite.RandomFloats(k.Length, 6);
        double bytes = 2.0 * k.Length * 4 + cache.PayloadBytes + (cache.HasRowScales ? 2.0 * cache.RowCount * 4 * (dtype == DType.I4 ? 2 : 1) : 0);
        if (gpu is null)
        {
            var cpu = new Kernels.Cpu.CpuBackend(ctx.Options);
            var device = cpu.UploadKvCache(cache);
            var kT = cpu.Upload(k, AppendTokens, KvHeads, HeadDim);
            var vT = cpu.Upload(v, AppendTokens, KvHeads, HeadDim);
            return new BenchCase
            {
                Op = "kv append", Format = format, Shape = shape, Backend = "cpu", Path = "Vector128, both cores", Bytes = bytes,
                Run = _ => cpu.AppendKv(plan, kT, vT, device),
                Verify = () => VerifyAppend(cache, plan, k, v),
                Note = "PagedKvCache.WriteTokens",
                Resources = new Disposables([device, kT, vT, cache]),
            };
        }
        var gDevice = gpu.UploadKvCache(cache);
        var gK = gpu.Upload(k, AppendTokens, KvHeads, HeadDim);
        var gV = gpu.Upload(v, AppendTokens, KvHeads, HeadDim);
        return new BenchCase
        {
            Op = "kv append", Format = format, Shape = shape, Backend = gpu.Name, Path = gpu.Accelerator.Name, Bytes = bytes,
            Run = _ =>
            {
                gpu.AppendKv(plan, gK, gV, gDevice);
                gpu.Synchronize();
            },
            Verify = () =>
            {
                gpu.AppendKv(plan, gK, gV, gDevice);
                gpu.Synchronize();
                gDevice.Download();
                return VerifyAppend(cache, plan, k, v);
            },
            BaselineKey = BenchCase.MakeKey("kv append", format, shape, "cpu"),
            Resources = new Disposables([gDevice, gK, gV, cache]),
        };
    }

    /// <summary>The cache's rows (as written by the case) against a host write of the same tokens into a fresh cache.</summary>
    private static string? VerifyAppend(PagedKvCache written, KvAppendPlan plan, float[] k, float[] v)
    {
        using var expected = new PagedKvCache(written.NumPages, written.PageSize, written.KvHeads, written.HeadDim, written.DType, written.Layout, written.ScaleMode);
        expected.WriteTokens(plan, k, v);
        float[] a = new float[HeadDim], b = new float[HeadDim];
        for (int i = 0; i < plan.Tokens; i += 97)
            for (int h = 0; h < KvHeads; h++)
            {
                expected.ReadKey(plan.Pages[i], plan.Slots[i], h, a);
                written.ReadKey(plan.Pages[i], plan.Slots[i], h, b);
                if (!a.AsSpan().SequenceEqual(b)) return $"token {i} head {h}: K differs from the host write";
                expected.ReadValue(plan.Pages[i], plan.Slots[i], h, a);
                written.ReadValue(plan.Pages[i], plan.Slots[i], h, b);
                if (!a.AsSpan().SequenceEqual(b)) return $"token {i} head {h}: V differs from the host write";
            }
        return null;
    }
}
