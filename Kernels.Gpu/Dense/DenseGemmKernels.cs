using ILGPU;
using ILGPU.Runtime;

namespace Kernels.Gpu.Dense;

/// <summary>ILGPU kernels for dense GEMM: y[j, r] = Σ_c w[r, c]·x[j, c] (fp32 accumulation).</summary>
/// <remarks>
/// <para>One warp per output row, <see cref="WarpsPerGroup"/> rows per group; grid Y walks blocks of
/// <see cref="TokensPerWarp"/> activation vectors, so each weight is loaded once per block and reused from registers.</para>
/// <para>Vector path (k % 4 == 0): each lane loads 4 weights per step with one 8-byte (bf16) or two 8-byte (fp32) loads,
/// coalesced across the warp; a shuffle-down tree reduces the lanes and lane 0 writes. Scalar path otherwise.
/// Summation order differs from the CPU paths; the error bound is the same γ_k bound.</para>
/// </remarks>
internal static class DenseGemmKernels
{
    public const int WarpsPerGroup = 4;
    public const int TokensPerWarp = 8;

    /// <summary>4 consecutive weights as floats from a quad index (bf16: one ulong; fp32: two ulongs).</summary>
    private static void LoadQuad(ArrayView<ulong> w, long quad, bool bf16, out float w0, out float w1, out float w2, out float w3)
    {
        if (bf16)
        {
            ulong u = w[quad];
            uint lo = (uint)u, hi = (uint)(u >> 32);
            w0 = Interop.IntAsFloat(lo << 16);
            w1 = Interop.IntAsFloat(lo & 0xFFFF0000u);
            w2 = Interop.IntAsFloat(hi << 16);
            w3 = Interop.IntAsFloat(hi & 0xFFFF0000u);
        }
        else
        {
            ulong a = w[2 * quad], b = w[2 * quad + 1];
            w0 = Interop.IntAsFloat((uint)a);
            w1 = Interop.IntAsFloat((uint)(a >> 32));
            w2 = Interop.IntAsFloat((uint)b);
            w3 = Interop.IntAsFloat((uint)(b >> 32));
        }
    }

    private static float DotQuad(ArrayView<ulong> x2, long xQuad, float w0, float w1, float w2, float w3)
    {
        ulong a = x2[2 * xQuad], b = x2[2 * xQuad + 1];
        return w0 * Interop.IntAsFloat((uint)a) + w1 * Interop.IntAsFloat((uint)(a >> 32))
             + w2 * Interop.IntAsFloat((uint)b) + w3 * Interop.IntAsFloat((uint)(b >> 32));
    }

    /// <summary>Vector path. <paramref name="w"/> is the weight buffer viewed as ulong; <paramref name="x2"/> x viewed as ulong pairs.</summary>
    public static void Vector(ArrayView<ulong> w, ArrayView<ulong> x2, ArrayView<float> y, int m, int k, int n, int bf16Flag)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j0 = Grid.IdxY * TokensPerWarp;
        if (r >= m) return;
        bool bf16 = bf16Flag != 0;
        int quads = k / 4;
        int tokens = IntrinsicMath.Min(TokensPerWarp, n - j0);
        long rowQuad = (long)r * quads;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (int q = Warp.LaneIdx; q < quads; q += Warp.WarpSize)
        {
            LoadQuad(w, rowQuad + q, bf16, out float w0, out float w1, out float w2, out float w3);
            long xq = (long)j0 * quads + q;
            a0 += DotQuad(x2, xq, w0, w1, w2, w3);
            if (tokens > 1) a1 += DotQuad(x2, xq + quads, w0, w1, w2, w3);
            if (tokens > 2) a2 += DotQuad(x2, xq + 2L * quads, w0, w1, w2, w3);
            if (tokens > 3) a3 += DotQuad(x2, xq + 3L * quads, w0, w1, w2, w3);
            if (tokens > 4) a4 += DotQuad(x2, xq + 4L * quads, w0, w1, w2, w3);
            if (tokens > 5) a5 += DotQuad(x2, xq + 5L * quads, w0, w1, w2, w3);
            if (tokens > 6) a6 += DotQuad(x2, xq + 6L * quads, w0, w1, w2, w3);
            if (tokens > 7) a7 += DotQuad(x2, xq + 7L * quads, w0, w1, w2, w3);
        }
        a0 = WarpSum(a0); a1 = WarpSum(a1); a2 = WarpSum(a2); a3 = WarpSum(a3);
        a4 = WarpSum(a4); a5 = WarpSum(a5); a6 = WarpSum(a6); a7 = WarpSum(a7);
        if (!Warp.IsFirstLane) return;
        long o = (long)j0 * m + r;
        y[o] = a0;
        if (tokens > 1) y[o + m] = a1;
        if (tokens > 2) y[o + 2L * m] = a2;
        if (tokens > 3) y[o + 3L * m] = a3;
        if (tokens > 4) y[o + 4L * m] = a4;
        if (tokens > 5) y[o + 5L * m] = a5;
        if (tokens > 6) y[o + 6L * m] = a6;
        if (tokens > 7) y[o + 7L * m] = a7;
    }

    /// <summary>
    /// GEMV path (n = 1, k % 4 == 0): each lane issues 4 independent quad loads per iteration before using any of them,
    /// so every warp keeps 4 × 32 loads in flight — GEMV on a GPU is bound by memory-level parallelism, not arithmetic.
    /// </summary>
    public static void Gemv(ArrayView<ulong> w, ArrayView<ulong> x2, ArrayView<float> y, int m, int k, int bf16Flag)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        if (r >= m) return;
        bool bf16 = bf16Flag != 0;
        int quads = k / 4;
        long rowQuad = (long)r * quads;
        int lane = Warp.LaneIdx;
        float acc0 = 0, acc1 = 0;
        int q = lane;
        for (; q + 3 * 32 < quads; q += 4 * 32)
        {
            LoadQuad(w, rowQuad + q, bf16, out float a0, out float a1, out float a2, out float a3);
            LoadQuad(w, rowQuad + q + 32, bf16, out float b0, out float b1, out float b2, out float b3);
            LoadQuad(w, rowQuad + q + 64, bf16, out float c0, out float c1, out float c2, out float c3);
            LoadQuad(w, rowQuad + q + 96, bf16, out float d0, out float d1, out float d2, out float d3);
            acc0 += DotQuad(x2, q, a0, a1, a2, a3) + DotQuad(x2, q + 64, c0, c1, c2, c3);
            acc1 += DotQuad(x2, q + 32, b0, b1, b2, b3) + DotQuad(x2, q + 96, d0, d1, d2, d3);
        }
        for (; q < quads; q += 32)
        {
            LoadQuad(w, rowQuad + q, bf16, out float a0, out float a1, out float a2, out float a3);
            acc0 += DotQuad(x2, q, a0, a1, a2, a3);
        }
        float acc = WarpSum(acc0 + acc1);
        if (Warp.IsFirstLane) y[r] = acc;
    }

    /// <summary>Scalar path for any k: one token per grid Y index.</summary>
    public static void Scalar(ArrayView<uint> wBits, ArrayView<float> x, ArrayView<float> y, int m, int k, int bf16Flag)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j = Grid.IdxY;
        if (r >= m) return;
        long wBase = (long)r * k, xBase = (long)j * k;
        float acc = 0;
        for (int c = Warp.LaneIdx; c < k; c += Warp.WarpSize)
        {
            long e = wBase + c;
            float wv = bf16Flag != 0
                ? Interop.IntAsFloat(((e & 1) == 0 ? wBits[e >> 1] << 16 : wBits[e >> 1] & 0xFFFF0000u))
                : Interop.IntAsFloat(wBits[e]);
            acc += wv * x[xBase + c];
        }
        acc = WarpSum(acc);
        if (Warp.IsFirstLane) y[(long)j * m + r] = acc;
    }

    public static float WarpSum(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) v += Warp.ShuffleDown(v, offset);
        return v;
    }
}

/// <summary>Loads the dense GEMM kernels once and launches them.</summary>
internal sealed class DenseGemmLauncher
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<ulong>, ArrayView<ulong>, ArrayView<float>, int, int, int, int> _vector;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<float>, ArrayView<float>, int, int, int> _scalar;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<ulong>, ArrayView<ulong>, ArrayView<float>, int, int, int> _gemv;
    private readonly int _groupSize;

    public DenseGemmLauncher(Accelerator accelerator)
    {
        _vector = accelerator.LoadKernel<ArrayView<ulong>, ArrayView<ulong>, ArrayView<float>, int, int, int, int>(DenseGemmKernels.Vector);
        _scalar = accelerator.LoadKernel<ArrayView<uint>, ArrayView<float>, ArrayView<float>, int, int, int>(DenseGemmKernels.Scalar);
        _gemv = accelerator.LoadKernel<ArrayView<ulong>, ArrayView<ulong>, ArrayView<float>, int, int, int>(DenseGemmKernels.Gemv);
        _groupSize = DenseGemmKernels.WarpsPerGroup * accelerator.WarpSize;
    }

    public void Launch(AcceleratorStream stream, DeviceTensor weights, ArrayView<float> x, ArrayView<float> y, int m, int k, int n)
    {
        bool bf16 = weights.DType == DType.BF16;
        ArrayView<byte> padded = bf16
            ? ((ArrayView<BFloat16>)((GpuTensor<BFloat16>)weights).PaddedView).Cast<byte>()
            : ((ArrayView<float>)((GpuTensor<float>)weights).PaddedView).Cast<byte>();
        LaunchRaw(stream, padded, bf16, x, y, m, k, n);
    }

    /// <summary>
    /// Launches on raw weight bytes (fp32 or bf16, row-major <c>[m, k]</c>) — used by families that produce bf16 weights on
    /// the device (e.g. DFloat11 decompression). <paramref name="weightBytes"/> must hold at least <c>m·k</c> elements
    /// rounded up to a whole 4-byte word.
    /// </summary>
    public void LaunchRaw(AcceleratorStream stream, ArrayView<byte> weightBytes, bool bf16, ArrayView<float> x, ArrayView<float> y, int m, int k, int n)
    {
        long bytes = (long)m * k * (bf16 ? 2 : 4);
        int groups = (m + DenseGemmKernels.WarpsPerGroup - 1) / DenseGemmKernels.WarpsPerGroup;
        if (k % 4 == 0 && k > 0 && n == 1)
        {
            _gemv(stream, new KernelConfig(new Index2D(groups, 1), new Index2D(_groupSize, 1)), weightBytes.SubView(0, bytes).Cast<ulong>(), x.Cast<ulong>(), y, m, k, bf16 ? 1 : 0);
        }
        else if (k % 4 == 0 && k > 0)
        {
            var config = new KernelConfig(new Index2D(groups, (n + DenseGemmKernels.TokensPerWarp - 1) / DenseGemmKernels.TokensPerWarp), new Index2D(_groupSize, 1));
            _vector(stream, config, weightBytes.SubView(0, bytes).Cast<ulong>(), x.Cast<ulong>(), y, m, k, n, bf16 ? 1 : 0);
        }
        else
        {
            // Any k: view the weights as whole 4-byte words (a bf16 tensor with an odd element count uses its padding).
            long words = (bytes + 3) / 4;
            var config = new KernelConfig(new Index2D(groups, Math.Max(n, 1)), new Index2D(_groupSize, 1));
            _scalar(stream, config, weightBytes.SubView(0, words * 4).Cast<uint>(), x, y, m, k, bf16 ? 1 : 0);
        }
    }
}
