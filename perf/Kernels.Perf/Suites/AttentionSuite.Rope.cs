using Kernels.Attention.Positional;
using Kernels.Cpu;
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
