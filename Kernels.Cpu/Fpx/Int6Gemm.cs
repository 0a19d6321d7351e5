using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Simd;
using Kernels.Cpu.Threading;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;

namespace Kernels.Cpu.Fpx;

/// <summary>FlexQ-style INT6 GEMV/GEMM: W6A16 (fp32/bf16 activations) and W6A8 (int8 per-token activations, integer dot products).</summary>
/// <remarks>
/// <para>Layout as in <see cref="IDenseOps"/>: weights <c>[m, k]</c> (<see cref="Int6Weights"/>, groups of 64 or 128 along k),
/// x <c>[n, k]</c>, y <c>[n, m]</c>. Oracle: <see cref="FpxReference.GemmW6A16"/> and <see cref="FpxReference.GemmW6A8"/>.</para>
/// <para>W6A16: AVX-512 GEMV accumulates <c>Σ_{c∈g} q·x</c> per group (q exact in fp32: the unpacked pattern 2^23 + u minus
/// 2^23 + 32) and adds <c>scale_g ·</c> that sum; the other paths decode rows to <c>(float)(q · scale_g)</c> and use 4×4 tiles.
/// Bound: <c>|y − y_ref| ≤ 1.01·(k + G)·2⁻²⁴ · Σ|q·scale·x| + 2⁻²⁴|y_ref|</c> (G groups).</para>
/// <para>W6A8: activations are quantized per token exactly like <see cref="FpxReference.QuantizeActivations"/>
/// (<c>scale = max|x|/127</c>, round half to even); per group the dot <c>Σ q·xq</c> is computed exactly in int32 lanes
/// (16 on AVX-512, 8 on AVX2, 4 on Vector128; each lane holds an exact partial sum), the lanes are converted to fp32 and
/// multiplied by the group scale with FMA into fp32 lane accumulators, and the lanes are summed at the end:
/// <c>y = xScale · Σ_g scale_g · dot_g</c>. Bound: <c>1.01·(G+18)·2⁻²⁴ · xScale·Σ_g scale_g·Σ_c (|q| + 32)·|xq|</c> (G groups
/// per row): the lanes hold the stored codes' products <c>(q + 32)·xq</c> and the offset's correction <c>32·Σ xq</c> sits in
/// one lane, so the fp32 conversion, FMA and lane sum round values as large as that, not only <c>Σ|q·xq|</c>. (Until
/// 2026-12-02 the bound was stated against <c>Σ|q·xq|</c>; a row of few columns with a small code beside a large one missed
/// it by 1.38×. Removing the offset lane by lane before rounding was written and measured: 1.3–1.7× slower GEMV, for an
/// error already ≈ 2⁻²⁰ of the row's magnitude, far below int6's quantization error.)
/// The int8 dot uses <c>vpmaddubsw</c> (unsigned × signed bytes, pairs summed with signed 16-bit saturation) then <c>vpmaddwd</c>
/// with ones. The unsigned operand is the stored code <c>u = q + 32 ∈ [1, 63]</c> and the signed one the activation
/// <c>a ∈ [−128, 127]</c>, so a pair sum is at most <c>2 · 63 · 128 = 16128 &lt; 32767</c>: saturation can never happen
/// (the tests drive every path with all-extreme values). The offset is removed exactly per group: <c>dot = Σ u·a − 32·Σ a</c>
/// in int32 (|Σ u·a| ≤ 128·63·128 &lt; 2^21). .NET 10 exposes no 512-bit VNNI, so this two-instruction form is used on AVX-512 and AVX2.</para>
/// <para>Determinism: per ISA path, independent of the thread count. Integer parts are identical on every path.</para>
/// </remarks>
public static unsafe partial class Int6Gemm
{
    /// <summary>W6A16: <c>y = x · Wᵀ</c> with fp32 activations.</summary>
    /// <param name="weights">INT6 weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="n">Activation vectors.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length, or y overlaps x.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void GemmW6A16(Int6Weights weights, ReadOnlySpan<float> x, Span<float> y, int n, KernelOptions? options = null)
        => RunW6A16(weights, x, y, n, options);

    /// <summary>W6A16: <c>y = x · Wᵀ</c> with bf16 activations (widened exactly to fp32).</summary>
    /// <param name="weights">INT6 weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="n">Activation vectors.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length, or y overlaps x.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void GemmW6A16(Int6Weights weights, ReadOnlySpan<BFloat16> x, Span<float> y, int n, KernelOptions? options = null)
        => RunW6A16(weights, x, y, n, options);

    /// <summary>W6A8: quantizes each token to int8 (<c>scale = max|x_j|/127</c>) and computes integer dot products.</summary>
    /// <param name="weights">INT6 weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> finite activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="n">Activation vectors.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length, y overlaps x, or an activation is NaN/±Inf.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void GemmW6A8(Int6Weights weights, ReadOnlySpan<float> x, Span<float> y, int n, KernelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        int k = weights.Columns;
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * k);
        ThrowHelper.ThrowIfOverlapping(x, y, nameof(x), nameof(y));
        IsaPath isa = CpuIsa.Resolve(options);
        sbyte[] xq = ArrayPool<sbyte>.Shared.Rent(n * k);
        float[] xs = ArrayPool<float>.Shared.Rent(n);
        try
        {
            ActivationQuantizer.Quantize(isa, x, k, xq.AsSpan(0, n * k), xs.AsSpan(0, n));
            GemmW6A8(weights, xq.AsSpan(0, n * k), xs.AsSpan(0, n), y, options);
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(xq);
            ArrayPool<float>.Shared.Return(xs);
        }
    }

    /// <summary>W6A8 on pre-quantized activations: <c>y[j, r] = xScales[j] · Σ_g scale[r, g] · Σ_{c∈g} q[r, c]·xq[j, c]</c>.</summary>
    /// <param name="weights">INT6 weights <c>[m, k]</c>.</param>
    /// <param name="xq"><c>n·k</c> int8 activations; every value in [−128, 127] is allowed.</param>
    /// <param name="xScales"><c>n</c> activation scales (n is taken from this length).</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void GemmW6A8(Int6Weights weights, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xScales, Span<float> y, KernelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        int m = weights.Rows, k = weights.Columns, kPad = weights.PaddedColumns, n = xScales.Length, groups = weights.GroupsPerRow;
        ThrowHelper.ThrowIfLengthMismatch(nameof(xq), xq.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * m);
        ThrowHelper.ThrowIfOverlapping(xq, y, nameof(xq), nameof(y));
        ThrowHelper.ThrowIfOverlapping(xScales, y, nameof(xScales), nameof(y));
        // + 64: the buffer is rented one line longer so its rows can start 64-byte aligned.
        if ((long)n * kPad + 64 > Array.MaxLength) ThrowHelper.Argument(nameof(xq), $"n·kPad = {(long)n * kPad} exceeds the largest scratch buffer; split the batch.");
        IsaPath isa = CpuIsa.Resolve(options);
        if (m == 0 || n == 0) return;
        // Padded activations and the per-group offset corrections 32·Σ_{c∈g} xq[j, c].
        sbyte[] a = ArrayPool<sbyte>.Shared.Rent(n * kPad + 64);
        int[] corr = ArrayPool<int>.Shared.Rent(n * groups);
        try
        {
            fixed (byte* ph = weights.HighBits)
            fixed (byte* pl = weights.LowBits)
            fixed (float* ps = weights.Scales, pxs = xScales, py = y)
            fixed (sbyte* pa0 = a)
            fixed (int* pc = corr)
            {
                sbyte* pa = (sbyte*)(((nint)pa0 + 63) & ~(nint)63); // 64-byte rows: the kernels' 512-bit loads never split a line
                for (int j = 0; j < n; j++)
                {
                    var row = new Span<sbyte>(pa + (long)j * kPad, kPad);
                    xq.Slice(j * k, k).CopyTo(row);
                    row[k..].Clear();
                    for (int g = 0; g < groups; g++)
                    {
                        int c0 = g * weights.GroupSize, c1 = Math.Min(k, c0 + weights.GroupSize);
                        corr[j * groups + g] = Int6Weights.Offset * ActivationQuantizer.Sum(xq.Slice(j * k + c0, c1 - c0));
                    }
                }
                var state = new A8Chunks
                {
                    A = new A8Args { High = ph, Low = pl, Scales = ps, X = pa, XScales = pxs, Corr = pc, Y = py, M = m, KPad = kPad, N = n, Groups = groups, GroupBlocks = weights.GroupSize / 64 },
                    Isa = isa, RowsPerChunk = Math.Max(4, (m / (Environment.ProcessorCount * 8)) & ~3),
                };
                int chunks = (m + state.RowsPerChunk - 1) / state.RowsPerChunk;
                int threads = (long)m * kPad * n < 65_536 ? 1 : (options ?? KernelOptions.Default).EffectiveParallelism;
                WorkerPool.Run(chunks, threads, ref state);
            }
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(a);
            ArrayPool<int>.Shared.Return(corr);
        }
    }

    // ------------------------------------------------------------------------------------------------ W6A16

    private static void RunW6A16<TX>(Int6Weights weights, ReadOnlySpan<TX> x, Span<float> y, int n, KernelOptions? options) where TX : unmanaged
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        int m = weights.Rows, k = weights.Columns, kPad = weights.PaddedColumns;
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * m);
        ThrowHelper.ThrowIfOverlapping(x, y, nameof(x), nameof(y));
        if ((long)n * kPad > Array.MaxLength) ThrowHelper.Argument(nameof(x), $"n·kPad = {(long)n * kPad} exceeds the largest scratch buffer; split the batch.");
        IsaPath isa = CpuIsa.Resolve(options);
        if (m == 0 || n == 0) return;
        float[] xs = ArrayPool<float>.Shared.Rent(n * kPad);
        try
        {
            for (int j = 0; j < n; j++)
            {
                Span<float> d = xs.AsSpan(j * kPad, kPad);
                if (typeof(TX) == typeof(float)) System.Runtime.InteropServices.MemoryMarshal.Cast<TX, float>(x.Slice(j * k, k)).CopyTo(d);
                else
                {
                    var xb = System.Runtime.InteropServices.MemoryMarshal.Cast<TX, BFloat16>(x.Slice(j * k, k));
                    for (int c = 0; c < k; c++) d[c] = (float)xb[c];
                }
                d[k..].Clear();
            }
            // The AVX-512 GEMV builds its weight vectors in the unpack lane order of FpxDecode.Patterns512; match it once here.
            // So does the fused small-batch GEMM (every token). The switch is read once: the kernels must agree with the permutation.
            bool fused = FpxGemm.EnableFused;
            if (isa == IsaPath.Avx512 && (n == 1 || fused)) FpxDecode.PermuteForPatterns512(xs.AsSpan(0, n * kPad));
            fixed (byte* ph = weights.HighBits)
            fixed (byte* pl = weights.LowBits)
            fixed (float* ps = weights.Scales, px = xs, py = y)
            {
                var state = new A16Chunks
                {
                    A = new A16Args { High = ph, Low = pl, Scales = ps, X = px, Y = py, M = m, KPad = kPad, N = n, Groups = weights.GroupsPerRow, GroupBlocks = weights.GroupSize / 64, Fused = fused },
                    Isa = isa, RowsPerChunk = Math.Max(4, (m / (Environment.ProcessorCount * 8)) & ~3),
                };
                int chunks = (m + state.RowsPerChunk - 1) / state.RowsPerChunk;
                int threads = (long)m * kPad * n < 65_536 ? 1 : (options ?? KernelOptions.Default).EffectiveParallelism;
                WorkerPool.Run(chunks, threads, ref state);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(xs);
        }
    }

    internal struct A16Args
    {
        public byte* High, Low;
        public float* Scales, X, Y;
        public int M, KPad, N, Groups, GroupBlocks;
        public bool Fused;
    }

    private struct A16Chunks : IChunkKernel<A16Chunks>
    {
        public A16Args A;
        public IsaPath Isa;
        public int RowsPerChunk;

        public static void Execute(ref A16Chunks s, int chunk)
        {
            int r0 = chunk * s.RowsPerChunk, rows = Math.Min(s.RowsPerChunk, s.A.M - r0);
            switch (s.Isa)
            {
                case IsaPath.Avx512: W6A16Avx512(ref s.A, r0, rows); break;
                case IsaPath.Avx2: W6A16Decoded<F32x8>(IsaPath.Avx2, ref s.A, r0, rows); break;
                case IsaPath.Vector128: W6A16Decoded<F32x4>(IsaPath.Vector128, ref s.A, r0, rows); break;
                default: W6A16Scalar(ref s.A, r0, rows); break;
            }
        }
    }

    /// <summary>W6A16, AVX-512: n = 1 fused (decode, FMA, scale per group); n &gt; 1 fused two rows × eight tokens
    /// (<see cref="W6A16Fused512"/>).</summary>
    [SkipLocalsInit]
    internal static void W6A16Avx512(ref A16Args a, int rowStart, int rowCount)
    {
        Debug.Assert(Avx512BW.IsSupported);
        if (a.N != 1)
        {
            if (a.Fused) W6A16Fused512(ref a, rowStart, rowCount);
            else W6A16Decoded<F32x16>(IsaPath.Avx512, ref a, rowStart, rowCount);
            return;
        }
        int blocks = a.KPad / 64, gb = a.GroupBlocks;
        long hs = (long)blocks * 16, ls = (long)blocks * 32;
        var k = new FpxDecode.Consts512(0);
        Vector512<ushort> magicHi = Vector512.Create((ushort)0x4B00);
        Vector512<float> magic = Vector512.Create(8_388_608f + Int6Weights.Offset);
        int r = rowStart, end = rowStart + rowCount;
        // Four rows share each activation load. Per group the unscaled sums Σ q·x run in g*, then acc += g*·scale_g.
        for (; r + 4 <= end; r += 4)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* sc = a.Scales + (long)r * a.Groups;
            Vector512<float> p0 = default, p1 = default, p2 = default, p3 = default;
            for (int b = 0, g = 0; b < blocks; g++)
            {
                Vector512<float> g0 = default, g1 = default, g2 = default, g3 = default;
                for (int e = Math.Min(blocks, b + gb); b < e; b++)
                {
                    float* xb = a.X + 64 * b;
                    FpxGemm.Prefetch4Rows(hi + 16 * b, lo + 32 * b, hs, ls, 16);
                    Vector512<float> x0 = Vector512.Load(xb), x1 = Vector512.Load(xb + 16), x2 = Vector512.Load(xb + 32), x3 = Vector512.Load(xb + 48);
                    RowQ(hi + 16 * b, lo + 32 * b, x0, x1, x2, x3, k, magicHi, magic, ref g0);
                    RowQ(hi + hs + 16 * b, lo + ls + 32 * b, x0, x1, x2, x3, k, magicHi, magic, ref g1);
                    RowQ(hi + 2 * hs + 16 * b, lo + 2 * ls + 32 * b, x0, x1, x2, x3, k, magicHi, magic, ref g2);
                    RowQ(hi + 3 * hs + 16 * b, lo + 3 * ls + 32 * b, x0, x1, x2, x3, k, magicHi, magic, ref g3);
                }
                p0 = Avx512F.FusedMultiplyAdd(g0, Vector512.Create(sc[g]), p0);
                p1 = Avx512F.FusedMultiplyAdd(g1, Vector512.Create(sc[a.Groups + g]), p1);
                p2 = Avx512F.FusedMultiplyAdd(g2, Vector512.Create(sc[2 * a.Groups + g]), p2);
                p3 = Avx512F.FusedMultiplyAdd(g3, Vector512.Create(sc[3 * a.Groups + g]), p3);
            }
            a.Y[r] = F32x16.Sum(new F32x16(p0));
            a.Y[r + 1] = F32x16.Sum(new F32x16(p1));
            a.Y[r + 2] = F32x16.Sum(new F32x16(p2));
            a.Y[r + 3] = F32x16.Sum(new F32x16(p3));
        }
        for (; r < end; r++)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* sc = a.Scales + (long)r * a.Groups;
            Vector512<float> p0 = default;
            for (int b = 0, g = 0; b < blocks; g++)
            {
                Vector512<float> g0 = default;
                for (int e = Math.Min(blocks, b + gb); b < e; b++)
                {
                    float* xb = a.X + 64 * b;
                    RowQ(hi + 16 * b, lo + 32 * b, Vector512.Load(xb), Vector512.Load(xb + 16), Vector512.Load(xb + 32), Vector512.Load(xb + 48), k, magicHi, magic, ref g0);
                }
                p0 = Avx512F.FusedMultiplyAdd(g0, Vector512.Create(sc[g]), p0);
            }
            a.Y[r] = F32x16.Sum(new F32x16(p0));
        }
    }

    // One block of one row: the 64 codes u become floats 2^23 + u by byte/word unpacks with 0x4B00 (vpunpck{l,h}bw with zero,
    // vpunpck{l,h}wd), then subtracting 2^23 + 32 gives q exactly; lane order as FpxDecode.Patterns512 (x is permuted to match).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowQ(byte* hi, byte* lo, Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3,
        in FpxDecode.Consts512 k, Vector512<ushort> magicHi, Vector512<float> magic, ref Vector512<float> acc)
    {
        Vector512<byte> u = FpxDecode.Codes512<Int6Kind>(hi, lo, k);
        Vector512<ushort> w0 = Avx512BW.UnpackLow(u, Vector512<byte>.Zero).AsUInt16(), w1 = Avx512BW.UnpackHigh(u, Vector512<byte>.Zero).AsUInt16();
        Vector512<float> f0 = Avx512BW.UnpackLow(w0, magicHi).AsSingle() - magic;
        Vector512<float> f1 = Avx512BW.UnpackHigh(w0, magicHi).AsSingle() - magic;
        Vector512<float> f2 = Avx512BW.UnpackLow(w1, magicHi).AsSingle() - magic;
        Vector512<float> f3 = Avx512BW.UnpackHigh(w1, magicHi).AsSingle() - magic;
        acc = Avx512F.FusedMultiplyAdd(f0, x0, acc);
        acc = Avx512F.FusedMultiplyAdd(f1, x1, acc);
        acc = Avx512F.FusedMultiplyAdd(f2, x2, acc);
        acc = Avx512F.FusedMultiplyAdd(f3, x3, acc);
    }

    /// <summary>W6A16 on AVX2 / Vector128 (and AVX-512 with n &gt; 1): rows decoded to dequantized fp32, then 4×4 tiles.</summary>
    private static void W6A16Decoded<TV>(IsaPath isa, ref A16Args a, int rowStart, int rowCount) where TV : struct, ISimdF32<TV>
    {
        int kPad = a.KPad, kt = Math.Min(kPad, FpxGemm.KTile);
        float* w = ThreadScratch.Floats(4 * kt + 4 * a.N);
        float* part = w + 4 * kt;
        for (int r = rowStart; r < rowStart + rowCount; r += 4)
        {
            int valid = Math.Min(4, rowStart + rowCount - r);
            new Span<float>(part, 4 * a.N).Clear();
            for (int k0 = 0; k0 < kPad; k0 += kt)
            {
                int len = Math.Min(kt, kPad - k0);
                for (int i = 0; i < 4; i++) DecodeRow(isa, ref a, r + Math.Min(i, valid - 1), k0 / 64, len / 64, w + i * len);
                DecodedDot.Tiles<TV>(w, a.X + k0, kPad, a.N, len, part);
            }
            DecodedDot.Store(part, valid, a.N, r, a.M, null, null, a.Y);
        }
    }

    /// <summary>W6A16 scalar path: decode, then multiply-add in index order.</summary>
    internal static void W6A16Scalar(ref A16Args a, int rowStart, int rowCount)
    {
        float* w = ThreadScratch.Floats(a.KPad);
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            DecodeRow(IsaPath.Scalar, ref a, r, 0, a.KPad / 64, w);
            for (int j = 0; j < a.N; j++)
            {
                float* xj = a.X + (long)j * a.KPad;
                float acc = 0;
                for (int c = 0; c < a.KPad; c++) acc += w[c] * xj[c];
                a.Y[(long)j * a.M + r] = acc;
            }
        }
    }

    // Dequantized row: (float)(q · scale_g) — one rounding, as in the reference.
    private static void DecodeRow(IsaPath isa, ref A16Args a, int r, int b0, int nb, float* w)
    {
        long blk = (long)r * (a.KPad / 64) + b0;
        FpxDecode.Row<Int6Kind>(isa, a.High + blk * 16, a.Low + blk * 32, nb, w);
        float* sc = a.Scales + (long)r * a.Groups;
        for (int b = 0; b < nb; b++)
        {
            var s = new System.Numerics.Vector<float>(sc[(b0 + b) / a.GroupBlocks]);
            float* wb = w + 64 * b;
            for (int i = 0; i < 64; i += System.Numerics.Vector<float>.Count)
                (Unsafe.Read<System.Numerics.Vector<float>>(wb + i) * s).CopyTo(new Span<float>(wb + i, System.Numerics.Vector<float>.Count));
        }
    }

    // ------------------------------------------------------------------------------------------------ W6A8

    internal struct A8Args
    {
        public byte* High, Low;
        public float* Scales, XScales, Y;
        public sbyte* X;
        public int* Corr;
        public int M, KPad, N, Groups, GroupBlocks;
    }

    private struct A8Chunks : IChunkKernel<A8Chunks>
    {
        public A8Args A;
        public IsaPath Isa;
        public int RowsPerChunk;

        public static void Execute(ref A8Chunks s, int chunk)
        {
            int r0 = chunk * s.RowsPerChunk, rows = Math.Min(s.RowsPerChunk, s.A.M - r0);
            switch (s.Isa)
            {
                case IsaPath.Avx512: W6A8Avx512(ref s.A, r0, rows); break;
                case IsaPath.Avx2: W6A8Avx2(ref s.A, r0, rows); break;
                case IsaPath.Vector128: W6A8Vector128(ref s.A, r0, rows); break;
                default: W6A8Scalar(ref s.A, r0, rows); break;
            }
        }
    }

    /// <summary>W6A8, AVX-512BW: per block <c>vpmaddubsw(u, a)</c> + <c>vpmaddwd(·, 1)</c> into int32 lanes; per group subtract
    /// 32·Σa, convert, and FMA with the group scale. Codes are decoded once per row into a byte scratch and reused by every token.</summary>
    [SkipLocalsInit]
    internal static void W6A8Avx512(ref A8Args a, int rowStart, int rowCount)
    {
        Debug.Assert(Avx512BW.IsSupported);
        if (a.N < 4)
        {
            W6A8Avx512Direct(ref a, rowStart, rowCount);
            return;
        }
        int blocks = a.KPad / 64;
        byte* u = (byte*)ThreadScratch.Floats(a.KPad / 4 + 16);
        Vector512<short> ones = Vector512.Create((short)1);
        var k = new FpxDecode.Consts512(0);
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            byte* hi = a.High + (long)r * blocks * 16, lo = a.Low + (long)r * blocks * 32;
            for (int b = 0; b < blocks; b++) FpxDecode.Codes512<Int6Kind>(hi + 16 * b, lo + 32 * b, k).Store(u + 64 * b);
            float* sc = a.Scales + (long)r * a.Groups;
            int j = 0;
            // Four tokens at a time: each code vector is loaded once for four dot products, and four independent
            // accumulator chains hide the per-group convert + FMA latency that bounds a single token.
            for (; j + 4 <= a.N; j += 4)
            {
                sbyte* x0 = a.X + (long)j * a.KPad, x1 = x0 + a.KPad, x2 = x1 + a.KPad, x3 = x2 + a.KPad;
                int* corr = a.Corr + (long)j * a.Groups;
                Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
                for (int g = 0, b = 0; g < a.Groups; g++)
                {
                    Vector512<int> d0 = Vector512<int>.Zero, d1 = d0, d2 = d0, d3 = d0;
                    for (int e = Math.Min(blocks, b + a.GroupBlocks); b < e; b++)
                    {
                        var codes = Vector512.Load(u + 64 * b);
                        d0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load(x0 + 64 * b)), ones);
                        d1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load(x1 + 64 * b)), ones);
                        d2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load(x2 + 64 * b)), ones);
                        d3 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load(x3 + 64 * b)), ones);
                    }
                    var scale = Vector512.Create(sc[g]);
                    acc0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d0 - Vector512.CreateScalar(corr[g])), scale, acc0);
                    acc1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d1 - Vector512.CreateScalar(corr[a.Groups + g])), scale, acc1);
                    acc2 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d2 - Vector512.CreateScalar(corr[2 * a.Groups + g])), scale, acc2);
                    acc3 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d3 - Vector512.CreateScalar(corr[3 * a.Groups + g])), scale, acc3);
                }
                a.Y[(long)j * a.M + r] = F32x16.Sum(new F32x16(acc0)) * a.XScales[j];
                a.Y[(long)(j + 1) * a.M + r] = F32x16.Sum(new F32x16(acc1)) * a.XScales[j + 1];
                a.Y[(long)(j + 2) * a.M + r] = F32x16.Sum(new F32x16(acc2)) * a.XScales[j + 2];
                a.Y[(long)(j + 3) * a.M + r] = F32x16.Sum(new F32x16(acc3)) * a.XScales[j + 3];
            }
            for (; j < a.N; j++)
            {
                sbyte* x = a.X + (long)j * a.KPad;
                int* corr = a.Corr + (long)j * a.Groups;
                Vector512<float> acc = default;
                for (int g = 0, b = 0; g < a.Groups; g++)
                {
                    Vector512<int> dot = Vector512<int>.Zero;
                    for (int e = Math.Min(blocks, b + a.GroupBlocks); b < e; b++)
                    {
                        Vector512<short> p = Avx512BW.MultiplyAddAdjacent(Vector512.Load(u + 64 * b), Vector512.Load(x + 64 * b)); // vpmaddubsw
                        dot += Avx512BW.MultiplyAddAdjacent(p, ones);                                                          // vpmaddwd
                    }
                    dot -= Vector512.CreateScalar(corr[g]);
                    acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(dot), Vector512.Create(sc[g]), acc);
                }
                a.Y[(long)j * a.M + r] = F32x16.Sum(new F32x16(acc)) * a.XScales[j];
            }
        }
    }

    /// <summary>W6A8, AVX-512BW, one to three tokens: each block's codes are decoded into a register and used at once, with
    /// no byte scratch (written and read back per row, it cost more than it saved with so few tokens, and it left the weight
    /// loads bunched at the start of each row instead of spread through the dot products). Same integer dots, group order
    /// and epilogue as <see cref="W6A8Avx512"/>, so the same bits.</summary>
    [SkipLocalsInit]
    private static void W6A8Avx512Direct(ref A8Args a, int rowStart, int rowCount)
    {
        int blocks = a.KPad / 64, n = a.N;
        Vector512<short> ones = Vector512.Create((short)1);
        var k = new FpxDecode.Consts512(0);
        sbyte* x0 = a.X, x1 = n > 1 ? x0 + a.KPad : x0, x2 = n > 2 ? x1 + a.KPad : x0;
        int* c0 = a.Corr, c1 = n > 1 ? c0 + a.Groups : c0, c2 = n > 2 ? c1 + a.Groups : c0;
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            byte* hi = a.High + (long)r * blocks * 16, lo = a.Low + (long)r * blocks * 32;
            float* sc = a.Scales + (long)r * a.Groups;
            Vector512<float> acc0 = default, acc1 = default, acc2 = default;
            for (int g = 0, b = 0; g < a.Groups; g++)
            {
                Vector512<int> d0 = Vector512<int>.Zero, d1 = d0, d2 = d0;
                for (int e = Math.Min(blocks, b + a.GroupBlocks); b < e; b++)
                {
                    var codes = FpxDecode.Codes512<Int6Kind>(hi + 16 * b, lo + 32 * b, k);
                    d0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load(x0 + 64 * b)), ones);
                    if (n > 1) d1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load(x1 + 64 * b)), ones);
                    if (n > 2) d2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load(x2 + 64 * b)), ones);
                }
                var scale = Vector512.Create(sc[g]);
                acc0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d0 - Vector512.CreateScalar(c0[g])), scale, acc0);
                if (n > 1) acc1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d1 - Vector512.CreateScalar(c1[g])), scale, acc1);
                if (n > 2) acc2 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d2 - Vector512.CreateScalar(c2[g])), scale, acc2);
            }
            a.Y[r] = F32x16.Sum(new F32x16(acc0)) * a.XScales[0];
            if (n > 1) a.Y[a.M + r] = F32x16.Sum(new F32x16(acc1)) * a.XScales[1];
            if (n > 2) a.Y[2L * a.M + r] = F32x16.Sum(new F32x16(acc2)) * a.XScales[2];
        }
    }

    /// <summary>W6A8, AVX2: as <see cref="W6A8Avx512"/> with 256-bit <c>vpmaddubsw</c>/<c>vpmaddwd</c>.</summary>
    [SkipLocalsInit]
    internal static void W6A8Avx2(ref A8Args a, int rowStart, int rowCount)
    {
        Debug.Assert(Avx2.IsSupported);
        int blocks = a.KPad / 64;
        Vector256<short> ones = Vector256.Create((short)1);
        var k = new FpxDecode.Consts256(0);
        if (a.N == 1)
        {
            // One token: the codes are used as they are decoded (no byte scratch), as in W6A8Avx512Direct.
            sbyte* x = a.X;
            for (int r = rowStart; r < rowStart + rowCount; r++)
            {
                byte* hi = a.High + (long)r * blocks * 16, lo = a.Low + (long)r * blocks * 32;
                float* sc = a.Scales + (long)r * a.Groups;
                Vector256<float> acc = default;
                for (int g = 0, b = 0; g < a.Groups; g++)
                {
                    Vector256<int> dot = Vector256<int>.Zero;
                    for (int e = Math.Min(blocks, b + a.GroupBlocks); b < e; b++)
                    {
                        FpxDecode.Codes256<Int6Kind>(hi + 16 * b, lo + 32 * b, k, out var c0, out var c1);
                        Vector256<short> p0 = Avx2.MultiplyAddAdjacent(c0, Vector256.Load(x + 64 * b));
                        Vector256<short> p1 = Avx2.MultiplyAddAdjacent(c1, Vector256.Load(x + 64 * b + 32));
                        dot += Avx2.MultiplyAddAdjacent(p0, ones) + Avx2.MultiplyAddAdjacent(p1, ones);
                    }
                    dot -= Vector256.CreateScalar(a.Corr[g]);
                    acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(dot), Vector256.Create(sc[g]), acc);
                }
                a.Y[r] = F32x8.Sum(new F32x8(acc)) * a.XScales[0];
            }
            return;
        }
        byte* u = (byte*)ThreadScratch.Floats(a.KPad / 4 + 16);
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            byte* hi = a.High + (long)r * blocks * 16, lo = a.Low + (long)r * blocks * 32;
            for (int b = 0; b < blocks; b++)
            {
                FpxDecode.Codes256<Int6Kind>(hi + 16 * b, lo + 32 * b, k, out var c0, out var c1);
                c0.Store(u + 64 * b);
                c1.Store(u + 64 * b + 32);
            }
            float* sc = a.Scales + (long)r * a.Groups;
            for (int j = 0; j < a.N; j++)
            {
                sbyte* x = a.X + (long)j * a.KPad;
                int* corr = a.Corr + (long)j * a.Groups;
                Vector256<float> acc = default;
                for (int g = 0, b = 0; g < a.Groups; g++)
                {
                    Vector256<int> dot = Vector256<int>.Zero;
                    for (int e = Math.Min(blocks, b + a.GroupBlocks); b < e; b++)
                    {
                        Vector256<short> p0 = Avx2.MultiplyAddAdjacent(Vector256.Load(u + 64 * b), Vector256.Load(x + 64 * b));
                        Vector256<short> p1 = Avx2.MultiplyAddAdjacent(Vector256.Load(u + 64 * b + 32), Vector256.Load(x + 64 * b + 32));
                        dot += Avx2.MultiplyAddAdjacent(p0, ones) + Avx2.MultiplyAddAdjacent(p1, ones);
                    }
                    dot -= Vector256.CreateScalar(corr[g]);
                    acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(dot), Vector256.Create(sc[g]), acc);
                }
                a.Y[(long)j * a.M + r] = F32x8.Sum(new F32x8(acc)) * a.XScales[j];
            }
        }
    }

    /// <summary>W6A8, portable 128-bit: widening 16-bit products, exact int32 group sums.</summary>
    [SkipLocalsInit]
    internal static void W6A8Vector128(ref A8Args a, int rowStart, int rowCount)
    {
        int blocks = a.KPad / 64;
        byte* u = (byte*)ThreadScratch.Floats(a.KPad / 4 + 16);
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            byte* hi = a.High + (long)r * blocks * 16, lo = a.Low + (long)r * blocks * 32;
            for (int b = 0; b < blocks; b++)
                for (int q = 0; q < 4; q++) FpxDecode.Codes128<Int6Kind>(hi + 16 * b, lo + 32 * b, q).Store(u + 64 * b + 16 * q);
            float* sc = a.Scales + (long)r * a.Groups;
            for (int j = 0; j < a.N; j++)
            {
                sbyte* x = a.X + (long)j * a.KPad;
                int* corr = a.Corr + (long)j * a.Groups;
                Vector128<float> acc = default;
                for (int g = 0, b = 0; g < a.Groups; g++)
                {
                    Vector128<int> dot = Vector128<int>.Zero;
                    for (int e = Math.Min(blocks, b + a.GroupBlocks); b < e; b++)
                        for (int q = 0; q < 64; q += 16)
                        {
                            Vector128<short> uw0 = Vector128.WidenLower(Vector128.Load(u + 64 * b + q)).AsInt16();
                            Vector128<short> uw1 = Vector128.WidenUpper(Vector128.Load(u + 64 * b + q)).AsInt16();
                            Vector128<sbyte> xv = Vector128.Load(x + 64 * b + q);
                            Vector128<short> p0 = uw0 * Vector128.WidenLower(xv), p1 = uw1 * Vector128.WidenUpper(xv); // |u·a| ≤ 8064
                            dot += Vector128.WidenLower(p0) + Vector128.WidenUpper(p0) + Vector128.WidenLower(p1) + Vector128.WidenUpper(p1);
                        }
                    dot -= Vector128.CreateScalar(corr[g]);
                    acc += Vector128.ConvertToSingle(dot) * Vector128.Create(sc[g]);
                }
                a.Y[(long)j * a.M + r] = Vector128.Sum(acc) * a.XScales[j];
            }
        }
    }

    /// <summary>W6A8 scalar path: exact integer group dots in index order.</summary>
    internal static void W6A8Scalar(ref A8Args a, int rowStart, int rowCount)
    {
        int blocks = a.KPad / 64;
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            byte* hi = a.High + (long)r * blocks * 16, lo = a.Low + (long)r * blocks * 32;
            float* sc = a.Scales + (long)r * a.Groups;
            for (int j = 0; j < a.N; j++)
            {
                sbyte* x = a.X + (long)j * a.KPad;
                float acc = 0;
                for (int g = 0, b = 0; g < a.Groups; g++)
                {
                    int dot = 0;
                    for (int e = Math.Min(blocks, b + a.GroupBlocks); b < e; b++)
                        for (int i = 0; i < 64; i++) dot += ((int)FpxDecode.FloatScalar<Int6Kind>(hi + 16 * b, lo + 32 * b, i)) * x[64 * b + i];
                    acc += dot * sc[g];
                }
                a.Y[(long)j * a.M + r] = acc * a.XScales[j];
            }
        }
    }
}
