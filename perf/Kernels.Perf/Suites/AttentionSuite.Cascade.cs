using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Cpu.Attention;
using Kernels.Perf.Harness;

namespace Kernels.Perf.Suites;

public sealed partial class AttentionSuite
{
    private const int CascadeBatch = 32, SharedTokens = 4096, OwnTokens = 256;

    /// <summary>One shared level of a cascade bench case: <paramref name="Groups"/> equal groups of the batch, each sharing
    /// <paramref name="Tokens"/> tokens.</summary>
    private readonly record struct SharedLevel(int Groups, int Tokens);

    /// <summary>Cascade (shared-prefix) decode against flat decode of the same sequences, fp16, pages scattered through the
    /// pool: 32 sequences on one 4096-token prompt with 256 tokens of their own each (parallel sampling, or many requests on
    /// one system prompt), and a three-level case: a 2048-token system prompt shared by all 32, four conversations of 2048
    /// tokens shared by 8 sequences each, 128 tokens of their own. Flat decode's table repeats the shared pages in every
    /// sequence, so it reads them once per sequence; the cascade reads each level's pages once per tile of 16 sequences of a
    /// group. Bytes count the unique KV (each shared page once), so the rows' GB/s compare like their times; "vs flat" is
    /// timed in alternation.</summary>
    private static IEnumerable<BenchCase> CascadeCases(BenchContext ctx)
    {
        (SharedLevel[] Levels, int Own)[] cases = [([new(1, SharedTokens)], OwnTokens), ([new(1, 2048), new(4, 2048)], 128)];
        foreach (var (levels, own) in cases)
        {
            string shape = levels.Length == 1 ? $"b={CascadeBatch} shared={levels[0].Tokens} own={own}"
                : $"b={CascadeBatch} shared={string.Join('+', levels.Select(l => l.Groups == 1 ? $"{l.Tokens}" : $"{l.Groups}x{l.Tokens}"))} own={own}";
            foreach (bool cascade in new[] { false, true })
            {
                string op = cascade ? "cascade decode" : "decode flat";
                if (ctx.Quick && levels.Length > 1) continue;
                if (ctx.Cpu && ctx.Wants(op, "kv f16", shape, "cpu")) yield return CascadeCase(ctx, cascade, shape, levels, own, null);
                if (ctx.Gpu is { } gpu && ctx.Wants(op, "kv f16", shape, gpu.Name)) yield return CascadeCase(ctx, cascade, shape, levels, own, gpu);
            }
        }
    }

    private static BenchCase CascadeCase(BenchContext ctx, bool cascade, string shapeText, SharedLevel[] levels, int ownTokens, Kernels.Gpu.GpuBackend? gpu)
    {
        int ownPages = ownTokens / PageSize;
        int numPages = levels.Sum(l => l.Groups * (l.Tokens / PageSize)) + CascadeBatch * ownPages;
        var (caches, placement, kvBytes) = ScatteredF16Pools(ctx, numPages, 12, gpu);
        int copies = caches.Length;
        // Pages in placement order: each level's groups, then each sequence's own pages. Flat rows repeat the shared pages.
        var cascadeLevels = new CascadeLevel[levels.Length];
        var flatRows = Enumerable.Range(0, CascadeBatch).Select(_ => new List<int>()).ToArray();
        int next = 0;
        for (int l = 0; l < levels.Length; l++)
        {
            int per = levels[l].Tokens / PageSize, size = CascadeBatch / levels[l].Groups;
            int[] pages = placement[next..(next + levels[l].Groups * per)];
            next += pages.Length;
            for (int b = 0; b < CascadeBatch; b++) flatRows[b].AddRange(pages.Skip(b / size * per).Take(per));
            cascadeLevels[l] = new CascadeLevel(Enumerable.Range(0, levels[l].Groups + 1).Select(g => g * size).ToArray(),
                new PageTable(Enumerable.Range(0, levels[l].Groups + 1).Select(g => g * per).ToArray(), pages, Enumerable.Repeat(PageSize, levels[l].Groups).ToArray(), PageSize));
        }
        var suffixes = new PageTable(Enumerable.Range(0, CascadeBatch + 1).Select(b => b * ownPages).ToArray(), placement[next..],
            Enumerable.Repeat(PageSize, CascadeBatch).ToArray(), PageSize);
        for (int b = 0; b < CascadeBatch; b++) flatRows[b].AddRange(placement.Skip(next + b * ownPages).Take(ownPages));
        var flat = new PageTable(Enumerable.Range(0, CascadeBatch + 1).Select(b => flatRows.Take(b).Sum(r => r.Count)).ToArray(),
            flatRows.SelectMany(r => r).ToArray(), Enumerable.Repeat(PageSize, CascadeBatch).ToArray(), PageSize);
        int tokensPerSequence = levels.Sum(l => l.Tokens) + ownTokens;

        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        int targetItems = gpu is null ? CpuTargetItems(ctx) : gpu.DecodeTargetItems;
        var flatPlan = DecodePlanner.Plan(flat, shape, numPages, new AttentionWorkspace(), targetItems: targetItems);
        var cascadePlan = CascadePlanner.Plan(cascadeLevels, suffixes, shape, numPages, new AttentionWorkspace(), targetItems: targetItems);
        AttentionPlan plan = cascade ? cascadePlan : flatPlan;
        float[] q = DenseSuite.RandomFloats(CascadeBatch * QoHeads * HeadDim, 3);
        float[] o = new float[q.Length], lse = new float[CascadeBatch * QoHeads];
        string op = cascade ? "cascade decode" : "decode flat";
        double bytes = kvBytes + 8.0 * q.Length, flops = 4.0 * CascadeBatch * tokensPerSequence * QoHeads * HeadDim;
        string? baseline = cascade ? BenchCase.MakeKey("decode flat", "kv f16", shapeText, gpu?.Name ?? "cpu") : null;
        string note = cascade ? $"{string.Join(" + ", cascadePlan.SharedLevels.Select(l => l.WorkItemCount))} + {cascadePlan.Suffix.WorkItemCount} items; shared pages read once per 16 sequences of a group"
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
