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
    private static float Decode(ArrayView<byte> high, ArrayView<byte> low, long blk, int i, int kind) =>
        DecodeBytes(LowByte(low, blk, i), HighByte(high, blk, i, kind), i, kind);

    /// <summary>The low-plane byte holding code i of block <paramref name="blk"/> (its nibble is <c>4·(i / 32)</c> up).</summary>
    private static int LowByte(ArrayView<byte> low, long blk, int i) => low[blk * 32 + (i & 31)];

    /// <summary>The high-plane byte holding code i's top bit (FP5: 8 bytes per block) or top two bits (16 bytes per block).</summary>
    private static int HighByte(ArrayView<byte> high, long blk, int i, int kind) =>
        kind == 1 ? high[blk * 8 + (i & 7)] : high[blk * 16 + (i & 15)];

    /// <summary><see cref="Decode"/> from the two plane bytes already loaded.</summary>
    private static float DecodeBytes(int lowByte, int highByte, int i, int kind)
    {
        int nib = (lowByte >> (4 * (i >> 5))) & 15;
        if (kind == 1)
        {
            int s1 = (highByte >> (i >> 3)) & 1;
            int e1 = nib >> 2, m1 = nib & 3;
            int mag1 = e1 == 0 ? m1 : (4 + m1) << (e1 - 1);
            float v1 = mag1 * 0.25f;
            return s1 != 0 ? -v1 : v1;
        }
        int two = (highByte >> (2 * (i >> 4))) & 3;
        if (kind == 2) return ((two << 4) | nib) - 32;
        int e = ((two & 1) << 2) | (nib >> 2), m = nib & 3;
        int mag = e == 0 ? m : (4 + m) << (e - 1);
        float v = mag * 0.0625f;
        return (two >> 1) != 0 ? -v : v;
    }

    /// <summary>FP6 (kind 0), FP5 (kind 1): y = scale_r · Σ Decode·x; INT6 W6A16 (kind 2): y = Σ (q·scale_g)·x.</summary>
    /// <remarks>Each lane takes four of its columns per step (c, c + 32, c + 64, c + 96 with 32 lanes) and issues all their loads (plane
    /// bytes, activations, group scales) before decoding any: a loop that loads, decodes and accumulates one column at a
    /// time has one load in flight per lane, and GEMV on a GPU is bound by memory-level parallelism (on an H100, FP6 GEMV
    /// 4096² took 67 µs that way on 2026-11-22, 0.29× dense bf16). The sums are taken in the same order as before, column by
    /// column, so results are unchanged.</remarks>
    public static void Gemm(ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<float> x, ArrayView<int> exps,
        ArrayView<float> y, int m, int k, int kPad, int kind, int groupSize)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j = Grid.IdxY;
        if (r >= m) return;
        int blocks = kPad / 64, groups = (k + groupSize - 1) / groupSize;
        long xBase = (long)j * k, rowBlocks = (long)r * blocks, rowGroups = (long)r * groups;
        float acc = 0;
        int c = Warp.LaneIdx, ws = Warp.WarpSize;
        // FP6/FP5: the token is pre-scaled by 2^e (TokenExponents; e = 0 for INT6), 2^−e folded into the row-scale epilogue.
        int e = kind != 2 ? exps[j] : 0;
        int e1 = IntrinsicMath.Min(e, 127), e2 = e - e1;
        float f1 = Interop.IntAsFloat((uint)(e1 + 127) << 23), f2 = Interop.IntAsFloat((uint)(e2 + 127) << 23);
        for (; c + 3 * ws < k; c += 4 * ws)
        {
            int c1 = c + ws, c2 = c + 2 * ws, c3 = c + 3 * ws;
            long b0 = rowBlocks + c / 64, b1 = rowBlocks + c1 / 64, b2 = rowBlocks + c2 / 64, b3 = rowBlocks + c3 / 64;
            int l0 = LowByte(low, b0, c & 63), l1 = LowByte(low, b1, c1 & 63), l2 = LowByte(low, b2, c2 & 63), l3 = LowByte(low, b3, c3 & 63);
            int h0 = HighByte(high, b0, c & 63, kind), h1 = HighByte(high, b1, c1 & 63, kind);
            int h2 = HighByte(high, b2, c2 & 63, kind), h3 = HighByte(high, b3, c3 & 63, kind);
            float x0 = x[xBase + c] * f1 * f2, x1 = x[xBase + c1] * f1 * f2, x2 = x[xBase + c2] * f1 * f2, x3 = x[xBase + c3] * f1 * f2;
            float s0 = 1, s1 = 1, s2 = 1, s3 = 1;
            if (kind == 2)
            {
                s0 = scales[rowGroups + c / groupSize];
                s1 = scales[rowGroups + c1 / groupSize];
                s2 = scales[rowGroups + c2 / groupSize];
                s3 = scales[rowGroups + c3 / groupSize];
            }
            float w0 = DecodeBytes(l0, h0, c & 63, kind), w1 = DecodeBytes(l1, h1, c1 & 63, kind);
            float w2 = DecodeBytes(l2, h2, c2 & 63, kind), w3 = DecodeBytes(l3, h3, c3 & 63, kind);
            if (kind == 2)
            {
                w0 *= s0;
                w1 *= s1;
                w2 *= s2;
                w3 *= s3;
            }
            acc += w0 * x0;
            acc += w1 * x1;
            acc += w2 * x2;
            acc += w3 * x3;
        }
        for (; c < k; c += ws)
        {
            float w = Decode(high, low, rowBlocks + c / 64, c & 63, kind);
            if (kind == 2) w *= scales[rowGroups + c / groupSize];
            acc += w * (x[xBase + c] * f1 * f2);
        }
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) acc += Warp.ShuffleDown(acc, offset);
        if (Warp.IsFirstLane) y[(long)j * m + r] = kind == 2 ? acc : (float)((double)acc * scales[r] * Pow2(-e));
    }

    /// <summary>FP6/FP5 activation exponents, one warp per token: e = 100 − ilogb(max finite |x|), clamped to [−126, 254]
    /// (0 for a token without a nonzero finite element), the CPU's <c>FpxGemm.ScaleActivations</c> rule. <see cref="Gemm"/>
    /// multiplies the token by 2^e (two exact power-of-two factors) and the row's result by 2^−e: |decoded code| is up to 28,
    /// so w·x overflowed for |x| ≳ 1e37 and lost bits for tiny x. Once per token here rather than in every row's warp.</summary>
    public static void TokenExponents(ArrayView<float> x, ArrayView<int> exps, int n, int k)
    {
        int j = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        if (j >= n) return;
        float amax = TokenAbsMax(x, (long)j * k, k, finiteOnly: true); // Inf/NaN propagate unscaled
        int e = 0;
        if (amax > 0)
        {
            uint bits = Interop.FloatAsInt(amax);
            int biased = (int)((bits >> 23) & 0xFF);
            int ilogb = biased != 0 ? biased - 127 : (int)((Interop.FloatAsInt(amax * 16777216f) >> 23) & 0xFF) - 127 - 24;
            e = IntrinsicMath.Clamp(100 - ilogb, -126, 254);
        }
        if (Warp.IsFirstLane) exps[j] = e;
    }

    /// <summary>Per-token int8 quantization: one warp per token.</summary>
    public static void QuantizeActivations(ArrayView<float> x, ArrayView<sbyte> xq, ArrayView<float> xScales, int n, int k)
    {
        int j = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        if (j >= n) return;
        long b = (long)j * k;
        float amax = TokenAbsMax(x, b, k, finiteOnly: false);
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

    /// <summary>W6A8: one warp per row, two groups per step; lane l takes columns <c>l + 32u</c> of each group (coalesced),
    /// issues the plane-byte and activation loads of all of them (up to 24) before multiplying, and a butterfly of shuffles
    /// gives every lane each group's exact int32 dot; then <c>acc += scale_g · dot_g</c> in group order.</summary>
    /// <remarks>Until the eleventh session each lane owned whole groups and walked one group's codes one by one: every load
    /// of a warp touched 32 different 32-byte sectors, one load in flight per lane (on an H100, W6A8 GEMV 4096² took 159 µs
    /// on 2026-11-22, 0.12× dense bf16).</remarks>
    public static void GemmW6A8(ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<sbyte> xq, ArrayView<float> xScales,
        ArrayView<float> y, int m, int k, int kPad, int groupSize)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j = Grid.IdxY;
        if (r >= m) return;
        int blocks = kPad / 64, groups = (k + groupSize - 1) / groupSize;
        long xBase = (long)j * k, rowBlocks = (long)r * blocks, rowGroups = (long)r * groups;
        int lane = Warp.LaneIdx, ws = Warp.WarpSize, per = groupSize / ws; // columns per lane and group: 2 or 4 (32 lanes)
        float acc = 0;
        for (int g = 0; g < groups; g += 2)
        {
            int ca = g * groupSize + lane, cb = ca + groupSize;
            // Every load of both groups first (columns past k read nothing and weigh 0).
            Column(high, low, xq, rowBlocks, xBase, k, ca, out int la0, out int ha0, out int xa0);
            Column(high, low, xq, rowBlocks, xBase, k, per > 1 ? ca + ws : k, out int la1, out int ha1, out int xa1);
            Column(high, low, xq, rowBlocks, xBase, k, per > 2 ? ca + 2 * ws : k, out int la2, out int ha2, out int xa2);
            Column(high, low, xq, rowBlocks, xBase, k, per > 2 ? ca + 3 * ws : k, out int la3, out int ha3, out int xa3);
            Column(high, low, xq, rowBlocks, xBase, k, cb, out int lb0, out int hb0, out int xb0);
            Column(high, low, xq, rowBlocks, xBase, k, per > 1 ? cb + ws : k, out int lb1, out int hb1, out int xb1);
            Column(high, low, xq, rowBlocks, xBase, k, per > 2 ? cb + 2 * ws : k, out int lb2, out int hb2, out int xb2);
            Column(high, low, xq, rowBlocks, xBase, k, per > 2 ? cb + 3 * ws : k, out int lb3, out int hb3, out int xb3);
            int dotA = Q(la0, ha0, ca) * xa0 + Q(la1, ha1, ca + ws) * xa1 + Q(la2, ha2, ca + 2 * ws) * xa2 + Q(la3, ha3, ca + 3 * ws) * xa3;
            int dotB = Q(lb0, hb0, cb) * xb0 + Q(lb1, hb1, cb + ws) * xb1 + Q(lb2, hb2, cb + 2 * ws) * xb2 + Q(lb3, hb3, cb + 3 * ws) * xb3;
            for (int o = ws / 2; o > 0; o >>= 1)
            {
                dotA += Warp.ShuffleXor(dotA, o);
                dotB += Warp.ShuffleXor(dotB, o);
            }
            acc += scales[rowGroups + g] * dotA;
            if (g + 1 < groups) acc += scales[rowGroups + g + 1] * dotB;
        }
        if (Warp.IsFirstLane) y[(long)j * m + r] = acc * xScales[j];
    }

    /// <summary>The plane bytes and int8 activation of column <paramref name="c"/> (all 0, nothing read, when c ≥ k).</summary>
    private static void Column(ArrayView<byte> high, ArrayView<byte> low, ArrayView<sbyte> xq, long rowBlocks, long xBase, int k, int c,
        out int lowByte, out int highByte, out int xv)
    {
        if (c < k)
        {
            long blk = rowBlocks + c / 64;
            lowByte = LowByte(low, blk, c & 63);
            highByte = HighByte(high, blk, c & 63, 2);
            xv = xq[xBase + c];
        }
        else
        {
            lowByte = highByte = xv = 0;
        }
    }

    /// <summary>The INT6 code q of column c from its plane bytes (as <see cref="DecodeBytes"/> with kind 2, in integers).</summary>
    private static int Q(int lowByte, int highByte, int c) => (int)DecodeBytes(lowByte, highByte, c & 63, 2);

    private static float Abs(float v) => v < 0 ? -v : v;

    /// <summary>max |x[b + c]| over c &lt; k (only finite elements with <paramref name="finiteOnly"/>), reduced across the warp
    /// and given to every lane: lanes stride over the token, then a shuffle-down tree.</summary>
    private static float TokenAbsMax(ArrayView<float> x, long b, int k, bool finiteOnly)
    {
        float amax = 0;
        for (int c = Warp.LaneIdx; c < k; c += Warp.WarpSize)
        {
            float a = Abs(x[b + c]);
            amax = XMax(amax, !finiteOnly || a < float.PositiveInfinity ? a : 0);
        }
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) amax = XMax(amax, Warp.ShuffleDown(amax, offset));
        return Warp.Shuffle(amax, 0);
    }

    /// <summary>2^p as a double, exact for p in [−254, 126].</summary>
    private static double Pow2(int p) => Interop.IntAsFloat((ulong)(p + 1023) << 52);

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
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, int, int> _gemm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, int, int> _exponents;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, int, int> _quantize;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, int, int, int, int> _a8;
    private readonly int _groupSize;

    public FpxGemmLauncher(Accelerator accelerator)
    {
        _gemm = accelerator.LoadKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, int, int>(FpxGemmKernels.Gemm);
        _exponents = accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, int, int>(FpxGemmKernels.TokenExponents);
        _quantize = accelerator.LoadKernel<ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, int, int>(FpxGemmKernels.QuantizeActivations);
        _a8 = accelerator.LoadKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, int, int, int, int>(FpxGemmKernels.GemmW6A8);
        _groupSize = FpxGemmKernels.WarpsPerGroup * accelerator.WarpSize;
    }

    private KernelConfig Config(int rows, int n) =>
        new(new Index2D((rows + FpxGemmKernels.WarpsPerGroup - 1) / FpxGemmKernels.WarpsPerGroup, n), new Index2D(_groupSize, 1));

    /// <summary>FP6/FP5 (kind 0, 1: the tokens' exponents first, into <paramref name="exps"/>, n ints) or INT6 W6A16 (kind 2;
    /// <paramref name="exps"/> is not touched).</summary>
    public void Gemm(AcceleratorStream stream, ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<float> x,
        ArrayView<int> exps, ArrayView<float> y, int m, int k, int kPad, int n, int kind, int groupSize)
    {
        if (kind != 2) _exponents(stream, Config(n, 1), x, exps, n, k);
        _gemm(stream, Config(m, n), high, low, scales, x, exps, y, m, k, kPad, kind, groupSize);
    }

    public void GemmW6A8(AcceleratorStream stream, ArrayView<byte> high, ArrayView<byte> low, ArrayView<float> scales, ArrayView<float> x,
        ArrayView<sbyte> xq, ArrayView<float> xScales, ArrayView<float> y, int m, int k, int kPad, int n, int groupSize)
    {
        _quantize(stream, Config(n, 1), x, xq, xScales, n, k);
        _a8(stream, Config(m, n), high, low, scales, xq, xScales, y, m, k, kPad, groupSize);
    }
}
