using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Attention;
using Kernels.Perf.Harness;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Suites;

/// <summary>
/// Paged batch decode (Llama-3-8B attention: 32 query heads, 8 kv heads, head_dim 128) over fp16/bf16/int8/int4 KV caches.
/// Each case runs twice: pages randomly permuted through the pool (page_size 16, the realistic case) and the same data in
/// contiguous pages. A paged row's "vs contiguous" comes from timing the two in alternation within the row
/// (<see cref="BenchCase.Paired"/>: the median over pairs of contiguous time / paged time), not from the two rows, which
/// are measured a minute apart on a VM whose speed drifts. int8/int4 paged rows are timed the same way against the same
/// values in an fp16 cache with the same page placement ("vs fp16"). Bytes = KV payload + scales the kernel must read, so GB/s is effective KV bandwidth.
/// The pools are NHD (vLLM's and FlashInfer's default); at 32k, "kv f16 hnd" rows repeat fp16 in the HND layout, where a kv
/// head's 16 rows of a page are one 4 KB run, and "kv f16 page 64" rows use 64-token pages.
/// "decode in cache" rows run each format's kernel over a 1k-token pool (4 MB of fp16 K and V) that stays in cache, one
/// work item per thread: the kernel's compute rate, timed right before that format's long-context rows. Those rows quote
/// the fraction of it they reach ("vs in-cache", GFLOP/s over GFLOP/s): near 1, the kernel is compute-bound there and a
/// faster memory path cannot help; well below 1, memory is what it waits for.
/// </summary>
/// <remarks>The default run caps batch·context at 256k tokens: batch 32 × 32k (4.3 GB of fp16 KV, twice: paged and
/// contiguous) runs only when a filter names it, e.g. <c>attention --filter "b=32 ctx=32768"</c>.</remarks>
public sealed partial class AttentionSuite : IBenchSuite
{
    private const int QoHeads = 32, KvHeads = 8, HeadDim = 128, PageSize = 16, LargePageSize = 64, TemplatePages = 64;
    private const long MaxTokens = 256 * 1024;
    private const int LongContext = 32768, InCacheContext = 1024;
    private const string InCacheOp = "decode in cache";

    /// <summary>The shape label of the cache-resident baseline timed before the batch-<paramref name="batch"/> long-context rows.</summary>
    private static string InCacheShape(int batch) => $"b=1 ctx={InCacheContext} (for b={batch})";

    public string Name => "attention";

    public string Description => "paged decode (32 q heads, 8 kv heads, d=128, page 16): fp16/bf16/fp8/int8/int4 KV, paged vs contiguous";

    public int Order => 40;

    // "q8": AttentionOptions.QuantizedQueryDot (int8 queries; integer K dot products on the CPU, dequantized queries on the GPU).
    private static readonly (DType DType, KvScaleMode Mode, string Name, bool Q8)[] Formats =
        [(DType.F16, KvScaleMode.None, "kv f16", false), (DType.BF16, KvScaleMode.None, "kv bf16", false),
         (DType.F8E4M3, KvScaleMode.None, "kv fp8 e4m3", false), (DType.F8E5M2, KvScaleMode.None, "kv fp8 e5m2", false),
         (DType.I8, KvScaleMode.PerToken, "kv i8", false), (DType.I4, KvScaleMode.None, "kv i4", false),
         (DType.I8, KvScaleMode.PerToken, "kv i8 q8", true), (DType.I4, KvScaleMode.None, "kv i4 q8", true)];

    public IEnumerable<BenchCase> Create(BenchContext ctx)
    {
        (int Batch, int Ctx)[] shapes = ctx.Quick
            ? [(1, 32768), (8, 4096)]
            : [(1, 512), (1, 4096), (1, 32768), (8, 512), (8, 4096), (8, 32768), (32, 512), (32, 4096), (32, 32768)];
        foreach (var (batch, len) in shapes)
        {
            // Batch 32 × 32k (4.3 GB of fp16 KV) runs only when a filter asks for it, e.g. --filter "b=32 ctx=32768".
            if ((long)batch * len > MaxTokens && !ctx.Filters.Any(f => f.Contains($"b={batch} ctx={len}", StringComparison.Ordinal))) continue;
            string shape = $"b={batch} ctx={len}";
            // The memory floor of the paged/contiguous comparison at long contexts: the fp16 pools read with no arithmetic.
            if (ctx.Cpu && len >= LongContext)
                foreach (bool paged in new[] { false, true })
                    if (ctx.Wants(paged ? "page read" : "page read contiguous", "kv f16 bytes", shape, "cpu")) yield return ReadCase(ctx, batch, len, paged);
            foreach (var f in Formats)
            {
                if (ctx.Quick && f.DType is DType.BF16 or DType.I8 or DType.F8E5M2) continue;
                if (f.Q8 && (long)batch * len < 4096) continue; // the integer-dot mode matters for long contexts
                // The compute-rate baseline of a long-context row: the same format's kernel over a cache-resident pool, timed
                // right before it (the VM's speed drifts over minutes), so the row can quote the fraction it reaches.
                if (ctx.Cpu && len >= LongContext && (ctx.Wants("decode", f.Name, shape, "cpu") || ctx.Wants("decode contiguous", f.Name, shape, "cpu")
                        || ctx.Wants(InCacheOp, f.Name, InCacheShape(batch), "cpu")))
                    yield return Case(ctx, 1, InCacheContext, f.DType, f.Mode, f.Name, f.Q8, paged: false, inCache: true, inCacheFor: batch);
                foreach (bool paged in new[] { false, true })
                {
                    string op = paged ? "decode" : "decode contiguous";
                    if (ctx.Cpu && ctx.Wants(op, f.Name, shape, "cpu")) yield return Case(ctx, batch, len, f.DType, f.Mode, f.Name, f.Q8, paged);
                    if (ctx.Gpu is { } gpu && ctx.Wants(op, f.Name, shape, gpu.Name)) yield return Case(ctx, batch, len, f.DType, f.Mode, f.Name, f.Q8, paged, gpu);
                }
            }
            // fp16 with 64-token pages (128 KB per page and pool here), and fp16 in the HND layout (a page holds each kv head's 16
            // rows together, 4 KB, instead of interleaving the heads token by token), at long contexts: "vs base" is the NHD page-16 row.
            if (ctx.Cpu && len >= LongContext)
                foreach (bool paged in new[] { false, true })
                {
                    string op = paged ? "decode" : "decode contiguous";
                    if (ctx.Wants(op, "kv f16 page 64", shape, "cpu"))
                        yield return Case(ctx, batch, len, DType.F16, KvScaleMode.None, "kv f16 page 64", false, paged, null, LargePageSize);
                    if (ctx.Wants(op, "kv f16 hnd", shape, "cpu"))
                        yield return Case(ctx, batch, len, DType.F16, KvScaleMode.None, "kv f16 hnd", false, paged, null, PageSize, KvLayout.Hnd);
                }
            // fp16 pages as a PageAllocator hands them out when the batch's sequences grow together, a page each in turn (as
            // decode steps fill them), with either placement: "vs base" is the shuffled-page row, "vs contiguous" interleaved.
            if (ctx.Cpu && batch > 1 && len >= LongContext)
                foreach (var (placement, name) in new[] { (PagePlacement.LastFreed, "kv f16 grown last-freed"), (PagePlacement.Adjacent, "kv f16 grown adjacent") })
                    if (ctx.Wants("decode", name, shape, "cpu"))
                        yield return Case(ctx, batch, len, DType.F16, KvScaleMode.None, name, false, paged: true, grown: placement);
        }
        foreach (var c in MaskedDecodeCases(ctx)) yield return c;
        foreach (var c in CascadeCases(ctx)) yield return c;
        foreach (var c in PrefillCases(ctx)) yield return c;
        foreach (var c in AppendCases(ctx)) yield return c;
        foreach (var c in RopeCases(ctx)) yield return c;
        foreach (var c in RopeDecodeCases(ctx)) yield return c;
    }

    private static BenchCase Case(BenchContext ctx, int batch, int len, DType dtype, KvScaleMode mode, string format, bool q8, bool paged, Kernels.Gpu.GpuBackend? gpu = null, int pageSize = PageSize,
        KvLayout layout = KvLayout.Nhd, bool inCache = false, int inCacheFor = 0, PagePlacement? grown = null)
    {
        int pagesPerSeq = (len + pageSize - 1) / pageSize;
        int numPages = batch * pagesPerSeq;
        // A few template pages written (and quantized) once, then copied: fast to fill, same data paged and contiguous.
        var template = Template(pageSize, dtype, layout, mode);
        int[] placement = Enumerable.Range(0, numPages).ToArray();
        if (grown is { } how) placement = GrownPages(batch, pagesPerSeq, pageSize, how);
        else if (paged) new Random(11).Shuffle(placement);
        var kvBytesPerPage = 2.0 * pageSize * KvHeads * (template.RowBytes + (template.HasRowScales ? 4 : 0) + (dtype == DType.I4 ? 4 : 0));
        double kvBytes = kvBytesPerPage * numPages;
        int copies = gpu is null && !inCache ? ctx.ColdCopies(kvBytes) : 1;
        var indptr = Enumerable.Range(0, batch + 1).Select(b => b * pagesPerSeq).ToArray();
        var last = Enumerable.Repeat(len - (pagesPerSeq - 1) * pageSize, batch).ToArray();
        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        // CPU: a few work items per thread (each item costs a setup, a cold first page and a merge); GPU: its DecodeTargetItems.
        // In cache: one item per thread, so the rate is the kernel's own, not the split-KV setup's.
        int targetItems = gpu is not null ? gpu.DecodeTargetItems : inCache ? ctx.Options.EffectiveParallelism : CpuTargetItems(ctx);
        (PagedKvCache[] Caches, PageTable Table, DecodePlan Plan) Build(int[] pages, PagedKvCache from)
        {
            var built = new PagedKvCache[copies];
            for (int c = 0; c < copies; c++)
            {
                built[c] = new PagedKvCache(numPages, pageSize, KvHeads, HeadDim, from.DType, layout, from.ScaleMode);
                for (int i = 0; i < numPages; i++) built[c].CopyPageFrom(from, i % TemplatePages, pages[i]);
            }
            var t = new PageTable(indptr, pages, last, pageSize);
            return (built, t, DecodePlanner.Plan(t, shape, numPages, new AttentionWorkspace(), new AttentionOptions { QuantizedQueryDot = q8 }, targetItems: targetItems));
        }
        var (caches, table, plan) = Build(placement, template);
        float[] q = DenseSuite.RandomFloats(batch * QoHeads * HeadDim, 3);
        float[] qRef = q8 ? QueryQuantization.Dequantized(q, HeadDim) : q; // what the kernel's logits are computed from
        float[] o = new float[q.Length], lse = new float[batch * QoHeads];
        var options = ctx.Options;
        string shapeText = inCache ? InCacheShape(inCacheFor) : $"b={batch} ctx={len}";
        string op = inCache ? InCacheOp : paged ? "decode" : "decode contiguous";
        if (gpu is not null)
        {
            var g = GpuRunner(gpu, plan, caches[0], q, o, batch);
            return new BenchCase
            {
                Op = op, Format = format, Shape = shapeText, Backend = gpu.Name, Path = gpu.Accelerator.Name,
                Bytes = kvBytes + 8.0 * q.Length,
                Flops = 4.0 * batch * len * QoHeads * HeadDim,
                Run = g.Run,
                Verify = () => VerifySequence0(caches[0], table, shape, plan, qRef, o, g.RunAndRead),
                BaselineKey = dtype == DType.F16 ? null : BenchCase.MakeKey(op, "kv f16", shapeText, gpu.Name),
                ExtraBaselines = paged ? new Dictionary<string, string> { ["vs contiguous"] = BenchCase.MakeKey("decode contiguous", format, shapeText, gpu.Name) } : null,
                Resources = new Disposables([g.Resources, template, .. caches]),
            };
        }
        // Paged rows also time the same data in contiguous pages in alternation with themselves (BenchCase.Paired): their
        // "vs contiguous" is then a ratio of runs milliseconds apart, not of two rows a minute apart.
        // Quantized and fp8 paged rows also time the same values in an fp16 cache with the same page placement ("vs fp16", the
        // int4 ≥ 3× fp16 target's ratio), in alternation too.
        PagedKvCache[] twin = [], fp16Twin = [];
        var pairedRuns = new List<PairedRun>();
        if (paged && !inCache)
        {
            var (twinCaches, _, twinPlan) = Build(Enumerable.Range(0, numPages).ToArray(), template);
            twin = twinCaches;
            float[] o2 = new float[o.Length], lse2 = new float[lse.Length];
            pairedRuns.Add(new PairedRun("vs contiguous", it => PagedDecode.Run(twinPlan, q, twin[it % copies], o2, lse2, options)));
            if (dtype is DType.I8 or DType.I4 or DType.F8E4M3 or DType.F8E5M2)
            {
                using var fp16Template = Template(pageSize, DType.F16, layout, KvScaleMode.None);
                var (fp16Caches, _, fp16Plan) = Build(placement, fp16Template);
                fp16Twin = fp16Caches;
                float[] o3 = new float[o.Length], lse3 = new float[lse.Length];
                pairedRuns.Add(new PairedRun("vs fp16", it => PagedDecode.Run(fp16Plan, q, fp16Twin[it % copies], o3, lse3, options)));
            }
        }
        return new BenchCase
        {
            Op = op, Format = format, Shape = shapeText, Backend = "cpu", Path = ctx.CpuPath,
            Bytes = kvBytes + 8.0 * q.Length,
            Flops = 4.0 * batch * len * QoHeads * HeadDim,
            Run = it => PagedDecode.Run(plan, q, caches[it % copies], o, lse, options),
            Verify = () => VerifySequence0(caches[0], table, shape, plan, qRef, o, () => PagedDecode.Run(plan, q, caches[0], o, default)),
            BaselineKey = format == "kv f16" ? null : BenchCase.MakeKey(op, "kv f16", shapeText, "cpu"),
            ExtraBaselines = inCache ? null : Extra(q8, op, format, shapeText),
            Paired = pairedRuns.Count == 0 ? null : pairedRuns,
            RateBaselines = len >= LongContext && !inCache
                ? new Dictionary<string, string> { ["vs in-cache"] = BenchCase.MakeKey(InCacheOp, format.StartsWith("kv f16", StringComparison.Ordinal) ? "kv f16" : format, InCacheShape(batch), "cpu") }
                : null,
            Note = inCache ? $"{kvBytes / (1 << 20):F0} MB pool, read hot; {plan.WorkItemCount} items" : $"{plan.WorkItemCount} items, split {plan.SplitCount(0)}×{plan.ChunkPages} pages",
            Resources = new Disposables([template, .. caches, .. twin, .. fp16Twin]),
        };
    }

    /// <summary>A plan on the GPU backend: the cache, queries, outputs and lse uploaded once; <c>Run</c> launches and synchronizes
    /// (for timing), <c>RunAndRead</c> leaves the outputs in <paramref name="o"/> (for the check).</summary>
    private static (Action<int> Run, Action RunAndRead, IDisposable Resources) GpuRunner(Kernels.Gpu.GpuBackend gpu, AttentionPlan plan,
        PagedKvCache cache, float[] q, float[] o, int rows)
    {
        var device = gpu.UploadKvCache(cache);
        var qT = gpu.Upload(q, rows, QoHeads, HeadDim);
        var oT = (Kernels.Gpu.GpuTensor<float>)gpu.Allocate<float>(rows, QoHeads, HeadDim);
        var lseT = gpu.Allocate<float>(rows, QoHeads);
        return (_ =>
        {
            gpu.Attention(plan, qT, device, oT, lseT);
            gpu.Synchronize();
        }, () =>
        {
            gpu.Attention(plan, qT, device, oT, lseT);
            oT.CopyTo(o);
        }, new Disposables([device, qT, oT, lseT]));
    }

    /// <summary>A pure read of the same fp16 K and V pools (32 KB per page and pool here) in the decode plan's page order and
    /// work split: what the memory system alone charges for scattered pages.</summary>
    private static BenchCase ReadCase(BenchContext ctx, int batch, int len, bool paged)
    {
        int pagesPerSeq = (len + PageSize - 1) / PageSize, numPages = batch * pagesPerSeq;
        var indptr = Enumerable.Range(0, batch + 1).Select(b => b * pagesPerSeq).ToArray();
        var table = new PageTable(indptr, Enumerable.Range(0, numPages).ToArray(), Enumerable.Repeat(len - (pagesPerSeq - 1) * PageSize, batch).ToArray(), PageSize);
        var plan = DecodePlanner.Plan(table, new AttentionShape(QoHeads, KvHeads, HeadDim), numPages, new AttentionWorkspace(), targetItems: CpuTargetItems(ctx));
        int itemPages = plan.ChunkPages > 0 ? Math.Min(plan.ChunkPages, pagesPerSeq) : pagesPerSeq;
        var read = new PageRead(numPages, (long)PageSize * KvHeads * HeadDim * 2, paged, itemPages, pagesPerSeq);
        var twin = paged ? new PageRead(numPages, (long)PageSize * KvHeads * HeadDim * 2, false, itemPages, pagesPerSeq) : null;
        string shape = $"b={batch} ctx={len}";
        int threads = ctx.Options.EffectiveParallelism;
        return new BenchCase
        {
            Op = paged ? "page read" : "page read contiguous", Format = "kv f16 bytes", Shape = shape, Backend = "cpu", Path = "Vector512 loads",
            Bytes = read.Bytes,
            Run = _ => read.Run(threads),
            Verify = () => read.Verify() ? null : "a page was not read",
            Paired = twin is null ? null : [new PairedRun("vs contiguous", _ => twin.Run(threads))],
            Note = $"no arithmetic; {itemPages} pages per item, next page prefetched",
            Resources = twin is null ? read : new Disposables([read, twin]),
        };
    }

    /// <summary>fp16 NHD pools of <paramref name="numPages"/> 16-token pages filled from the template, page i of the data at
    /// <c>placement[i]</c> (a shuffle with <paramref name="seed"/>); enough copies on the CPU that each run reads from DRAM
    /// (<see cref="BenchContext.ColdCopies"/>), one on a GPU. kvBytes counts K and V.</summary>
    private static (PagedKvCache[] Caches, int[] Placement, double KvBytes) ScatteredF16Pools(BenchContext ctx, int numPages, int seed, Kernels.Gpu.GpuBackend? gpu)
    {
        using var template = Template(PageSize, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        double kvBytes = 2.0 * PageSize * KvHeads * template.RowBytes * numPages;
        int copies = gpu is null ? ctx.ColdCopies(kvBytes) : 1;
        int[] placement = Enumerable.Range(0, numPages).ToArray();
        new Random(seed).Shuffle(placement);
        var caches = new PagedKvCache[copies];
        for (int c = 0; c < copies; c++)
        {
            caches[c] = new PagedKvCache(numPages, PageSize, KvHeads, HeadDim, DType.F16, KvLayout.Nhd, KvScaleMode.None);
            for (int i = 0; i < numPages; i++) caches[c].CopyPageFrom(template, i % TemplatePages, placement[i]);
        }
        return (caches, placement, kvBytes);
    }

    /// <summary>Template pages of one format: the same random values (seed 7) for every format, quantized as it stores them.</summary>
    private static PagedKvCache Template(int pageSize, DType dtype, KvLayout layout, KvScaleMode mode)
    {
        var template = new PagedKvCache(TemplatePages, pageSize, KvHeads, HeadDim, dtype, layout, mode);
        var rng = new Random(7);
        var k = new float[KvHeads * HeadDim];
        var v = new float[k.Length];
        for (int p = 0; p < TemplatePages; p++)
            for (int s = 0; s < pageSize; s++)
            {
                for (int i = 0; i < k.Length; i++)
                {
                    k[i] = (float)(rng.NextDouble() * 2 - 1);
                    v[i] = (float)(rng.NextDouble() * 2 - 1);
                }
                template.WriteToken(p, s, k, v);
            }
        return template;
    }

    /// <summary>Split-KV work items for the CPU cases: <see cref="Kernels.Cpu.CpuBackend.DecodeItemsPerThread"/> per thread.</summary>
    private static int CpuTargetItems(BenchContext ctx) => Kernels.Cpu.CpuBackend.DecodeItemsPerThread * ctx.Options.EffectiveParallelism; // = CpuBackend.DecodeTargetItems

    /// <summary>The split-KV target of the backend a case runs on, as a runtime would plan with it.</summary>
    private static int TargetItems(BenchContext ctx, Kernels.Gpu.GpuBackend? gpu) => gpu?.DecodeTargetItems ?? CpuTargetItems(ctx);

    /// <summary>The page ids, sequence by sequence, that a <see cref="PageAllocator"/> with <paramref name="placement"/> gives
    /// <paramref name="batch"/> sequences growing together from an empty pool of exactly their pages, one page each in turn.</summary>
    private static int[] GrownPages(int batch, int pagesPerSeq, int pageSize, PagePlacement placement)
    {
        using var pool = new PagedKvCache(batch * pagesPerSeq, pageSize, 1, 8, DType.F16); // page ids only: never written
        var alloc = new PageAllocator(pool, placement);
        var ids = Enumerable.Range(0, batch).Select(_ => alloc.Create()).ToArray();
        for (int p = 0; p < pagesPerSeq; p++)
            foreach (int id in ids) alloc.Reserve(id, pageSize);
        return [.. ids.SelectMany(alloc.Pages)];
    }

    private static Dictionary<string, string>? Extra(bool q8, string op, string format, string shape)
    {
        var extra = new Dictionary<string, string>();
        if (q8) extra["vs fp32 q"] = BenchCase.MakeKey(op, format[..^3], shape, "cpu");
        return extra.Count == 0 ? null : extra;
    }

    /// <summary>Checks the first kv head's query group of sequence 0 against a double-precision softmax over the dequantized cache.</summary>
    private static string? VerifySequence0(PagedKvCache cache, PageTable table, AttentionShape shape, AttentionPlan plan, float[] q, float[] o, Action run)
    {
        run();
        int len = table.KvLength(0), d = shape.HeadDim, g = shape.GroupSize;
        var keys = new float[len * d];
        var values = new float[len * d];
        for (int t = 0; t < len; t++)
        {
            int page = table.Indices[t / table.PageSize];
            cache.ReadKey(page, t % table.PageSize, 0, keys.AsSpan(t * d, d));
            cache.ReadValue(page, t % table.PageSize, 0, values.AsSpan(t * d, d));
        }
        var expected = new float[g * d];
        var scale = new double[g * d];
        double maxLogitMag = 0;
        var logits = new double[len];
        for (int h = 0; h < g; h++)
        {
            double max = double.NegativeInfinity;
            for (int t = 0; t < len; t++)
            {
                double dot = 0, mag = 0;
                for (int c = 0; c < d; c++)
                {
                    dot += (double)q[h * d + c] * keys[t * d + c];
                    mag += Math.Abs((double)q[h * d + c] * keys[t * d + c]);
                }
                logits[t] = dot * plan.SmScale;
                maxLogitMag = Math.Max(maxLogitMag, mag * plan.SmScale);
                max = Math.Max(max, logits[t]);
            }
            double sum = 0;
            var acc = new double[d];
            var accAbs = new double[d];
            for (int t = 0; t < len; t++)
            {
                double p = Math.Exp(logits[t] - max);
                sum += p;
                for (int c = 0; c < d; c++)
                {
                    acc[c] += p * values[t * d + c];
                    accAbs[c] += p * Math.Abs(values[t * d + c]);
                }
            }
            for (int c = 0; c < d; c++)
            {
                expected[h * d + c] = (float)(acc[c] / sum);
                scale[h * d + c] = accAbs[c] / sum;
            }
        }
        double rel = 2 * (1.01 * d + 2) * Math.ScaleB(1.0, -24) * maxLogitMag + (len + 16) * Math.ScaleB(1.0, -23);
        var r = ResultComparer.Compare(expected, o.AsSpan(0, g * d), scale, rel, 1e-30);
        return r.Passed ? null : r.ToString();
    }
}
