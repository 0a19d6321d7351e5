using ILGPU;
using ILGPU.Runtime;

namespace Kernels.Gpu.Fpx;

/// <summary>ILGPU kernels for FP6/FP5 and INT6 GEMV/GEMM on the CPU packing (<c>FpxPacking</c>): y[j, r] for every row r, token j.</summary>
/// <remarks>
/// One warp per output row (<see cref="WarpsPerGroup"/> rows per group), grid Y = token. For FP6/FP5 and W6A16 each lane
/// decodes the codes of columns <c>lane, lane + 32, …</c> straight from the two planes (coalesced byte reads) and multiplies
/// in fp32; a shuffle-down tree reduces the warp. Decoding uses integers only — <c>|v| = (e = 0 ? m : (4 + m) &lt;&lt; (e − 1)) ·
/// 2^(−1 − bias)</c> — so it is exact even where the device flushes fp32 subnormals. W6A8: a first kernel quantizes each token
/// (one warp per token: max-reduce, then round half to even like the CPU), a second one gives each lane whole groups
/// (exact int32 group dots, then <c>scale_g · dot</c> in fp32). Summation order differs from the CPU paths (same error bounds).
/// </remarks>
internal static class FpxGemmKernels
{
    public const int WarpsPerGroup = 4;

    /// <summary>The signed value of code (r, c): FP magnitude in units of the smallest subnormal times the unit, or INT6 q.</summary>
    private static float Decode(ArrayView<byte> high, ArrayView<byte> low, long blk, int i, int kind)
    {
        int nib = (low[blk * 32 + (i & 31)] >> (4 * (i >> 5))) & 15;
        if (kind == 1)
        {
            int s1 = (high[blk * 8 + (i & 7)] >> (i >> 3)) & 1;
            int e1 = nib >> 2, m1 = nib & 3;
            int mag1 = e1 == 0 ? m1 : (4 + m1) << (e1 - 1);
            float v1 = mag1 * 0.25f;
            return s1 != 0 ? -v1 : v1;
        }
        int two = (high[blk * 16 + (i & 15)] >> (2 * (i >> 4))) & 3;
        if (kind == 2) return ((two << 4) | nib) - 32;
        int e = ((two & 1) << 2) | (nib >> 2), m = nib & 3;
        int mag = e == 0 ? m : (4 + m) << (e - 1);
        float v = mag * 0.0625f;
        return (two >> 1) != 0 ? -v : v;
    }

    /// <summary>FP6 (kind 0), FP5 (kind 1): y = scale_r · Σ Decode·x; INT6 W6A16 (kind 2): y = Σ (q·scale_g)·x.</summary>
    public static void Gemm(ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<float> x, ArrayView<float> y,
        int m, int k, int kPad, int kind, int groupSize)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j = Grid.IdxY;
        if (r >= m) return;
        int blocks = kPad / 64, groups = (k + groupSize - 1) / groupSize;
        long xBase = (long)j * k;
        float acc = 0;
        for (int c = Warp.LaneIdx; c < k; c += Warp.WarpSize)
        {
            float w = Decode(high, low, (long)r * blocks + c / 64, c & 63, kind);
            if (kind == 2) w *= scales[(long)r * groups + c / groupSize];
            acc += w * x[xBase + c];
        }
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) acc += Warp.ShuffleDown(acc, offset);
        if (Warp.IsFirstLane) y[(long)j * m + r] = kind == 2 ? acc : acc * scales[r];
    }

    /// <summary>Per-token int8 quantization: one warp per token.</summary>
    public static void QuantizeActivations(ArrayView<float> x, ArrayView<sbyte> xq, ArrayView<float> xScales, int n, int k)
    {
        int j = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        if (j >= n) return;
        long b = (long)j * k;
        float amax = 0;
        for (int c = Warp.LaneIdx; c < k; c += Warp.WarpSize) amax = XMax(amax, Abs(x[b + c]));
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) amax = XMax(amax, Warp.ShuffleDown(amax, offset));
        amax = Warp.Shuffle(amax, 0);
        float s = amax / 127f;
        if (s == 0) s = 1;
        for (int c = Warp.LaneIdx; c < k; c += Warp.WarpSize)
        {
            double v = x[b + c] / (double)s;
            double f = Floor(v + 0.5);
            if (f - v == 0.5 && ((long)f & 1) != 0) f -= 1; // ties to even
            if (f > 127) f = 127;
            if (f < -127) f = -127;
            xq[b + c] = (sbyte)(int)f;
        }
        if (Warp.IsFirstLane) xScales[j] = s;
    }

    /// <summary>W6A8: lanes own whole groups; exact int32 group dots, then fp32 scale and warp sum.</summary>
    public static void GemmW6A8(ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<sbyte> xq, ArrayView<float> xScales,
        ArrayView<float> y, int m, int k, int kPad, int groupSize)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j = Grid.IdxY;
        if (r >= m) return;
        int blocks = kPad / 64, groups = (k + groupSize - 1) / groupSize;
        long xBase = (long)j * k;
        float acc = 0;
        for (int g = Warp.LaneIdx; g < groups; g += Warp.WarpSize)
        {
            int dot = 0;
            int end = (g + 1) * groupSize < k ? (g + 1) * groupSize : k;
            for (int c = g * groupSize; c < end; c++)
                dot += (int)Decode(high, low, (long)r * blocks + c / 64, c & 63, 2) * xq[xBase + c];
            acc += scales[(long)r * groups + g] * dot;
        }
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) acc += Warp.ShuffleDown(acc, offset);
        if (Warp.IsFirstLane) y[(long)j * m + r] = acc * xScales[j];
    }

    private static float Abs(float v) => v < 0 ? -v : v;

    private static float XMax(float a, float b) => a > b ? a : b;

    private static double Floor(double v)
    {
        double t = (long)v;
        return t > v ? t - 1 : t;
    }
}

/// <summary>Loads the FP6/FP5/INT6 kernels once and launches them.</summary>
internal sealed class FpxGemmLauncher
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int> _gemm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, int, int> _quantize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, int, int, int, int> _a8;
    private readonly int _groupSize;

    public FpxGemmLauncher(Accelerator accelerator)
    {
        _gemm = accelerator.LoadKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(FpxGemmKernels.Gemm);
        _quantize = accelerator.LoadKernel<ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, int, int>(FpxGemmKernels.QuantizeActivations);
        _a8 = accelerator.LoadKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, int, int, int, int>(FpxGemmKernels.GemmW6A8);
        _groupSize = FpxGemmKernels.WarpsPerGroup * accelerator.WarpSize;
    }

    private KernelConfig Config(int rows, int n) =>
        new(new Index2D((rows + FpxGemmKernels.WarpsPerGroup - 1) / FpxGemmKernels.WarpsPerGroup, n), new Index2D(_groupSize, 1));

    public void Gemm(AcceleratorStream stream, ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<float> x, ArrayView<float> y,
        int m, int k, int kPad, int n, int kind, int groupSize) =>
        _gemm(stream, Config(m, n), high, low, scales, x, y, m, k, kPad, kind, groupSize);

    public void GemmW6A8(AcceleratorStream stream, ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<float> x,
        ArrayView<sbyte> xq, ArrayView<float> xScales, ArrayView<float> y, int m, int k, int kPad, int n, int groupSize)
    {
        _quantize(stream, Config(n, 1), x, xq, xScales, n, k);
        _a8(stream, Config(m, n), high, low, scales, xq, xScales, y, m, k, kPad, groupSize);
    }
}
