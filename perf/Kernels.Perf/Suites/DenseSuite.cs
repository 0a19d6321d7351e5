using Kernels.Cpu.Dense;
using Kernels.Gpu;
using Kernels.Perf.Harness;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Suites;

/// <summary>Dense fp32/bf16 GEMV/GEMM: the baseline every low-bit format is compared with.</summary>
public sealed class DenseSuite : IBenchSuite
{
    public string Name => "dense";

    public string Description => "dense fp32 and bf16 GEMV/GEMM (the baseline)";

    public int Order => 0;

    /// <summary>The (m, k) shapes shared by the weight-format suites: Llama-class projections.</summary>
    public static (int M, int K)[] Shapes(bool quick) => quick
        ? [(4096, 4096), (8192, 8192)]
        : [(4096, 4096), (11008, 4096), (4096, 14336), (14336, 4096), (8192, 8192)];

    public static int[] Tokens(bool quick) => quick ? [1, 8] : [1, 8, 32, 128];

    public static string ShapeText(int m, int k, int n) => $"{m}x{k} n={n}";

    public static string OpFor(int n) => n == 1 ? "gemv" : "gemm";

    public IEnumerable<BenchCase> Create(BenchContext ctx)
    {
        foreach (var (m, k) in Shapes(ctx.Quick))
            foreach (int n in Tokens(ctx.Quick))
            {
                if (ctx.Cpu)
                {
                    if (ctx.Wants(OpFor(n), "bf16", ShapeText(m, k, n), "cpu")) yield return Cpu<BFloat16>(ctx, m, k, n);
                    if (ctx.Wants(OpFor(n), "f32", ShapeText(m, k, n), "cpu")) yield return Cpu<float>(ctx, m, k, n);
                }
                if (ctx.Gpu is { } gpu)
                {
                    if (ctx.Wants(OpFor(n), "bf16", ShapeText(m, k, n), gpu.Name)) yield return Gpu<BFloat16>(ctx, gpu, m, k, n);
                    if (ctx.Wants(OpFor(n), "f32", ShapeText(m, k, n), gpu.Name)) yield return Gpu<float>(ctx, gpu, m, k, n);
                }
            }
    }

    internal static float[] RandomFloats(int count, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var a = GC.AllocateUninitializedArray<float>(count);
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    private static T[] Weights<T>(int count, int seed) where T : unmanaged
    {
        float[] f = RandomFloats(count, seed, 0.05f);
        if (typeof(T) == typeof(float)) return (T[])(object)f;
        return (T[])(object)f.Select(v => (BFloat16)v).ToArray();
    }

    private static float AsFloat<T>(T v) where T : unmanaged => typeof(T) == typeof(float) ? (float)(object)v : (float)(BFloat16)(object)v;

    private static string Fmt<T>() => typeof(T) == typeof(float) ? "f32" : "bf16";

    private static Func<int, int, (double, double)> Reference<T>(T[] w, float[] x, int k) where T : unmanaged => (r, j) =>
    {
        double acc = 0, mag = 0;
        for (int c = 0; c < k; c++)
        {
            double p = (double)AsFloat(w[(long)r * k + c]) * x[(long)j * k + c];
            acc += p;
            mag += Math.Abs(p);
        }
        return (acc, mag);
    };

    private static BenchCase Cpu<T>(BenchContext ctx, int m, int k, int n) where T : unmanaged
    {
        double wBytes = (double)m * k * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        int copies = ctx.ColdCopies(wBytes);
        var w = new T[copies][];
        w[0] = Weights<T>(m * k, 1);
        for (int i = 1; i < copies; i++) w[i] = (T[])w[0].Clone();
        float[] x = RandomFloats(n * k, 2);
        float[] y = new float[n * m];
        var options = ctx.Options;
        return new BenchCase
        {
            Op = OpFor(n), Format = Fmt<T>(), Shape = ShapeText(m, k, n), Backend = "cpu", Path = ctx.CpuPath,
            Bytes = wBytes + 4.0 * n * k + 4.0 * n * m,
            Flops = 2.0 * m * k * n,
            Run = it =>
            {
                if (typeof(T) == typeof(float)) DenseGemm.Gemm((float[])(object)w[it % copies], x, y, m, k, n, options);
                else DenseGemm.Gemm((BFloat16[])(object)w[it % copies], x, y, m, k, n, options);
            },
            Verify = () => Harness.Verify.Rows(y, m, n, Reference(w[0], x, k), ResultComparer.DotTolerance(k)),
            BaselineKey = typeof(T) == typeof(float) ? BenchCase.MakeKey(OpFor(n), "bf16", ShapeText(m, k, n), "cpu") : null,
        };
    }

    private static BenchCase Gpu<T>(BenchContext ctx, GpuBackend gpu, int m, int k, int n) where T : unmanaged
    {
        var wHost = Weights<T>(m * k, 1);
        float[] x = RandomFloats(n * k, 2);
        float[] y = new float[n * m];
        var wt = gpu.Upload(wHost, m, k);
        var xt = gpu.Upload(x, n, k);
        var yt = (GpuTensor<float>)gpu.Allocate<float>(n, m);
        double wBytes = (double)m * k * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        return new BenchCase
        {
            Op = OpFor(n), Format = Fmt<T>(), Shape = ShapeText(m, k, n), Backend = gpu.Name, Path = gpu.Accelerator.Name,
            Bytes = wBytes + 4.0 * n * k + 4.0 * n * m,
            Flops = 2.0 * m * k * n,
            Run = _ =>
            {
                gpu.Gemm(wt, xt, yt);
                gpu.Synchronize();
            },
            Verify = () =>
            {
                yt.CopyTo(y);
                return Harness.Verify.Rows(y, m, n, Reference(wHost, x, k), ResultComparer.DotTolerance(k));
            },
            BaselineKey = typeof(T) == typeof(float) ? BenchCase.MakeKey(OpFor(n), "bf16", ShapeText(m, k, n), gpu.Name) : null,
            Resources = new Disposables(wt, xt, yt),
        };
    }
}

/// <summary>Disposes several resources.</summary>
public sealed class Disposables(params IDisposable[] items) : IDisposable
{
    public void Dispose()
    {
        foreach (var d in items) d.Dispose();
    }
}
