using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Positional;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Perf.Harness;

namespace Kernels.Perf.Suites;

public sealed partial class AttentionSuite
{
    private const int RopeMaxPositions = 8192;

    /// <summary>Rotary position embedding (<see cref="Kernels.Attention.IRopeOps.ApplyRope"/>) of Llama-3-8B's q and k
    /// (32 + 8 heads × 128, fp32, out of place) for a 2048-token prefill chunk and a 32-token decode batch, at random positions
    /// below 8192, in the NeoX and GPT-J pair layouts. Bytes: q and k read and written, plus each token's table row
    /// (rotary_dim floats) and position. Before timing, sampled tokens are compared with <see cref="RopeReference"/>.</summary>
    private static IEnumerable<BenchCase> RopeCases(BenchContext ctx)
    {
        foreach (int tokens in new[] { 2048, 32 })
            foreach (bool interleaved in new[] { false, true })
            {
                if (ctx.Quick && (interleaved || tokens != 2048)) continue;
                string format = interleaved ? "gptj" : "neox", shape = $"tokens={tokens} heads={QoHeads}+{KvHeads}";
                if (ctx.Cpu && ctx.Wants("rope", format, shape, "cpu")) yield return RopeCase(ctx, tokens, interleaved, format, shape, null);
                if (ctx.Gpu is { } gpu && ctx.Wants("rope", format, shape, gpu.Name)) yield return RopeCase(ctx, tokens, interleaved, format, shape, gpu);
            }
    }

    /// <summary>fp16 decode at batch 1 × 4096 (scattered 16-token pages) with in-kernel RoPE (<c>AttentionOptions.Rope</c>):
    /// every key rotated at its position on every call. "vs no rope" times the same plan shape without it, in alternation
    /// (the cost of keeping keys un-rotated in the cache). Verified against <see cref="Kernels.Attention.Reference.AttentionReference"/>
    /// with the same table. Not in <c>--quick</c>.</summary>
    private static IEnumerable<BenchCase> RopeDecodeCases(BenchContext ctx)
    {
        const int Len = 4096;
        const string Format = "kv f16", Shape = "b=1 ctx=4096";
        if (ctx.Quick) yield break;
        if (ctx.Cpu && ctx.Wants("decode rope", Format, Shape, "cpu")) yield return RopeDecodeCase(ctx, Len, Format, Shape, null);
        if (ctx.Gpu is { } gpu && ctx.Wants("decode rope", Format, Shape, gpu.Name)) yield return RopeDecodeCase(ctx, Len, Format, Shape, gpu);
    }

    private static BenchCase RopeDecodeCase(BenchContext ctx, int len, string format, string shapeText, Kernels.Gpu.GpuBackend? gpu)
    {
        int pages = len / PageSize;
        var template = Template(PageSize, DType.F16, KvLayout.Nhd, KvScaleMode.None);
        var cache = new PagedKvCache(pages, PageSize, KvHeads, HeadDim, DType.F16);
        int[] placement = Enumerable.Range(0, pages).ToArray();
        new Random(11).Shuffle(placement);
        for (int i = 0; i < pages; i++) cache.CopyPageFrom(template, i % TemplatePages, placement[i]);
        var table = new PageTable([0, pages], placement, [PageSize], PageSize);
        var shape = new AttentionShape(QoHeads, KvHeads, HeadDim);
        var rope = new RopeTable(new RopeOptions { Theta = 500000 }, HeadDim, len);
        int targetItems = gpu?.DecodeTargetItems ?? CpuTargetItems(ctx);
        var opts = new AttentionOptions { Rope = rope };
        var plan = DecodePlanner.Plan(table, shape, pages, new AttentionWorkspace(), opts, targetItems: targetItems);
        var plain = DecodePlanner.Plan(table, shape, pages, new AttentionWorkspace(), targetItems: targetItems);
        float[] q = DenseSuite.RandomFloats(QoHeads * HeadDim, 3);
        float[] o = new float[q.Length], lse = new float[QoHeads], o2 = new float[q.Length], lse2 = new float[QoHeads];
        double bytes = 2.0 * len * KvHeads * HeadDim * 2 + 8.0 * q.Length;
        string? Check()
        {
            float[] e = new float[q.Length], le = new float[QoHeads];
            Kernels.Attention.Reference.AttentionReference.Decode(q, cache, table, shape, opts, e, le);
            double scale = e.Max(Math.Abs) + 1e-6, worst = 0;
            for (int i = 0; i < e.Length; i++) worst = Math.Max(worst, Math.Abs(e[i] - o[i]) / scale);
            return worst <= 1e-4 ? null : $"decode rope: max error {worst:E2} of the largest output (bound 1e-4)";
        }
        if (gpu is not null)
        {
            var g = GpuRunner(gpu, plan, cache, q, o, 1);
            return new BenchCase
            {
                Op = "decode rope", Format = format, Shape = shapeText, Backend = gpu.Name, Path = gpu.Accelerator.Name,
                Bytes = bytes, Flops = 4.0 * len * QoHeads * HeadDim, Run = g.Run,
                Verify = () =>
                {
                    g.RunAndRead();
                    return Check();
                },
                Resources = new Disposables([g.Resources, template, cache]),
            };
        }
        var options = ctx.Options;
        return new BenchCase
        {
            Op = "decode rope", Format = format, Shape = shapeText, Backend = "cpu", Path = ctx.CpuPath,
            Bytes = bytes, Flops = 4.0 * len * QoHeads * HeadDim,
            Run = _ => PagedDecode.Run(plan, q, cache, o, lse, options),
            Verify = () =>
            {
                PagedDecode.Run(plan, q, cache, o, lse, options);
                return Check();
            },
            Paired = [new PairedRun("vs no rope", _ => PagedDecode.Run(plain, q, cache, o2, lse2, options))],
            Note = $"keys rotated in the kernel; {plan.WorkItemCount} items",
            Resources = new Disposables([template, cache]),
        };
    }

    private static BenchCase RopeCase(BenchContext ctx, int tokens, bool interleaved, string format, string shape, Kernels.Gpu.GpuBackend? gpu)
    {
        var table = new RopeTable(new RopeOptions { Theta = 500000, Interleaved = interleaved }, HeadDim, RopeMaxPositions);
        var rng = new Random(21);
        int[] pos = Enumerable.Range(0, tokens).Select(_ => rng.Next(RopeMaxPositions)).ToArray();
        float[] q = DenseSuite.RandomFloats(tokens * QoHeads * HeadDim, 7), k = DenseSuite.RandomFloats(tokens * KvHeads * HeadDim, 8);
        double bytes = 2.0 * (q.Length + k.Length) * 4 + (double)tokens * (table.RotaryDim * 4 + 4);
        IKernelBackend backend = gpu is null ? new CpuBackend(ctx.Options) : gpu;
        var ops = (Kernels.Attention.IRopeOps)backend;
        var pT = backend.Allocate<int>(tokens);
        var qT = backend.Allocate<float>(tokens, QoHeads, HeadDim);
        var kT = backend.Allocate<float>(tokens, KvHeads, HeadDim);
        var qO = backend.Allocate<float>(tokens, QoHeads, HeadDim);
        var kO = backend.Allocate<float>(tokens, KvHeads, HeadDim);
        pT.CopyFrom(pos);
        qT.CopyFrom(q);
        kT.CopyFrom(k);
        void Run()
        {
            ops.ApplyRope(table, pT, qT, qO);
            ops.ApplyRope(table, pT, kT, kO);
        }
        return new BenchCase
        {
            Op = "rope", Format = format, Shape = shape, Backend = gpu?.Name ?? "cpu",
            Path = gpu is null ? $"{CpuIsa.Resolve(ctx.Options)}, {ctx.Options.EffectiveParallelism} threads" : gpu.Accelerator.Name,
            Bytes = bytes,
            Run = _ =>
            {
                Run();
                backend.Synchronize();
            },
            Verify = () =>
            {
                Run();
                backend.Synchronize();
                return VerifyRope(table, pos, q, qO.ToArray(), QoHeads) ?? VerifyRope(table, pos, k, kO.ToArray(), KvHeads);
            },
            BaselineKey = gpu is null ? null : BenchCase.MakeKey("rope", format, shape, "cpu"),
            Note = gpu is null ? "RopeKernel.Apply, q then k" : null,
            Resources = new Disposables([pT, qT, kT, qO, kO]),
        };
    }

    /// <summary>Every 61st token against the double-precision oracle (within 2⁻²¹·(|x1| + |x2|), twice the tests' bound).</summary>
    private static string? VerifyRope(RopeTable table, int[] pos, float[] x, float[] actual, int heads)
    {
        int row = heads * HeadDim, half = table.RotaryDim / 2;
        var expected = new float[row];
        for (int t = 0; t < pos.Length; t += 61)
        {
            RopeReference.Apply(table.Options, HeadDim, pos.AsSpan(t, 1), x.AsSpan(t * row, row), expected);
            for (int j = 0; j < row; j++)
            {
                int d = j % HeadDim, partner = table.Interleaved ? d ^ 1 : (d < half ? d + half : d - half);
                double mag = Math.Abs(x[t * row + j]) + Math.Abs(x[t * row + j - d + partner]);
                if (Math.Abs((double)expected[j] - actual[t * row + j]) > Math.ScaleB(mag, -21) + 1e-30)
                    return $"token {t} element {j}: expected {expected[j]}, got {actual[t * row + j]}";
            }
        }
        return null;
    }
}
