using Kernels.Cpu.Fpx;
using Kernels.Gpu;
using Kernels.Perf.Harness;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Suites;

/// <summary>FP6 e3m2 / FP5 e2m2 (FP6-LLM TC-FPx) and INT6 (FlexQ W6A16, W6A8) GEMV/GEMM against dense bf16.</summary>
public sealed class FpxSuite : IBenchSuite
{
    public string Name => "fpx";

    public string Description => "FP6/FP5 (per-row scale) and INT6 g128 W6A16/W6A8 GEMV/GEMM vs dense bf16";

    public int Order => 20;

    private static (int M, int K)[] Shapes(bool quick) => quick ? [(4096, 4096), (8192, 8192)] : [(4096, 4096), (11008, 4096), (8192, 8192)];

    private static int[] Tokens(bool quick) => quick ? [1, 8] : [1, 8, 32];

    private static readonly string[] Formats = ["fp6", "fp5", "int6 W6A16 g128", "int6 W6A8 g128"];

    public IEnumerable<BenchCase> Create(BenchContext ctx)
    {
        foreach (var (m, k) in Shapes(ctx.Quick))
            foreach (string fmt in Formats)
            {
                int[] ns = ctx.Cpu ? Tokens(ctx.Quick).Where(n => ctx.Wants(DenseSuite.OpFor(n), fmt, DenseSuite.ShapeText(m, k, n), "cpu")).ToArray() : [];
                int[] gs = ctx.Gpu is { } g ? Tokens(ctx.Quick).Where(n => ctx.Wants(DenseSuite.OpFor(n), fmt, DenseSuite.ShapeText(m, k, n), g.Name)).ToArray() : [];
                if (ns.Length == 0 && gs.Length == 0) continue;
                // Weights are built once per (shape, format) and shared by the token counts; cold copies rotate through DRAM.
                var weights = Build(ctx, fmt, m, k, ns.Length == 0 ? 1 : ctx.ColdCopies(0.75 * m * k));
                foreach (int n in ns) yield return Case(ctx, fmt, weights, m, k, n);
                foreach (int n in gs) yield return GpuCase(ctx, ctx.Gpu!, fmt, weights[0], m, k, n);
            }
    }

    private static BenchCase GpuCase(BenchContext ctx, GpuBackend gpu, string fmt, object w, int m, int k, int n)
    {
        float[] x = DenseSuite.RandomFloats(n * k, 2);
        float[] y = new float[n * m];
        var pw = w is FpxWeights f ? gpu.Prepare(f) : gpu.Prepare((Int6Weights)w);
        var xt = gpu.Upload(x, n, k);
        var yt = (GpuTensor<float>)gpu.Allocate<float>(n, m);
        var mode = fmt.Contains("W6A8", StringComparison.Ordinal) ? Int6Mode.W6A8 : Int6Mode.W6A16;
        var (reference, terms) = Oracle(fmt, w, x, k, n);
        double wBytes = w is FpxWeights fw ? fw.SizeInBytes : ((Int6Weights)w).SizeInBytes;
        return new BenchCase
        {
            Op = DenseSuite.OpFor(n), Format = fmt, Shape = DenseSuite.ShapeText(m, k, n), Backend = gpu.Name, Path = gpu.Accelerator.Name,
            Bytes = wBytes + 4.0 * n * k + 4.0 * n * m,
            Flops = 2.0 * m * k * n,
            Run = _ =>
            {
                gpu.Gemm(pw, xt, yt, mode);
                gpu.Synchronize();
            },
            Verify = () =>
            {
                yt.CopyTo(y);
                return Verify.Rows(y, m, n, reference, ResultComparer.DotTolerance(terms));
            },
            BaselineKey = BenchCase.MakeKey(DenseSuite.OpFor(n), "bf16", DenseSuite.ShapeText(m, k, n), gpu.Name),
            Resources = new Disposables(pw, xt, yt),
        };
    }

    private static object[] Build(BenchContext ctx, string fmt, int m, int k, int copies)
    {
        var rng = new Random(1);
        var result = new object[copies];
        if (fmt.StartsWith("int6", StringComparison.Ordinal))
        {
            var q = new sbyte[(long)m * k];
            for (long i = 0; i < q.LongLength; i++) q[i] = (sbyte)rng.Next(-31, 32);
            var s = new float[(long)m * (k / 128)];
            for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 0.002 + 1e-4);
            result[0] = Int6Weights.FromValues(q, s, m, k, 128);
            byte[] blob = FpxSerializer.Serialize((Int6Weights)result[0]);
            for (int i = 1; i < copies; i++) result[i] = FpxSerializer.DeserializeInt6(blob);
        }
        else
        {
            var f = fmt == "fp6" ? FpxFormat.Fp6E3M2 : FpxFormat.Fp5E2M2;
            var codes = new byte[(long)m * k];
            rng.NextBytes(codes);
            int mask = FpxCodec.CodeCount(f) - 1;
            for (long i = 0; i < codes.LongLength; i++) codes[i] &= (byte)mask;
            var s = new float[m];
            for (int i = 0; i < m; i++) s[i] = (float)(rng.NextDouble() * 0.002 + 1e-4);
            result[0] = FpxWeights.FromCodes(codes, s, m, k, f);
            byte[] blob = FpxSerializer.Serialize((FpxWeights)result[0]);
            for (int i = 1; i < copies; i++) result[i] = FpxSerializer.DeserializeFpx(blob);
        }
        return result;
    }

    /// <summary>The oracle for sampled outputs (r, j) → (value, error scale), and the tolerance's term count.</summary>
    private static (Func<int, int, (double, double)> Reference, int TolTerms) Oracle(string fmt, object w, float[] x, int k, int n)
    {
        if (w is FpxWeights f0)
        {
            var table = Enumerable.Range(0, FpxCodec.CodeCount(f0.Format)).Select(c => (double)FpxCodec.Decode(f0.Format, c)).ToArray();
            return ((r, j) =>
            {
                double acc = 0, mag = 0;
                for (int c = 0; c < k; c++)
                {
                    double p = table[f0.CodeAt(r, c)] * x[j * k + c];
                    acc += p;
                    mag += Math.Abs(p);
                }
                return (acc * f0.Scales[r], mag * f0.Scales[r]);
            }, k);
        }
        var i0 = (Int6Weights)w;
        bool a8 = fmt.Contains("W6A8", StringComparison.Ordinal);
        var xq = new sbyte[n * k];
        var xs = new float[n];
        FpxReference.QuantizeActivations(x, k, xq, xs);
        return ((r, j) =>
        {
            double acc = 0, mag = 0;
            for (int c = 0; c < k; c++)
            {
                double s = i0.Scales[r * i0.GroupsPerRow + c / i0.GroupSize];
                double p = a8 ? i0.ValueAt(r, c) * (double)xq[j * k + c] * s * xs[j] : i0.ValueAt(r, c) * s * x[j * k + c];
                acc += p;
                mag += Math.Abs(p);
            }
            return (acc, mag);
        }, a8 ? i0.GroupsPerRow + 18 : k);
    }

    private static BenchCase Case(BenchContext ctx, string fmt, object[] w, int m, int k, int n)
    {
        float[] x = DenseSuite.RandomFloats(n * k, 2);
        float[] y = new float[n * m];
        var options = ctx.Options;
        int copies = w.Length;
        double wBytes = w[0] is FpxWeights fw ? fw.SizeInBytes : ((Int6Weights)w[0]).SizeInBytes;
        Action<int> run = w[0] is FpxWeights
            ? it => FpxGemm.Gemm((FpxWeights)w[it % copies], x, y, n, options)
            : fmt.Contains("W6A8", StringComparison.Ordinal)
                ? it => Int6Gemm.GemmW6A8((Int6Weights)w[it % copies], x, y, n, options)
                : it => Int6Gemm.GemmW6A16((Int6Weights)w[it % copies], x, y, n, options);
        var (reference, terms) = Oracle(fmt, w[0], x, k, n);
        return new BenchCase
        {
            Op = DenseSuite.OpFor(n), Format = fmt, Shape = DenseSuite.ShapeText(m, k, n), Backend = "cpu", Path = ctx.CpuPath,
            Bytes = wBytes + 4.0 * n * k + 4.0 * n * m,
            Flops = 2.0 * m * k * n,
            Run = run,
            Verify = () => Verify.Rows(y, m, n, reference, ResultComparer.DotTolerance(terms)),
            BaselineKey = BenchCase.MakeKey(DenseSuite.OpFor(n), "bf16", DenseSuite.ShapeText(m, k, n), "cpu"),
            Note = $"{8.0 * wBytes / ((double)m * k):F2} bits/weight",
        };
    }
}
