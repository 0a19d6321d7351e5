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
    /// <summary>A decode step with a per-key mask (a retrieval or token-tree mask: 7 of 8 keys kept at random, and the last),
    /// fp16, 16-token pages scattered: a prefill plan of one query row per sequence with a <see cref="CustomMask"/> (decode
    /// plans take none, as FlashInfer's), planned with a workspace and the backend's target, so its items take every kv head
    /// and split long keys as decode's do. "vs decode" times the unmasked decode plan over the same pages in alternation: what
    /// the mask and the prefill plan cost. Bytes as decode (every page holds kept keys) plus the mask bits.</summary>
    private static IEnumerable<BenchCase> MaskedDecodeCases(BenchContext ctx)
    {
        if (ctx.Quick) yield break;
        foreach (var (batch, len) in new[] { (1, LongContext), (8, 4096) })
        {
            string shape = $"b={batch} ctx={len}";
            if (ctx.Cpu && ctx.Wants("decode masked", "kv f16", shape, "cpu")) yield return MaskedDecodeCase(ctx, batch, len, null);
            if (ctx.Gpu is { } gpu && ctx.Wants("decode masked", "kv f16", shape, gpu.Name)) yield return MaskedDecodeCase(ctx, batch, len, gpu);
        }
    }

    private static BenchCase MaskedDecodeCase(BenchContext ctx, int batch, int len, Kernels.Gpu.GpuBackend? gpu)
    {
        int pagesPer = (len + PageSize - 1) / PageSize, numPages = batch * pagesPer;
        var (caches, placement, kvBytes) = ScatteredF16Pools(ctx, numPages, 17, gpu);
        int copies = caches.Length;
        var table = new PageTable(Enumerable.Range(0, batch + 1).Select(b => b * pagesPer).ToArray(), placement,
            Enumerable.Repeat(len - (pagesPer - 1) * PageSize, batch).ToArray(), PageSize);
        int[] qoIndptr = Enumerable.Range(0, batch + 1).ToArray();
        int[] kvLens = Enumerable.Repeat(len, batch).ToArray();
        static bool Keep(int b, int j, int len) => j == len - 1 || (uint)((j * 0x9E3779B1u) ^ (uint)(b * 0x85EBCA6Bu)) >> 29 != 0; // 7 of 8
        var mask = CustomMask.Create(qoIndptr, kvLens, (b, _, j) => Keep(b, j, len));
        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        int target = TargetItems(ctx, gpu);
        var plan = PrefillPlanner.Plan(qoIndptr, table, shape, numPages, null, mask, new AttentionWorkspace(), target);
        var decode = DecodePlanner.Plan(table, shape, numPages, new AttentionWorkspace(), targetItems: target);
        float[] q = DenseSuite.RandomFloats(batch * QoHeads * HeadDim, 8), o = new float[q.Length], lse = new float[batch * QoHeads];
        double kept = 0;
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < len; j++)
                if (Keep(b, j, len)) kept++;
        double bytes = kvBytes + 8.0 * q.Length + batch * len / 8.0;
        // Sequence 0 against the oracle over its gathered keys with the mask.
        var (keys, values) = AttentionReference.Gather(caches[0], table, 0);
        string? Verify(Action run)
        {
            run();
            int n = QoHeads * HeadDim;
            float[] expected = new float[n];
            double[] magnitude = new double[n];
            AttentionReference.Dense(q.AsSpan(0, n), keys, values, 1, len, shape, new AttentionOptions { Causal = false }, expected, default,
                (_, j) => Keep(0, j, len), magnitude);
            var r = ResultComparer.Compare(expected, o.AsSpan(0, n), magnitude, 1e-4, 1e-30);
            return r.Passed ? null : $"sequence 0: {r}";
        }
        string note = $"{kept / batch / len:P0} of keys kept; {ItemsNote(plan)}; decode plan {decode.WorkItemCount} items";
        string shapeText = $"b={batch} ctx={len}";
        if (gpu is not null)
        {
            var g = GpuRunner(gpu, plan, caches[0], q, o, batch);
            return new BenchCase
            {
                Op = "decode masked", Format = "kv f16", Shape = shapeText, Backend = gpu.Name, Path = gpu.Accelerator.Name,
                Bytes = bytes, Flops = 4.0 * kept * QoHeads * HeadDim, Run = g.Run, Verify = () => Verify(g.RunAndRead),
                ExtraBaselines = new Dictionary<string, string> { ["vs decode"] = BenchCase.MakeKey("decode", "kv f16", shapeText, gpu.Name) },
                Note = note, Resources = new Disposables([g.Resources, .. caches]),
            };
        }
        var options = ctx.Options;
        float[] o2 = new float[o.Length], lse2 = new float[lse.Length];
        return new BenchCase
        {
            Op = "decode masked", Format = "kv f16", Shape = shapeText, Backend = "cpu", Path = ctx.CpuPath,
            Bytes = bytes, Flops = 4.0 * kept * QoHeads * HeadDim,
            Run = it => PagedPrefill.Run(plan, q, caches[it % copies], o, lse, options),
            Verify = () => Verify(() => PagedPrefill.Run(plan, q, caches[0], o, lse, options)),
            Paired = [new PairedRun("vs decode", it => PagedDecode.Run(decode, q, caches[it % copies], o2, lse2, options))],
            Note = note, Resources = new Disposables([.. caches]),
        };
    }
}
