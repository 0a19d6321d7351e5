using Kernels.Cpu;
using Kernels.Quant.DFloat11;
using Kernels.Quant.Fpx;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;
using Kernels.Tests.Attention;
using Kernels.Tests.Gpu;
using Xunit.Abstractions;

namespace Kernels.Tests.Core;

/// <summary>Random and corrupted tensors at the weight ops' backend boundary (dense, LUT, FP6/FP5, INT6 W6A16/W6A8,
/// DFloat11): x and y dimensions off by one, y passed as x or as the weights, and weights prepared on the other backend.
/// Every call either throws <see cref="ArgumentException"/> with y and x untouched, or runs and matches the oracle within
/// a loose bound (a wrong row, column or activation vector shows up as an O(1) difference). Any other exception fails.</summary>
/// <remarks>CI runs a few dozen cases per op and backend; <c>KERNELS_FUZZ_CASES=N</c> runs N.</remarks>
[Collection(GpuCollection.Name)]
public class BackendInputFuzzTests(GpuFixture fixture, ITestOutputHelper output)
{
    private const float Sentinel = 1234.5f;

    [Fact]
    public void WeightOps_CorruptedTensors_ThrowArgumentErrorsOrMatchTheOracle()
    {
        using var cpu = new CpuBackend();
        IKernelBackend gpu = fixture.Backend;
        foreach (var (backend, other, name, count, stream) in new (IKernelBackend, IKernelBackend, string, int, int)[] { (cpu, gpu, "CPU", 120, 14), (gpu, cpu, "GPU, CPU accelerator", 40, 15) })
            AttentionInputFuzzTests.Fuzz(output, $"weight ops ({name})", count, stream, rng => AttentionInputFuzzTests.Count(Case(backend, other, rng)));
    }

    /// <summary>One op with drawn shapes; returns how the case ended.</summary>
    private static string Case(IKernelBackend backend, IKernelBackend other, Random rng)
    {
        int op = rng.Next(6); // 0 dense fp32, 1 dense bf16, 2 LUT, 3 FP6/FP5, 4 INT6 (W6A16 or W6A8), 5 DFloat11
        int group = op == 2 ? Pick(rng, 32, 64, 128) : op == 4 ? Pick(rng, 64, 128) : 1;
        int m = rng.Next(1, 40), k = op is 2 ? group * rng.Next(1, 3) : op == 4 ? rng.Next(1, 3 * group) : rng.Next(1, 70), n = rng.Next(1, 4);
        float[] w = RandomFloats(rng, m * k);
        var wDeq = (float[])w.Clone();
        IDisposable? prepared = null;
        DeviceTensor? denseW = null;
        Action<IKernelBackend, DeviceTensor<float>, DeviceTensor<float>>? run = null;
        bool foreign = rng.Next(10) == 0; // weights prepared on the other backend
        var owner = foreign ? other : backend;
        Int6Mode mode = Int6Mode.W6A16;
        switch (op)
        {
            case 0:
            case 1:
                if (op == 1) wDeq = Array.ConvertAll(w, v => (float)(BFloat16)v);
                denseW = op == 0 ? Upload(owner, w, m, k) : UploadBf16(owner, w, m, k);
                run = (b, xt, yt) => ((IDenseOps)b).Gemm(denseW, xt, yt);
                break;
            case 2:
            {
                var q = LutQuantizer.Quantize(w, m, k, LutFormat.Symmetric(Pick(rng, 1, 2, 3, 4), group));
                wDeq = LutReference.Dequantize(q);
                var p = ((ILutGemmOps)owner).PrepareLut(BitPlanePacking.Pack(q));
                prepared = p;
                run = (b, xt, yt) => ((ILutGemmOps)b).LutGemm(p, xt, yt, new LutGemmOptions { TableMode = LutTableMode.Exact });
                break;
            }
            case 3:
            {
                var f = FpxWeights.Quantize(w, m, k, Pick(rng, FpxFormat.Fp6E3M2, FpxFormat.Fp5E2M2));
                FpxReference.Dequantize(f, wDeq);
                var p = ((IFpxOps)owner).Prepare(f);
                prepared = p;
                run = (b, xt, yt) => ((IFpxOps)b).Gemm(p, xt, yt);
                break;
            }
            case 4:
            {
                var i6 = Int6Weights.Quantize(w, m, k, group);
                FpxReference.Dequantize(i6, wDeq);
                mode = rng.Next(2) == 0 ? Int6Mode.W6A16 : Int6Mode.W6A8;
                var p = ((IFpxOps)owner).Prepare(i6);
                prepared = p;
                var md = mode;
                run = (b, xt, yt) => ((IFpxOps)b).Gemm(p, xt, yt, md);
                break;
            }
            default:
            {
                wDeq = Array.ConvertAll(w, v => (float)(BFloat16)v);
                var d = ((IDFloat11Ops)owner).Upload(DFloat11Encoder.Encode(Array.ConvertAll(w, v => (BFloat16)v), new TensorShape(m, k)));
                prepared = d;
                run = (b, xt, yt) => ((IDFloat11Ops)b).Gemm(d, xt, yt);
                break;
            }
        }
        try
        {
            // x [n, k] and y [n, m], a dimension off by one now and then (a consistent other n is a valid call).
            int Off(int v) => rng.Next(8) == 0 ? Math.Max(1, v + Pick(rng, -1, 1)) : v;
            int[] xDims = [Off(n), Off(k)], yDims = [rng.Next(8) == 0 ? Off(n) : xDims[0], Off(m)];
            float[] x = RandomFloats(rng, xDims[0] * xDims[1]);
            using var xt = Tensor(backend, x, xDims);
            using var yt = Tensor(backend, Enumerable.Repeat(Sentinel, yDims[0] * yDims[1]).ToArray(), yDims);
            bool yIsX = rng.Next(12) == 0;
            Exception? error = null;
            try
            {
                run(backend, xt, yIsX ? xt : yt);
                backend.Synchronize();
            }
            catch (Exception ex)
            {
                error = ex;
            }
            if (error is not null)
            {
                if (error is not (ArgumentException or NotSupportedException))
                    throw new Xunit.Sdk.XunitException($"op {op} threw {error.GetType().Name}: {error.Message}\n{error.StackTrace}");
                Assert.True(xt.ToArray().SequenceEqual(x) && yt.ToArray().All(v => v == Sentinel), $"op {op}: a rejected call wrote x or y");
                return "rejected";
            }
            Assert.False(yIsX, $"op {op}: y passed as x was accepted");
            Assert.False(foreign, $"op {op}: weights prepared on the other backend were accepted");
            Assert.True(xDims[1] == k && yDims.SequenceEqual([xDims[0], m]), $"op {op}: x {xDims[0]}×{xDims[1]}, y {yDims[0]}×{yDims[1]} accepted for m {m}, k {k}");
            Assert.True(xt.ToArray().SequenceEqual(x), $"op {op}: the call changed x");
            n = xDims[0];
            if (mode == Int6Mode.W6A8)
            {
                // W6A8's oracle: the activations quantized per token as the kernel does, then exact integer group dots.
                var xq = new sbyte[x.Length];
                var xs = new float[n];
                FpxReference.QuantizeActivations(x, k, xq, xs);
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < k; i++) x[j * k + i] = xq[j * k + i] * xs[j]; // the values W6A8 multiplies
            }
            // The oracle's y, and the magnitude Σ|w·x| that bounds its error.
            var e = new float[n * m];
            var mag = new double[n * m];
            DenseReference.Gemm(wDeq, x, e, m, k, n);
            for (int j = 0; j < n; j++)
                for (int r = 0; r < m; r++)
                {
                    double sum = 0;
                    for (int i = 0; i < k; i++) sum += Math.Abs((double)wDeq[r * k + i] * x[j * k + i]);
                    mag[j * m + r] = sum;
                }
            float[] a = yt.ToArray();
            for (int i = 0; i < e.Length; i++)
            {
                // fp32 accumulation orders, W6A8's rounding and LUT's exact tables stay far inside 1e-3·Σ|w·x|.
                double bound = 1e-3 * mag[i] + 1e-6;
                if (!(Math.Abs(e[i] - a[i]) <= bound)) throw new Xunit.Sdk.XunitException($"op {op} (m {m}, k {k}, n {n}): y[{i}] expected {e[i]}, got {a[i]} (bound {bound})");
            }
            return $"op {op} ran";
        }
        finally
        {
            prepared?.Dispose();
            denseW?.Dispose();
        }
    }

    private static DeviceTensor<float> Upload(IKernelBackend backend, float[] w, int m, int k) => Tensor(backend, w, [m, k]);

    private static DeviceTensor<BFloat16> UploadBf16(IKernelBackend backend, float[] w, int m, int k)
    {
        var t = backend.Allocate<BFloat16>(m, k);
        t.CopyFrom(Array.ConvertAll(w, v => (BFloat16)v));
        return t;
    }

    private static DeviceTensor<float> Tensor(IKernelBackend backend, float[] data, int[] dims) => AttentionInputFuzzTests.Tensor(backend, data, dims);

    private static float[] RandomFloats(Random rng, int n) => AttentionInputFuzzTests.RandomFloats(rng, n);

    private static T Pick<T>(Random rng, params T[] xs) => CombinedOptionsFuzzTests.Pick(rng, xs);
}
