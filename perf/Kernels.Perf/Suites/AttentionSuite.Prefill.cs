using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Attention;
using Kernels.Perf.Harness;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Suites;

public sealed partial class AttentionSuite
{
    private const int SparseTokens = 1024, SparseBlock = 64;

    /// <summary>Prefill and block-sparse attention, fp16 KV, same heads as decode. "prefill": causal, one 2048-token prompt (not with --quick)
    /// and a ragged batch of four (1024, 512, 256, 256), each attending to its own keys (qo_len = kv_len), pages scattered.
    /// "block-sparse": 1024 queries × 1024 keys in 64 × 64 blocks, each block row keeping its diagonal block and 6 random
    /// others of 16 (7/16 ≈ 44 %, non-causal), against the same kernel with every block kept ("block-sparse dense"): the
    /// time ratio shows that excluded blocks cost nothing. FLOPs count the kept (query, key) pairs only.</summary>
    private static IEnumerable<BenchCase> PrefillCases(BenchContext ctx)
    {
        (string Shape, int[] Lens)[] prefill = [("b=1 qo=kv=2048 causal", [2048]), ("b=4 qo=kv=1024+512+256+256 causal", [1024, 512, 256, 256])];
        foreach (var (shape, lens) in prefill)
        {
            if (ctx.Quick && lens.Length == 1) continue; // --quick: the ragged batch only
            if (ctx.Cpu && ctx.Wants("prefill", "kv f16", shape, "cpu")) yield return PrefillCase(ctx, shape, lens, null);
            if (ctx.Gpu is { } gpu && ctx.Wants("prefill", "kv f16", shape, gpu.Name)) yield return PrefillCase(ctx, shape, lens, gpu);
        }
        if (ctx.Quick) yield break; // --quick: no block-sparse pair or tree verification
        string treeShape = $"b={TreeBatch} prompt={TreePrompt} tree={TreeNodes}";
        foreach (bool masked in new[] { false, true })
        {
            string op = masked ? "tree verify" : "tree verify causal";
            if (ctx.Cpu && ctx.Wants(op, "kv f16", treeShape, "cpu")) yield return TreeCase(ctx, treeShape, masked, null);
            if (ctx.Gpu is { } gpu && ctx.Wants(op, "kv f16", treeShape, gpu.Name)) yield return TreeCase(ctx, treeShape, masked, gpu);
        }
        string sparseShape = $"M=N={SparseTokens} R=C={SparseBlock}";
        foreach (bool dense in new[] { true, false })
        {
            string op = dense ? "block-sparse dense" : "block-sparse";
            if (ctx.Cpu && ctx.Wants(op, "kv f16", sparseShape, "cpu")) yield return SparseCase(ctx, sparseShape, dense, null);
            if (ctx.Gpu is { } gpu && ctx.Wants(op, "kv f16", sparseShape, gpu.Name)) yield return SparseCase(ctx, sparseShape, dense, gpu);
        }
    }

    /// <summary>The plan's work items, and its split-KV chunk size when it split.</summary>
    private static string ItemsNote(PrefillPlan plan) =>
        plan.PartialSlots > 0 ? $"{plan.WorkItemCount} items (split-KV, chunks ≤ {plan.ChunkPages} pages)" : $"{plan.WorkItemCount} items";

    private static BenchCase PrefillCase(BenchContext ctx, string shapeText, int[] lens, Kernels.Gpu.GpuBackend? gpu)
    {
        int[] pages = lens.Select(l => (l + PageSize - 1) / PageSize).ToArray();
        int numPages = pages.Sum();
        int[] placement = Enumerable.Range(0, numPages).ToArray();
        new Random(13).Shuffle(placement);
        var template = Template(PageSize, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        var cache = new PagedKvCache(numPages, PageSize, KvHeads, HeadDim, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        for (int i = 0; i < numPages; i++) cache.CopyPageFrom(template, i % TemplatePages, placement[i]);
        var indptr = new int[lens.Length + 1];
        var qoIndptr = new int[lens.Length + 1];
        for (int b = 0; b < lens.Length; b++)
        {
            indptr[b + 1] = indptr[b] + pages[b];
            qoIndptr[b + 1] = qoIndptr[b] + lens[b];
        }
        var table = new PageTable(indptr, placement, lens.Select((l, b) => l - (pages[b] - 1) * PageSize).ToArray(), PageSize);
        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        var plan = PrefillPlanner.Plan(qoIndptr, table, shape, numPages, null, null, new AttentionWorkspace(), TargetItems(ctx, gpu));
        int rows = qoIndptr[^1];
        float[] q = DenseSuite.RandomFloats(rows * QoHeads * HeadDim, 5), o = new float[q.Length], lse = new float[rows * QoHeads];
        double pairs = lens.Sum(l => (double)l * (l + 1) / 2);
        double bytes = 2.0 * numPages * PageSize * KvHeads * cache.RowBytes + 8.0 * q.Length;
        // The last query of request 0 sees all of its keys: checked like a decode of sequence 0 (first GQA group).
        long last = (long)(lens[0] - 1) * QoHeads * HeadDim;
        string? Verify(Action run)
        {
            run();
            return VerifySequence0(cache, table, shape, plan, q[(int)last..], o[(int)last..], () => { });
        }
        var c = AttentionRunner(ctx, plan, cache, q, o, lse, rows, gpu);
        return new BenchCase
        {
            Op = "prefill", Format = "kv f16", Shape = shapeText, Backend = gpu?.Name ?? "cpu", Path = gpu?.Accelerator.Name ?? ctx.CpuPath,
            Bytes = bytes, Flops = 4.0 * pairs * QoHeads * HeadDim,
            Run = c.Run, Verify = () => Verify(c.RunAndRead),
            Note = ItemsNote(plan),
            Resources = new Disposables([c.Resources, cache, template]),
        };
    }

    private static BenchCase SparseCase(BenchContext ctx, string shapeText, bool dense, Kernels.Gpu.GpuBackend? gpu)
    {
        int blocks = SparseTokens / SparseBlock;
        var rng = new Random(14);
        var indptr = new List<int> { 0 };
        var indices = new List<int>();
        for (int i = 0; i < blocks; i++)
        {
            var row = dense ? Enumerable.Range(0, blocks) : Enumerable.Range(0, blocks).Where(j => j != i).OrderBy(_ => rng.Next()).Take(6).Append(i).Order();
            indices.AddRange(row);
            indptr.Add(indices.Count);
        }
        var mask = new BlockSparseMask([.. indptr], [.. indices], SparseTokens, SparseTokens, SparseBlock, SparseBlock);
        var template = Template(SparseBlock, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        var cache = new PagedKvCache(blocks, SparseBlock, KvHeads, HeadDim, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        for (int j = 0; j < blocks; j++) cache.CopyPageFrom(template, j % TemplatePages, j);
        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        var options = new AttentionOptions { Causal = false };
        var plan = PrefillPlanner.PlanBlockSparse(mask, shape, blocks, options, null, new AttentionWorkspace(), TargetItems(ctx, gpu));
        float[] q = DenseSuite.RandomFloats(SparseTokens * QoHeads * HeadDim, 6), o = new float[q.Length], lse = new float[SparseTokens * QoHeads];
        double pairs = (double)indices.Count * SparseBlock * SparseBlock;
        double bytes = 2.0 * indices.Count * SparseBlock * KvHeads * cache.RowBytes + 8.0 * q.Length;
        // Rows 0 and M − 1 against the oracle over the dense K/V with the block mask.
        var keys = new float[SparseTokens * KvHeads * HeadDim];
        var values = new float[keys.Length];
        for (int t = 0; t < SparseTokens; t++)
            for (int h = 0; h < KvHeads; h++)
            {
                cache.ReadKey(t / SparseBlock, t % SparseBlock, h, keys.AsSpan((t * KvHeads + h) * HeadDim, HeadDim));
                cache.ReadValue(t / SparseBlock, t % SparseBlock, h, values.AsSpan((t * KvHeads + h) * HeadDim, HeadDim));
            }
        string? Verify(Action run)
        {
            run();
            foreach (int i in new[] { 0, SparseTokens - 1 })
            {
                int n = QoHeads * HeadDim;
                float[] expected = new float[n];
                double[] magnitude = new double[n];
                AttentionReference.Dense(q.AsSpan(i * n, n), keys, values, 1, SparseTokens, shape, options, expected, default, (_, j) => mask.Contains(i, j), magnitude);
                var r = ResultComparer.Compare(expected, o.AsSpan(i * n, n), magnitude, 1e-4, 1e-30);
                if (!r.Passed) return $"row {i}: {r}";
            }
            return null;
        }
        var c = AttentionRunner(ctx, plan, cache, q, o, lse, SparseTokens, gpu);
        string op = dense ? "block-sparse dense" : "block-sparse";
        return new BenchCase
        {
            Op = op, Format = "kv f16", Shape = shapeText, Backend = gpu?.Name ?? "cpu", Path = gpu?.Accelerator.Name ?? ctx.CpuPath,
            Bytes = bytes, Flops = 4.0 * pairs * QoHeads * HeadDim,
            Run = c.Run, Verify = () => Verify(c.RunAndRead),
            BaselineKey = dense ? null : BenchCase.MakeKey("block-sparse dense", "kv f16", shapeText, gpu?.Name ?? "cpu"),
            Note = $"{indices.Count} of {blocks * blocks} blocks kept; {ItemsNote(plan)}",
            Resources = new Disposables([c.Resources, cache, template]),
        };
    }

    private const int TreeBatch = 8, TreePrompt = 2048, TreeNodes = 64;

    /// <summary>Tree speculative decoding's verification step (<see cref="CustomMask"/>): 8 requests, each a 2048-token prompt
    /// followed by a 64-node draft tree (random parents) whose nodes are the request's last 64 keys and its 64 query rows;
    /// each node attends to the prompt and its own ancestors. "tree verify causal" runs the same shape with the causal mask
    /// instead (every node sees every earlier node), so the pair shows what the element-wise mask costs. FLOPs count the kept
    /// (query, key) pairs; bytes the K/V read once plus q and output.</summary>
    private static BenchCase TreeCase(BenchContext ctx, string shapeText, bool masked, Kernels.Gpu.GpuBackend? gpu)
    {
        int len = TreePrompt + TreeNodes, pagesPer = (len + PageSize - 1) / PageSize, numPages = TreeBatch * pagesPer;
        int[] placement = Enumerable.Range(0, numPages).ToArray();
        new Random(15).Shuffle(placement);
        var template = Template(PageSize, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        var cache = new PagedKvCache(numPages, PageSize, KvHeads, HeadDim, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        for (int i = 0; i < numPages; i++) cache.CopyPageFrom(template, i % TemplatePages, placement[i]);
        int[] indptr = Enumerable.Range(0, TreeBatch + 1).Select(b => b * pagesPer).ToArray();
        int[] qoIndptr = Enumerable.Range(0, TreeBatch + 1).Select(b => b * TreeNodes).ToArray();
        int[] kvLens = Enumerable.Repeat(len, TreeBatch).ToArray();
        var table = new PageTable(indptr, placement, Enumerable.Repeat(len - (pagesPer - 1) * PageSize, TreeBatch).ToArray(), PageSize);
        var rng = new Random(16);
        int[][] parent = Enumerable.Range(0, TreeBatch).Select(_ => Enumerable.Range(0, TreeNodes).Select(i => i == 0 ? -1 : rng.Next(0, i)).ToArray()).ToArray();
        var mask = CustomMask.Create(qoIndptr, kvLens, (b, i, j) =>
        {
            if (j < TreePrompt) return true;
            for (int n = i; n >= 0; n = parent[b][n])
                if (n == j - TreePrompt) return true;
            return false;
        });
        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        var options = new AttentionOptions { Causal = !masked };
        var plan = PrefillPlanner.Plan(qoIndptr, table, shape, numPages, options, masked ? mask : null, new AttentionWorkspace(), TargetItems(ctx, gpu));
        int rows = qoIndptr[^1];
        float[] q = DenseSuite.RandomFloats(rows * QoHeads * HeadDim, 7), o = new float[q.Length], lse = new float[rows * QoHeads];
        double pairs = 0;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < len; j++)
                if (masked ? mask.IsKept(r, j) : j <= TreePrompt + r % TreeNodes) pairs++;
        double bytes = 2.0 * numPages * PageSize * KvHeads * cache.RowBytes + 8.0 * q.Length;
        // The last node of request 0 (and, with the mask, its ancestors only) against the oracle over the gathered keys.
        var (keys, values) = AttentionReference.Gather(cache, table, 0);
        string? Verify(Action run)
        {
            run();
            int i = TreeNodes - 1, n = QoHeads * HeadDim;
            float[] expected = new float[n];
            double[] magnitude = new double[n];
            Func<int, int, bool> keep = masked ? (_, j) => mask.IsKept(i, j) : (_, j) => j <= TreePrompt + i;
            AttentionReference.Dense(q.AsSpan(i * n, n), keys, values, 1, len, shape, new AttentionOptions { Causal = false }, expected, default, keep, magnitude);
            var r = ResultComparer.Compare(expected, o.AsSpan(i * n, n), magnitude, 1e-4, 1e-30);
            return r.Passed ? null : $"row {i}: {r}";
        }
        var c = AttentionRunner(ctx, plan, cache, q, o, lse, rows, gpu);
        return new BenchCase
        {
            Op = masked ? "tree verify" : "tree verify causal", Format = "kv f16", Shape = shapeText, Backend = gpu?.Name ?? "cpu",
            Path = gpu?.Accelerator.Name ?? ctx.CpuPath, Bytes = bytes, Flops = 4.0 * pairs * QoHeads * HeadDim,
            Run = c.Run, Verify = () => Verify(c.RunAndRead),
            BaselineKey = masked ? BenchCase.MakeKey("tree verify causal", "kv f16", shapeText, gpu?.Name ?? "cpu") : null,
            Note = $"{pairs / rows:F0} keys kept per row; {ItemsNote(plan)}",
            Resources = new Disposables([c.Resources, cache, template]),
        };
    }

    /// <summary>How a prefill-type plan runs on the CPU or the GPU (<see cref="GpuRunner"/>).</summary>
    private static (Action<int> Run, Action RunAndRead, IDisposable Resources) AttentionRunner(BenchContext ctx, PrefillPlan plan, PagedKvCache cache,
        float[] q, float[] o, float[] lse, int rows, Kernels.Gpu.GpuBackend? gpu)
    {
        if (gpu is not null) return GpuRunner(gpu, plan, cache, q, o, rows);
        var options = ctx.Options;
        return (_ => PagedPrefill.Run(plan, q, cache, o, lse, options), () => PagedPrefill.Run(plan, q, cache, o, lse, options), new Disposables());
    }
}
