using System.IO.Compression;
using Kernels.Cpu.Dense;
using Kernels.Cpu.DFloat11;
using Kernels.Perf.Harness;
using Kernels.Quant.DFloat11;
using Kernels.Quant.Reference;

namespace Kernels.Perf.Suites;

/// <summary>DFloat11: compression ratio vs the Shannon bound, decode GB/s (1 thread, all threads), general codecs, fused GEMV.</summary>
public sealed class DFloat11Suite : IBenchSuite
{
    public string Name => "dfloat11";

    public string Description => "DFloat11 lossless bf16: ratio vs entropy bound, decode GB/s vs Brotli/ZLib, fused decompress+GEMV";

    public int Order => 30;

    private static (int M, int K)[] Shapes(bool quick) => quick ? [(4096, 4096)] : [(4096, 4096), (8192, 8192)];

    /// <summary>N(0, σ) weights rounded to bf16 (Box–Muller, fixed seed).</summary>
    internal static BFloat16[] GaussianWeights(int count, int seed, double sigma = 0.02)
    {
        var rng = new Random(seed);
        var a = GC.AllocateUninitializedArray<BFloat16>(count);
        for (int i = 0; i < count; i += 2)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble(), r = sigma * Math.Sqrt(-2 * Math.Log(u1));
            a[i] = (BFloat16)(float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < count) a[i + 1] = (BFloat16)(float)(r * Math.Sin(2 * Math.PI * u2));
        }
        return a;
    }

    public IEnumerable<BenchCase> Create(BenchContext ctx)
    {
        foreach (var (m, k) in Shapes(ctx.Quick))
        {
            if (ctx.Gpu is { } gpu)
                foreach (var c in GpuCases(ctx, gpu, m, k)) yield return c;
            if (!ctx.Cpu) continue;
            string shape = $"{m}x{k}";
            string gemv = DenseSuite.ShapeText(m, k, 1);
            bool any = new[] { "df11", "df11 1T", "brotli", "zlib" }.Any(f => ctx.Wants("decompress", f, shape, "cpu"))
                       || new[] { "df11", "df11 unfused" }.Any(f => ctx.Wants("gemv", f, gemv, "cpu"));
            if (!any) continue;
            var w = GaussianWeights(m * k, 1);
            var t = DFloat11Encoder.Encode(w, new TensorShape(m, k));
            double entropy = DFloat11Encoder.Entropy(DFloat11Encoder.ExponentHistogram(w));
            double avg = t.Code.AverageLength(DFloat11Encoder.SymbolHistogram(w));
            double bound = (8 + entropy) / 16;
            string note = $"size {100 * t.CompressionRatio:F2}% of bf16 (LUTs, gaps, positions included); Shannon bound {100 * bound:F2}% " +
                          $"(exponent entropy {entropy:F3} b, Huffman avg {avg:F3} b, gaps {100.0 * t.Gaps.Length / (2.0 * m * k):F2}%)";
            int copies = ctx.ColdCopies(t.CompressedBytes);
            var tensors = new DFloat11Tensor[copies];
            tensors[0] = t;
            for (int i = 1; i < copies; i++)
                tensors[i] = DFloat11Tensor.Create(t.Shape, t.Luts, t.EncodedExponents, t.SignMantissa, t.OutputPositions, t.Gaps);
            var output = GC.AllocateUninitializedArray<BFloat16>(m * k);
            string? VerifyDecode()
            {
                for (int i = 0; i < w.Length; i++)
                    if (w[i].Bits != output[i].Bits) return $"element {i}: 0x{output[i].Bits:X4} != 0x{w[i].Bits:X4}";
                return null;
            }

            // Output bf16 bytes: GB/s column = decoded output GB/s.
            foreach (var c in DecodeCases(ctx, shape, 2.0 * m * k, (it, options) => DFloat11Decoder.Decompress(tensors[it % copies], output, options), VerifyDecode, note))
                yield return c;

            // General-purpose codecs on the same bytes (decode throughput, same output-GB/s convention).
            foreach (var c in CodecCases(ctx, System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.AsSpan()).ToArray(), shape)) yield return c;

            // Fused decompress + GEMV vs the dense bf16 GEMV (BaselineKey), and vs decompress-then-dense (ExtraBaselines).
            string gemvShape = DenseSuite.ShapeText(m, k, 1);
            if (ctx.Wants("gemv", "df11", gemvShape, "cpu"))
            {
                float[] x = DenseSuite.RandomFloats(k, 2);
                float[] y = new float[m];
                var opts = ctx.Options;
                yield return new BenchCase
                {
                    Op = "gemv", Format = "df11", Shape = gemvShape, Backend = "cpu", Path = ctx.CpuPath,
                    Bytes = t.CompressedBytes + 4.0 * k + 4.0 * m,
                    Flops = 2.0 * m * k,
                    Run = it => DFloat11Decoder.Gemm(tensors[it % copies], x, y, m, k, 1, opts),
                    Verify = () => Verify.Rows(y, m, 1, (r, _) =>
                    {
                        double acc = 0, mag = 0;
                        for (int c = 0; c < k; c++)
                        {
                            double p = (double)(float)w[(long)r * k + c] * x[c];
                            acc += p;
                            mag += Math.Abs(p);
                        }
                        return (acc, mag);
                    }, ResultComparer.DotTolerance(k)),
                    BaselineKey = BenchCase.MakeKey(DenseSuite.OpFor(1), "bf16", gemvShape, "cpu"),
                    ExtraBaselines = new Dictionary<string, string> { ["vs unfused"] = BenchCase.MakeKey("gemv", "df11 unfused", gemvShape, "cpu") },
                    Note = note,
                };
                yield return new BenchCase
                {
                    Op = "gemv", Format = "df11 unfused", Shape = gemvShape, Backend = "cpu", Path = ctx.CpuPath,
                    Bytes = t.CompressedBytes + 4.0 * k + 4.0 * m,
                    Flops = 2.0 * m * k,
                    Run = it =>
                    {
                        DFloat11Decoder.Decompress(tensors[it % copies], output, opts);
                        DenseGemm.Gemm(output, x, y, m, k, 1, opts);
                    },
                    BaselineKey = BenchCase.MakeKey(DenseSuite.OpFor(1), "bf16", gemvShape, "cpu"),
                };
            }
        }
        foreach (var c in RealWeightCases(ctx)) yield return c;
    }

    /// <summary>Real trained weights: the fp32 initializers of at least 4096 elements (22 tensors, 15.9 M weights) of the
    /// ONNX ResNet-18 that ML.NET ships pretrained, rounded to bf16 and encoded one tensor at a time, as DFloat11 encodes a
    /// model's weight matrices. The ONNX file comes from a NuGet package downloaded when the perf project is built.</summary>
    private static IEnumerable<BenchCase> RealWeightCases(BenchContext ctx)
    {
        const string Shape = "resnet18";
        if (!ctx.Cpu || !new[] { "df11", "df11 1T", "brotli", "zlib" }.Any(f => ctx.Wants("decompress", f, Shape, "cpu"))) yield break;
        string path = Path.Combine(AppContext.BaseDirectory, "models", "ResNet18.onnx");
        if (!File.Exists(path))
        {
            Console.WriteLine($"dfloat11: {path} is missing (the perf project's build downloads it); the real-weight cases are skipped.");
            yield break;
        }
        var weights = OnnxInitializers.Read(File.ReadAllBytes(path))
            .Where(t => t.Values.Length >= 4096)
            .Select(t => Array.ConvertAll(t.Values, v => (BFloat16)v))
            .ToArray();
        long n = weights.Sum(a => (long)a.Length);
        var encoded = weights.Select(a => DFloat11Encoder.Encode(a)).ToArray();
        long compressed = encoded.Sum(t => t.CompressedBytes);
        var histogram = new long[256];
        foreach (var a in weights)
        {
            var h = DFloat11Encoder.ExponentHistogram(a);
            for (int e = 0; e < histogram.Length; e++) histogram[e] += h[e];
        }
        double entropy = DFloat11Encoder.Entropy(histogram), bound = (8 + entropy) / 16;
        string note = $"ML.NET's pretrained ResNet-18: {weights.Length} tensors, {n / 1e6:F2} M weights as bf16; size {100.0 * compressed / (2.0 * n):F2}% " +
                      $"of bf16 (per-tensor LUTs, gaps, positions included); Shannon bound {100 * bound:F2}% (exponent entropy {entropy:F3} b)";
        var outputs = weights.Select(a => new BFloat16[a.Length]).ToArray();
        string? VerifyDecode()
        {
            for (int i = 0; i < weights.Length; i++)
                if (!System.Runtime.InteropServices.MemoryMarshal.AsBytes(outputs[i].AsSpan()).SequenceEqual(System.Runtime.InteropServices.MemoryMarshal.AsBytes(weights[i].AsSpan())))
                    return $"tensor {i} differs from the original bits";
            return null;
        }
        foreach (var c in DecodeCases(ctx, Shape, 2.0 * n, (_, options) =>
                 {
                     for (int i = 0; i < encoded.Length; i++) DFloat11Decoder.Decompress(encoded[i], outputs[i], options);
                 }, VerifyDecode, note))
            yield return c;
        byte[] raw = weights.SelectMany(a => System.Runtime.InteropServices.MemoryMarshal.AsBytes(a.AsSpan()).ToArray()).ToArray();
        foreach (var c in CodecCases(ctx, raw, Shape)) yield return c;
    }

    /// <summary>DFloat11 decode on one thread ("df11 1T") and on all threads ("df11"): <paramref name="run"/> gets the
    /// iteration and the thread options; <paramref name="bytes"/> is the bf16 output size.</summary>
    private static IEnumerable<BenchCase> DecodeCases(BenchContext ctx, string shape, double bytes, Action<int, KernelOptions> run,
        Func<string?> verify, string note)
    {
        foreach (int threads in new[] { 1, -1 })
        {
            var options = ctx.Options with { MaxDegreeOfParallelism = threads };
            string fmt = threads == 1 ? "df11 1T" : "df11";
            if (!ctx.Wants("decompress", fmt, shape, "cpu")) continue;
            yield return new BenchCase
            {
                Op = "decompress", Format = fmt, Shape = shape, Backend = "cpu",
                Path = $"{ctx.CpuPath} {(threads == 1 ? 1 : options.EffectiveParallelism)}T",
                Bytes = bytes,
                Run = it => run(it, options),
                Verify = verify,
                Note = note,
            };
        }
    }

    /// <summary>Brotli and ZLib (Fastest) on the same bf16 bytes: size and single-thread decode GB/s of output.</summary>
    private static IEnumerable<BenchCase> CodecCases(BenchContext ctx, byte[] raw, string shape)
    {
        foreach (var codec in new[] { "brotli", "zlib" })
        {
            if (!ctx.Wants("decompress", codec, shape, "cpu")) continue;
            byte[] packed = Compress(codec, raw);
            var dst = new byte[raw.Length];
            yield return new BenchCase
            {
                Op = "decompress", Format = codec, Shape = shape, Backend = "cpu", Path = "1T (System.IO.Compression, Fastest)",
                Bytes = raw.Length,
                Run = _ => Decompress(codec, packed, dst),
                Verify = () => dst.AsSpan().SequenceEqual(raw) ? null : $"{codec} round trip differs",
                Note = $"{codec} level Fastest: {100.0 * packed.Length / raw.Length:F2}% of bf16",
            };
        }
    }

    private static IEnumerable<BenchCase> GpuCases(BenchContext ctx, Kernels.Gpu.GpuBackend gpu, int m, int k)
    {
        string shape = $"{m}x{k}", gemvShape = DenseSuite.ShapeText(m, k, 1);
        bool decode = ctx.Wants("decompress", "df11", shape, gpu.Name), gemv = ctx.Wants("gemv", "df11", gemvShape, gpu.Name);
        if (!decode && !gemv) yield break;
        var w = GaussianWeights(m * k, 1);
        var t = DFloat11Encoder.Encode(w, new TensorShape(m, k));
        var wt = gpu.Upload(t);
        if (decode)
        {
            var dst = gpu.Allocate<BFloat16>(m, k);
            yield return new BenchCase
            {
                Op = "decompress", Format = "df11", Shape = shape, Backend = gpu.Name, Path = gpu.Accelerator.Name,
                Bytes = 2.0 * m * k,
                Run = _ =>
                {
                    gpu.Decompress(wt, dst);
                    gpu.Synchronize();
                },
                Verify = () => dst.ToArray().AsSpan().SequenceEqual(w) ? null : "GPU decode differs from the original bits",
                Note = $"size {100 * t.CompressionRatio:F2}% of bf16",
                Resources = dst,
            };
        }
        if (gemv)
        {
            float[] x = DenseSuite.RandomFloats(k, 2);
            var xt = gpu.Upload(x, 1, k);
            var yt = (Kernels.Gpu.GpuTensor<float>)gpu.Allocate<float>(1, m);
            yield return new BenchCase
            {
                Op = "gemv", Format = "df11", Shape = gemvShape, Backend = gpu.Name, Path = gpu.Accelerator.Name,
                Bytes = t.CompressedBytes + 4.0 * k + 4.0 * m,
                Flops = 2.0 * m * k,
                Run = _ =>
                {
                    gpu.Gemm(wt, xt, yt);
                    gpu.Synchronize();
                },
                Verify = () => Verify.Rows(yt.ToArray(), m, 1, (r, _) =>
                {
                    double acc = 0, mag = 0;
                    for (int c = 0; c < k; c++)
                    {
                        double p = (double)(float)w[(long)r * k + c] * x[c];
                        acc += p;
                        mag += Math.Abs(p);
                    }
                    return (acc, mag);
                }, ResultComparer.DotTolerance(k)),
                BaselineKey = BenchCase.MakeKey(DenseSuite.OpFor(1), "bf16", gemvShape, gpu.Name),
                Resources = new Disposables(xt, yt, wt),
            };
        }
        else wt.Dispose();
    }

    private static byte[] Compress(string codec, byte[] raw)
    {
        var ms = new MemoryStream();
        using (Stream s = codec == "brotli" ? new BrotliStream(ms, CompressionLevel.Fastest, true) : new ZLibStream(ms, CompressionLevel.Fastest, true))
            s.Write(raw);
        return ms.ToArray();
    }

    private static void Decompress(string codec, byte[] packed, byte[] dst)
    {
        if (codec == "brotli")
        {
            if (!BrotliDecoder.TryDecompress(packed, dst, out int written) || written != dst.Length) throw new InvalidDataException("brotli");
            return;
        }
        using var z = new ZLibStream(new MemoryStream(packed), CompressionMode.Decompress);
        int total = 0, n;
        while (total < dst.Length && (n = z.Read(dst, total, dst.Length - total)) > 0) total += n;
    }
}
