using Kernels.Cpu.Lut;
using Kernels.Perf.Harness;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Suites;

/// <summary>LUT-based low-bit GEMV/GEMM (T-MAC method): W1–W4 and ternary, vs dense bf16 and vs our dequantize-then-multiply kernel.</summary>
public sealed class LutSuite : IBenchSuite
{
    public string Name => "lut";

    public string Description => "LUT mpGEMM (T-MAC): W1/W2/W3/W4/ternary × bf16 baseline and dequant baseline";

    public int Order => 10;

    private static readonly LutFormat[] Formats =
        [LutFormat.Asymmetric(1), LutFormat.Asymmetric(2), LutFormat.Asymmetric(3), LutFormat.Asymmetric(4), LutFormat.Ternary()];

    private static (int M, int K)[] Shapes(bool quick) => quick
        ? [(4096, 4096), (8192, 8192)]
        : [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192)];

    private static int[] Tokens(bool quick) => quick ? [1, 8] : [1, 8, 32, 128];

    private static string DequantFormat(LutFormat f) => "dequant " + f.Name;

    public IEnumerable<BenchCase> Create(BenchContext ctx)
    {
        foreach (var (m, k) in Shapes(ctx.Quick))
            foreach (var f in Formats)
                foreach (int n in Tokens(ctx.Quick))
                {
                    string shape = DenseSuite.ShapeText(m, k, n), op = DenseSuite.OpFor(n);
                    if (ctx.Gpu is { } gpu && ctx.Wants(op, f.Name, shape, gpu.Name)) yield return GpuCase(ctx, gpu, f, m, k, n);
                    if (!ctx.Cpu) continue;
                    // The dequant baseline is compute-bound and slow at large n: time it at n = 1 and 8 only.
                    bool dequant = n <= 8 && ctx.Wants(op, DequantFormat(f), shape, "cpu");
                    bool lut = ctx.Wants(op, f.Name, shape, "cpu");
                    // The exact (fp32 table) mode: timed for W2 GEMV only, to show its cost.
                    bool exact = n == 1 && f == LutFormat.Asymmetric(2) && ctx.Wants(op, f.Name + " exact", shape, "cpu");
                    if (!dequant && !lut && !exact) continue;
                    var data = Data.Create(ctx, f, m, k, n);
                    if (dequant) yield return Case(ctx, data, f, m, k, n, dequantBaseline: true);
                    if (lut) yield return Case(ctx, data, f, m, k, n, dequantBaseline: false);
                    if (exact) yield return Case(ctx, data, f, m, k, n, dequantBaseline: false, exactTables: true);
                }
    }

    private sealed class Data
    {
        public required LutWeights[] Copies { get; init; }
        public required float[] X { get; init; }
        public required float[] Y { get; init; }

        public static Data Create(BenchContext ctx, LutFormat f, int m, int k, int n)
        {
            // Random packed planes and scales stand in for quantized weights: the kernels' cost does not depend on the values.
            var rng = new Random(1);
            long planeBytes = LutWeights.PlaneBytesFor(f, m, k), scaleCount = LutWeights.ScaleCountFor(f, m, k);
            var planes = new byte[planeBytes];
            rng.NextBytes(planes);
            var scales = new BFloat16[scaleCount];
            var offsets = new BFloat16[scaleCount];
            for (long i = 0; i < scaleCount; i++)
            {
                float s = 0.01f + 0.01f * (float)rng.NextDouble();
                scales[i] = (BFloat16)s;
                offsets[i] = f.Kind == LutQuantKind.Ternary ? (BFloat16)(0.5f * (float)(BFloat16)s) : (BFloat16)(s * (float)(rng.NextDouble() - 0.5));
            }
            if (f.Kind == LutQuantKind.Ternary)
                for (long i = 0; i < planeBytes; i += 128) planes.AsSpan((int)i + 64, 64).Fill(0); // plane 1 cleared: codes 0/1 are valid ternary codes
            var w0 = new LutWeights(f, m, k, planes, scales, offsets);
            int copies = ctx.ColdCopies(w0.TotalBytes);
            var all = new LutWeights[copies];
            all[0] = w0;
            for (int i = 1; i < copies; i++) all[i] = new LutWeights(f, m, k, (byte[])planes.Clone(), scales, offsets);
            return new Data { Copies = all, X = DenseSuite.RandomFloats(n * k, 2), Y = new float[n * m] };
        }
    }

    private static BenchCase Case(BenchContext ctx, Data d, LutFormat f, int m, int k, int n, bool dequantBaseline, bool exactTables = false)
    {
        var lutOptions = exactTables ? new LutGemmOptions { TableMode = LutTableMode.Exact } : LutGemmOptions.Default;
        var options = ctx.Options;
        var w = d.Copies;
        string shape = DenseSuite.ShapeText(m, k, n), op = DenseSuite.OpFor(n);
        string format = dequantBaseline ? DequantFormat(f) : exactTables ? f.Name + " exact" : f.Name;
        return new BenchCase
        {
            Op = op, Format = format, Shape = shape, Backend = "cpu", Path = ctx.CpuPath,
            Bytes = w[0].TotalBytes + 4.0 * n * k + 4.0 * n * m,
            Flops = 2.0 * m * k * n,
            Run = it =>
            {
                if (dequantBaseline) LutDequantGemm.Gemm(w[it % w.Length], d.X, d.Y, n, options);
                else LutGemm.Gemm(w[it % w.Length], d.X, d.Y, n, lutOptions, options);
            },
            Verify = () => Verify.Rows(d.Y, m, n, Reference(w[0], d.X), 1.0, 0),
            BaselineKey = BenchCase.MakeKey(op, "bf16", DenseSuite.ShapeText(m, k, n), "cpu"),
            ExtraBaselines = dequantBaseline || exactTables ? null : new Dictionary<string, string> { ["vs dequant"] = BenchCase.MakeKey(op, DequantFormat(f), shape, "cpu") },
            Note = dequantBaseline ? null : $"{f.BitsPerWeight:F2} bits/weight",
        };
    }

    private static BenchCase GpuCase(BenchContext ctx, Kernels.Gpu.GpuBackend gpu, LutFormat f, int m, int k, int n)
    {
        var ctxOne = new BenchContext { Options = ctx.Options, CacheBytes = 0 };
        var d = Data.Create(ctxOne, f, m, k, n);
        var w = d.Copies[0];
        var pw = gpu.PrepareLut(w);
        var xt = gpu.Upload(d.X, n, k);
        var yt = (Kernels.Gpu.GpuTensor<float>)gpu.Allocate<float>(n, m);
        string shape = DenseSuite.ShapeText(m, k, n), op = DenseSuite.OpFor(n);
        return new BenchCase
        {
            Op = op, Format = f.Name, Shape = shape, Backend = gpu.Name, Path = gpu.Accelerator.Name,
            Bytes = w.TotalBytes + 4.0 * n * k + 4.0 * n * m,
            Flops = 2.0 * m * k * n,
            Run = _ =>
            {
                gpu.LutGemm(pw, xt, yt);
                gpu.Synchronize();
            },
            Verify = () =>
            {
                yt.CopyTo(d.Y);
                return Verify.Rows(d.Y, m, n, Reference(w, d.X), 1.0, 0);
            },
            BaselineKey = BenchCase.MakeKey(op, "bf16", shape, gpu.Name),
            Note = $"{f.BitsPerWeight:F2} bits/weight",
            Resources = new Disposables(pw, xt, yt),
        };
    }

    /// <summary>Sampled rows: the double reference on the unpacked row, with the int8-table bound plus fp32 rounding as the error scale.</summary>
    private static Func<int, int, (double, double)> Reference(LutWeights w, float[] x)
    {
        var cache = new Dictionary<int, LutQuantizedMatrix>();
        return (r, j) =>
        {
            if (!cache.TryGetValue(r, out var row))
            {
                var codes = new byte[w.K];
                BitPlanePacking.UnpackRow(w, r, codes);
                int groups = w.GroupsPerRow;
                var s = new BFloat16[groups];
                var o = new BFloat16[groups];
                for (int g = 0; g < groups; g++)
                {
                    long si = ((long)(r / 64) * groups + g) * 64 + r % 64;
                    s[g] = w.Scales[si];
                    o[g] = w.Offsets[si];
                }
                cache[r] = row = new LutQuantizedMatrix(w.Format, 1, w.K, codes, s, o);
            }
            var xj = x.AsSpan(j * w.K, w.K);
            double bound = LutReference.Int8TableErrorBound(row, 0, xj) + 4 * ResultComparer.DotTolerance(w.K + 16) * LutReference.RoundingScale(row, 0, xj);
            return (LutReference.Dot(row, 0, xj), bound);
        };
    }
}
