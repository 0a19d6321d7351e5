using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Cpu.Attention;
using Kernels.Perf.Harness;

namespace Kernels.Perf.Suites;

public sealed partial class AttentionSuite
{
    private const int CascadeBatch = 32, SharedTokens = 4096, OwnTokens = 256;

    /// <summary>Cascade (shared-prefix) decode against flat decode of the same sequences: 32 sequences on one 4096-token
    /// prompt with 256 tokens of their own each (parallel sampling, or many requests on one system prompt), fp16, pages
    /// scattered through the pool. Flat decode's table repeats the prompt's pages in every sequence, so it reads them 32
    /// times; the cascade reads them once per tile of 16 sequences. Bytes count the unique KV (the prompt once), so the
    /// two rows' GB/s compare like their times; "vs flat" is timed in alternation.</summary>
    private static IEnumerable<BenchCase> CascadeCases(BenchContext ctx)
    {
        string shape = $"b={CascadeBatch} shared={SharedTokens} own={OwnTokens}";
        foreach (bool cascade in new[] { false, true })
        {
            string op = cascade ? "cascade decode" : "decode flat";
            if (ctx.Cpu && ctx.Wants(op, "kv f16", shape, "cpu")) yield return CascadeCase(ctx, cascade, shape, null);
            if (ctx.Gpu is { } gpu && ctx.Wants(op, "kv f16", shape, gpu.Name)) yield return CascadeCase(ctx, cascade, shape, gpu);
        }
    }

    private static BenchCase CascadeCase(BenchContext ctx, bool cascade, string shapeText, Kernels.Gpu.GpuBackend? gpu)
    {
        int sharedPages = SharedTokens / PageSize, ownPages = OwnTokens / PageSize, numPages = sharedPages + CascadeBatch * ownPages;
        using var template = Template(PageSize, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        double kvBytes = 2.0 * PageSize * KvHeads * template.RowBytes * numPages;
        int copies = gpu is null ? ctx.ColdCopies(kvBytes) : 1;
        int[] placement = Enumerable.Range(0, numPages).ToArray();
        new Random(12).Shuffle(placement);
        var caches = new PagedKvCache[copies];
        for (int c = 0; c < copies; c++)
        {
            caches[c] = new PagedKvCache(numPages, PageSize, KvHeads, HeadDim, DType.F16, KvLayout.Nhd, KvScaleMode.None);
            for (int i = 0; i < numPages; i++) caches[c].CopyPageFrom(template, i % TemplatePages, placement[i]);
        }
        int[] shared = placement[..sharedPages];
        var prefixes = new PageTable([0, sharedPages], shared, [PageSize], PageSize);
        var suffixes = new PageTable(Enumerable.Range(0, CascadeBatch + 1).Select(b => b * ownPages).ToArray(), placement[sharedPages..],
            Enumerable.Repeat(PageSize, CascadeBatch).ToArray(), PageSize);
        var flatIndices = Enumerable.Range(0, CascadeBatch).SelectMany(b => shared.Concat(placement.Skip(sharedPages + b * ownPages).Take(ownPages))).ToArray();
        var flat = new PageTable(Enumerable.Range(0, CascadeBatch + 1).Select(b => b * (sharedPages + ownPages)).ToArray(), flatIndices,
            Enumerable.Repeat(PageSize, CascadeBatch).ToArray(), PageSize);

        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        int targetItems = gpu is null ? CpuTargetItems(ctx) : DecodePlanner.TargetItems;
        var flatPlan = DecodePlanner.Plan(flat, shape, numPages, new AttentionWorkspace(), targetItems: targetItems);
        var cascadePlan = CascadePlanner.Plan([0, CascadeBatch], prefixes, suffixes, shape, numPages, new AttentionWorkspace(), targetItems: targetItems);
        AttentionPlan plan = cascade ? cascadePlan : flatPlan;
        float[] q = DenseSuite.RandomFloats(CascadeBatch * QoHeads * HeadDim, 3);
        float[] o = new float[q.Length], lse = new float[CascadeBatch * QoHeads];
        string op = cascade ? "cascade decode" : "decode flat";
        double bytes = kvBytes + 8.0 * q.Length, flops = 4.0 * CascadeBatch * (SharedTokens + OwnTokens) * QoHeads * HeadDim;
        string? baseline = cascade ? BenchCase.MakeKey("decode flat", "kv f16", shapeText, gpu?.Name ?? "cpu") : null;
        string note = cascade ? $"{cascadePlan.Prefix.WorkItemCount} + {cascadePlan.Suffix.WorkItemCount} items; shared prompt read once per 16 sequences"
            : $"{flatPlan.WorkItemCount} items; shared prompt read once per sequence";
        if (gpu is not null)
        {
            var g = GpuRunner(gpu, plan, caches[0], q, o, CascadeBatch);
            return new BenchCase
            {
                Op = op, Format = "kv f16", Shape = shapeText, Backend = gpu.Name, Path = gpu.Accelerator.Name, Bytes = bytes, Flops = flops,
                Run = g.Run,
                Verify = () => VerifySequence0(caches[0], flat, shape, plan, q, o, g.RunAndRead),
                BaselineKey = baseline, Note = note,
                Resources = new Disposables([g.Resources, .. caches]),
            };
        }
        var options = ctx.Options;
        void Run(AttentionPlan p, PagedKvCache cache, float[] output, float[] l)
        {
            if (p is CascadePlan c) CascadeDecode.Run(c, q, cache, output, l, options);
            else PagedDecode.Run((DecodePlan)p, q, cache, output, l, options);
        }
        float[] o2 = new float[o.Length], lse2 = new float[lse.Length];
        return new BenchCase
        {
            Op = op, Format = "kv f16", Shape = shapeText, Backend = "cpu", Path = ctx.CpuPath, Bytes = bytes, Flops = flops,
            Run = it => Run(plan, caches[it % copies], o, lse),
            Verify = () => VerifySequence0(caches[0], flat, shape, plan, q, o, () => Run(plan, caches[0], o, lse)),
            BaselineKey = baseline,
            Paired = cascade ? [new PairedRun("vs flat", it => Run(flatPlan, caches[it % copies], o2, lse2))] : null,
            Note = note,
            Resources = new Disposables([.. caches]),
        };
    }
}
