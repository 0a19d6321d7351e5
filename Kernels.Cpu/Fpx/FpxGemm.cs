using System.Buffers;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Simd;
using Kernels.Cpu.Threading;
using Kernels.Quant.Fpx;

namespace Kernels.Cpu.Fpx;

/// <summary>FP6 e3m2 / FP5 e2m2 GEMV and GEMM with the decode fused into the dot product, and standalone dequantization.</summary>
/// <remarks>
/// <para>Layout as in <see cref="IDenseOps"/>: weights <c>[m, k]</c> (<see cref="FpxWeights"/>), x <c>[n, k]</c>, y <c>[n, m]</c>,
/// <c>y[j, r] = scale_r · Σ_c Decode(code[r, c]) · x[j, c]</c>. The oracle is <see cref="Quant.Reference.FpxReference"/>.</para>
/// <para>Decode by bit operations (<see cref="FpxDecode"/>): each code becomes the fp32 pattern whose value is
/// <c>Decode(code) · 2^−B</c> (B = 124 for FP6, 126 for FP5). Multiplying every weight by 2^B would cost one vmulps per 16
/// weights; instead each activation vector is scaled once by <c>2^e_j</c> with <c>e_j = 100 − ilogb(max|x_j|)</c> (clamped to
/// [−126, 254]), so products stay far above the fp32 subnormal range, and <c>2^(B − e_j)</c> is folded with the row scale into the
/// final store, computed in binary64. Both scalings are exact powers of two, so the dot product rounds exactly like an fp32 dot
/// product of the dequantized weights; only terms smaller than ~2^−100·max|x_j|·|w| can be affected by underflow.</para>
/// <para>Error bound (every path): <c>|y − y_ref| ≤ 1.01·k·2⁻²⁴ · scale_r·Σ_c|Decode·x| + 2⁻²⁴|y_ref|</c>. Accumulation order:
/// n = 1 on AVX-512/AVX2 uses four lane-wise accumulators over 64-code blocks; otherwise rows are decoded into an fp32 scratch row
/// and multiplied in the dense kernel's 4×4 register tiles. Results are deterministic per ISA path and independent of the thread
/// count (rows are never split), but differ across ISA paths by rounding. NaN/±Inf activations propagate like IEEE arithmetic.</para>
/// <para>Threads: rows are split over <see cref="KernelOptions.MaxDegreeOfParallelism"/> workers; activations are pre-scaled into
/// a pooled buffer (the only per-call work besides the kernel); decoded scratch rows live in a per-thread buffer reused across calls.</para>
/// </remarks>
public static unsafe partial class FpxGemm
{
    /// <summary>Tests set this to false to run the plain AVX-512 GEMV on a VBMI machine.</summary>
    internal static bool EnablePatterns512 = true;

    /// <summary>Tests set this to false to run the decoded-tile GEMM for small batches on a VBMI machine.</summary>
    internal static bool EnableFused = true;

    /// <summary>True when the AVX-512 VBMI pattern decode runs (GEMV: <see cref="GemvPatterns512{TK}"/>; GEMM: decoded tiles in
    /// pattern lane order), which needs permuted activations.</summary>
    internal static bool UsesPatterns512(IsaPath isa) => isa == IsaPath.Avx512 && Avx512Vbmi.IsSupported && EnablePatterns512;

    /// <summary>Target binary exponent of the largest pre-scaled activation.</summary>
    internal const int ActivationExponent = 100;

    /// <summary>Software prefetch distance of the 4-row GEMV weight streams, in 64-code blocks (2–32 measured; 6 best at one and two threads).</summary>
    private const int PrefetchBlocks = 6;

    /// <summary>Computes <c>y = x · Wᵀ</c> with fp32 activations.</summary>
    /// <param name="weights">FP6/FP5 weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="n">Activation vectors (1 = GEMV).</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length, or y overlaps x.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(FpxWeights weights, ReadOnlySpan<float> x, Span<float> y, int n, KernelOptions? options = null)
        => Run(weights, x, y, n, options);

    /// <summary>Computes <c>y = x · Wᵀ</c> with bf16 activations (widened exactly to fp32).</summary>
    /// <param name="weights">FP6/FP5 weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="n">Activation vectors (1 = GEMV).</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length, or y overlaps x.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(FpxWeights weights, ReadOnlySpan<BFloat16> x, Span<float> y, int n, KernelOptions? options = null)
        => Run(weights, x, y, n, options);

    /// <summary>Decompresses to fp32: <c>destination[r·k + c] = Decode(code) · scale_r</c>, bit-exact on every path.</summary>
    /// <param name="weights">The weights.</param>
    /// <param name="destination"><c>m·k</c> floats.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has the wrong length.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Dequantize(FpxWeights weights, Span<float> destination, KernelOptions? options = null)
        => RunDequantize(weights, destination, options);

    /// <summary>Decompresses to bf16: the fp32 value of <see cref="Dequantize(FpxWeights, Span{float}, KernelOptions?)"/> rounded to nearest even.</summary>
    /// <param name="weights">The weights.</param>
    /// <param name="destination"><c>m·k</c> values.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has the wrong length.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Dequantize(FpxWeights weights, Span<BFloat16> destination, KernelOptions? options = null)
        => RunDequantize(weights, destination, options);

    private static void Run<TX>(FpxWeights weights, ReadOnlySpan<TX> x, Span<float> y, int n, KernelOptions? options) where TX : unmanaged
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
        double[] post = ArrayPool<double>.Shared.Rent(n);
        try
        {
            int biasShift = FpxCodec.Fp32BiasShift(weights.Format);
            for (int j = 0; j < n; j++)
                post[j] = Math.ScaleB(1.0, biasShift - ScaleActivations(x.Slice(j * k, k), xs.AsSpan(j * kPad, kPad)));
            bool patterns = UsesPatterns512(isa);
            if (patterns) FpxDecode.PermuteForPatterns512(xs.AsSpan(0, n * kPad)); // both AVX-512 VBMI paths use pattern lane order
            fixed (byte* ph = weights.HighBits)
            fixed (byte* pl = weights.LowBits)
            fixed (float* ps = weights.Scales, px = xs, py = y)
            fixed (double* pp = post)
            {
                var state = new Chunks
                {
                    A = new FpxArgs { High = ph, Low = pl, Scales = ps, X = px, Post = pp, Y = py, M = m, KPad = kPad, N = n },
                    Isa = isa, Fp5 = weights.Format == FpxFormat.Fp5E2M2, Patterns = patterns,
                    RowsPerChunk = Math.Max(4, (m / (Environment.ProcessorCount * 8)) & ~3),
                };
                int chunks = (m + state.RowsPerChunk - 1) / state.RowsPerChunk;
                int threads = (long)m * kPad * n < 65_536 ? 1 : (options ?? KernelOptions.Default).EffectiveParallelism;
                WorkerPool.Run(chunks, threads, ref state);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(xs);
            ArrayPool<double>.Shared.Return(post);
        }
    }

    /// <summary>Writes <c>x·2^e</c> (zero-padded) and returns e = 100 − ilogb(max finite |x|), clamped to [−126, 254].</summary>
    internal static int ScaleActivations<TX>(ReadOnlySpan<TX> x, Span<float> dst) where TX : unmanaged
    {
        ReadOnlySpan<float> xf = default;
        if (typeof(TX) == typeof(float)) xf = System.Runtime.InteropServices.MemoryMarshal.Cast<TX, float>(x);
        else
        {
            var xb = System.Runtime.InteropServices.MemoryMarshal.Cast<TX, BFloat16>(x);
            for (int c = 0; c < xb.Length; c++) dst[c] = (float)xb[c];
            xf = dst[..xb.Length];
        }
        float amax = 0;
        for (int c = 0; c < xf.Length; c++)
        {
            float a = Math.Abs(xf[c]);
            if (a > amax && a != float.PositiveInfinity) amax = a;
        }
        // e exceeds 127 when max |x| < 2^-27 (tiny or subnormal activations): 2^e is applied as 2^min(e, 127) · 2^max(e − 127, 0),
        // two exact power-of-two products (the second is 1 otherwise), so the products with the weight patterns stay normal.
        int e = amax == 0 ? 0 : Math.Clamp(ActivationExponent - Math.ILogB(amax), -126, 2 * 127);
        float f = MathF.ScaleB(1f, Math.Min(e, 127)), f2 = MathF.ScaleB(1f, Math.Max(e - 127, 0));
        int i = 0;
        for (; i <= xf.Length - Vector<float>.Count; i += Vector<float>.Count)
            (new Vector<float>(xf[i..]) * f * f2).CopyTo(dst[i..]);
        for (; i < xf.Length; i++) dst[i] = xf[i] * f * f2;
        dst[xf.Length..].Clear();
        return e;
    }

    /// <summary>Pointers and sizes shared by every chunk (spans are pinned by the caller).</summary>
    internal struct FpxArgs
    {
        public byte* High, Low;
        public float* Scales, X, Y;
        public double* Post;
        public int M, KPad, N;
    }

    private struct Chunks : IChunkKernel<Chunks>
    {
        public FpxArgs A;
        public IsaPath Isa;
        public bool Fp5, Patterns;
        public int RowsPerChunk;

        public static void Execute(ref Chunks s, int chunk)
        {
            int r0 = chunk * s.RowsPerChunk, rows = Math.Min(s.RowsPerChunk, s.A.M - r0);
            if (s.Patterns)
            {
                if (s.A.N == 1)
                {
                    if (s.Fp5) GemvPatterns512<Fp5Kind>(ref s.A, r0, rows);
                    else GemvPatterns512<Fp6Kind>(ref s.A, r0, rows);
                }
                else if (EnableFused)
                {
                    if (s.Fp5) GemmPatterns512<Fp5Kind>(ref s.A, r0, rows);
                    else GemmPatterns512<Fp6Kind>(ref s.A, r0, rows);
                }
                else if (s.Fp5) DecodedTiles<Fp5Kind, F32x16>(IsaPath.Avx512, ref s.A, r0, rows, patterns: true);
                else DecodedTiles<Fp6Kind, F32x16>(IsaPath.Avx512, ref s.A, r0, rows, patterns: true);
            }
            else if (s.Fp5) Rows<Fp5Kind>(s.Isa, ref s.A, r0, rows);
            else Rows<Fp6Kind>(s.Isa, ref s.A, r0, rows);
        }
    }

    private static void Rows<TK>(IsaPath isa, ref FpxArgs a, int r0, int rows) where TK : struct, ICodeKind
    {
        switch (isa)
        {
            case IsaPath.Avx512: Avx512<TK>(ref a, r0, rows); break;
            case IsaPath.Avx2: Avx2<TK>(ref a, r0, rows); break;
            case IsaPath.Vector128: Vector128<TK>(ref a, r0, rows); break;
            default: Scalar<TK>(ref a, r0, rows); break;
        }
    }

    /// <summary>The AVX-512 path over rows <c>[rowStart, rowStart + rowCount)</c>.</summary>
    [SkipLocalsInit]
    internal static void Avx512<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        Debug.Assert(Avx512BW.IsSupported);
        if (a.N == 1) Gemv512<TK>(ref a, rowStart, rowCount);
        else DecodedTiles<TK, F32x16>(IsaPath.Avx512, ref a, rowStart, rowCount);
    }

    /// <summary>The AVX2 path over rows <c>[rowStart, rowStart + rowCount)</c>.</summary>
    [SkipLocalsInit]
    internal static void Avx2<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        Debug.Assert(System.Runtime.Intrinsics.X86.Avx2.IsSupported);
        if (a.N == 1) Gemv256<TK>(ref a, rowStart, rowCount);
        else DecodedTiles<TK, F32x8>(IsaPath.Avx2, ref a, rowStart, rowCount);
    }

    /// <summary>The portable 128-bit path over rows <c>[rowStart, rowStart + rowCount)</c>.</summary>
    [SkipLocalsInit]
    internal static void Vector128<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
        => DecodedTiles<TK, F32x4>(IsaPath.Vector128, ref a, rowStart, rowCount);

    /// <summary>The scalar path over rows <c>[rowStart, rowStart + rowCount)</c>: decode, then multiply-add in index order.</summary>
    internal static void Scalar<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        float* w = ThreadScratch.Floats(a.KPad);
        int blocks = a.KPad / 64, hb = TK.Kind == 1 ? 8 : 16;
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            FpxDecode.Row<TK>(IsaPath.Scalar, a.High + (long)r * blocks * hb, a.Low + (long)r * blocks * 32, blocks, w);
            for (int j = 0; j < a.N; j++)
            {
                float* xj = a.X + (long)j * a.KPad;
                float acc = 0;
                for (int c = 0; c < a.KPad; c++) acc += w[c] * xj[c];
                a.Y[(long)j * a.M + r] = Finish(acc, a.Scales[r], a.Post[j]);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(float acc, float scale, double post) => (float)(acc * (double)scale * post);

    /// <summary>GEMV on AVX-512 VBMI: patterns from byte interleaves (<see cref="FpxDecode.Patterns512"/>), activations permuted
    /// to match; four rows share each activation load.</summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void GemvPatterns512<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        Debug.Assert(Avx512Vbmi.IsSupported);
        int blocks = a.KPad / 64, hb = TK.Kind == 1 ? 8 : 16;
        long hs = (long)blocks * hb, ls = (long)blocks * 32;
        var k = new FpxDecode.ConstsVbmi(0);
        int r = rowStart, end = rowStart + rowCount;
        for (; r + 8 <= end; r += 8)
        {
            // Eight rows per pass, one accumulator each: every activation load serves eight rows.
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* xb = a.X;
            Vector512<float> p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default, p6 = default, p7 = default;
            for (byte* stop = lo + ls; lo < stop; lo += 32, hi += hb, xb += 64)
            {
                Prefetch4Rows(hi, lo, hs, ls, hb);
                Prefetch4Rows(hi + 4 * hs, lo + 4 * ls, hs, ls, hb);
                Vector512<float> x0 = Vector512.Load(xb), x1 = Vector512.Load(xb + 16), x2 = Vector512.Load(xb + 32), x3 = Vector512.Load(xb + 48);
                RowPatterns1<TK>(hi, lo, x0, x1, x2, x3, k, ref p0);
                RowPatterns1<TK>(hi + hs, lo + ls, x0, x1, x2, x3, k, ref p1);
                RowPatterns1<TK>(hi + 2 * hs, lo + 2 * ls, x0, x1, x2, x3, k, ref p2);
                RowPatterns1<TK>(hi + 3 * hs, lo + 3 * ls, x0, x1, x2, x3, k, ref p3);
                RowPatterns1<TK>(hi + 4 * hs, lo + 4 * ls, x0, x1, x2, x3, k, ref p4);
                RowPatterns1<TK>(hi + 5 * hs, lo + 5 * ls, x0, x1, x2, x3, k, ref p5);
                RowPatterns1<TK>(hi + 6 * hs, lo + 6 * ls, x0, x1, x2, x3, k, ref p6);
                RowPatterns1<TK>(hi + 7 * hs, lo + 7 * ls, x0, x1, x2, x3, k, ref p7);
            }
            a.Y[r] = Finish(F32x16.Sum(new F32x16(p0)), a.Scales[r], a.Post[0]);
            a.Y[r + 1] = Finish(F32x16.Sum(new F32x16(p1)), a.Scales[r + 1], a.Post[0]);
            a.Y[r + 2] = Finish(F32x16.Sum(new F32x16(p2)), a.Scales[r + 2], a.Post[0]);
            a.Y[r + 3] = Finish(F32x16.Sum(new F32x16(p3)), a.Scales[r + 3], a.Post[0]);
            a.Y[r + 4] = Finish(F32x16.Sum(new F32x16(p4)), a.Scales[r + 4], a.Post[0]);
            a.Y[r + 5] = Finish(F32x16.Sum(new F32x16(p5)), a.Scales[r + 5], a.Post[0]);
            a.Y[r + 6] = Finish(F32x16.Sum(new F32x16(p6)), a.Scales[r + 6], a.Post[0]);
            a.Y[r + 7] = Finish(F32x16.Sum(new F32x16(p7)), a.Scales[r + 7], a.Post[0]);
        }
        for (; r + 4 <= end; r += 4)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* xb = a.X;
            Vector512<float> p0 = default, q0 = default, p1 = default, q1 = default, p2 = default, q2 = default, p3 = default, q3 = default;
            for (byte* stop = lo + ls; lo < stop; lo += 32, hi += hb, xb += 64)
            {
                Prefetch4Rows(hi, lo, hs, ls, hb);
                Vector512<float> x0 = Vector512.Load(xb), x1 = Vector512.Load(xb + 16), x2 = Vector512.Load(xb + 32), x3 = Vector512.Load(xb + 48);
                RowPatterns<TK>(hi, lo, x0, x1, x2, x3, k, ref p0, ref q0);
                RowPatterns<TK>(hi + hs, lo + ls, x0, x1, x2, x3, k, ref p1, ref q1);
                RowPatterns<TK>(hi + 2 * hs, lo + 2 * ls, x0, x1, x2, x3, k, ref p2, ref q2);
                RowPatterns<TK>(hi + 3 * hs, lo + 3 * ls, x0, x1, x2, x3, k, ref p3, ref q3);
            }
            a.Y[r] = Finish(F32x16.Sum(new F32x16(p0 + q0)), a.Scales[r], a.Post[0]);
            a.Y[r + 1] = Finish(F32x16.Sum(new F32x16(p1 + q1)), a.Scales[r + 1], a.Post[0]);
            a.Y[r + 2] = Finish(F32x16.Sum(new F32x16(p2 + q2)), a.Scales[r + 2], a.Post[0]);
            a.Y[r + 3] = Finish(F32x16.Sum(new F32x16(p3 + q3)), a.Scales[r + 3], a.Post[0]);
        }
        for (; r < end; r++)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* xb = a.X;
            Vector512<float> p0 = default, q0 = default;
            for (byte* stop = lo + ls; lo < stop; lo += 32, hi += hb, xb += 64)
                RowPatterns<TK>(hi, lo, Vector512.Load(xb), Vector512.Load(xb + 16), Vector512.Load(xb + 32), Vector512.Load(xb + 48), k, ref p0, ref q0);
            a.Y[r] = Finish(F32x16.Sum(new F32x16(p0 + q0)), a.Scales[r], a.Post[0]);
        }
    }

    /// <summary>Prefetches the current block + <see cref="PrefetchBlocks"/> of both planes of four rows: eight weight streams
    /// are more than the hardware prefetchers follow well (single-thread 8192² FP6 GEMV: 3.32 → 2.85 ms). A prefetch past a
    /// row's end touches the next row or nothing (prefetches never fault).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Prefetch4Rows(byte* hi, byte* lo, long hs, long ls, int hb)
    {
        Sse.Prefetch0(lo + PrefetchBlocks * 32);
        Sse.Prefetch0(lo + ls + PrefetchBlocks * 32);
        Sse.Prefetch0(lo + 2 * ls + PrefetchBlocks * 32);
        Sse.Prefetch0(lo + 3 * ls + PrefetchBlocks * 32);
        Sse.Prefetch0(hi + PrefetchBlocks * hb);
        Sse.Prefetch0(hi + hs + PrefetchBlocks * hb);
        Sse.Prefetch0(hi + 2 * hs + PrefetchBlocks * hb);
        Sse.Prefetch0(hi + 3 * hs + PrefetchBlocks * hb);
    }

    /// <summary>One row's block with a single accumulator (the 8-row pass: eight independent chains hide the FMA latency).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowPatterns1<TK>(byte* hi, byte* lo, Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3,
        in FpxDecode.ConstsVbmi k, ref Vector512<float> p) where TK : struct, ICodeKind
    {
        FpxDecode.Patterns512<TK>(hi, lo, k, out var f0, out var f1, out var f2, out var f3);
        p = Avx512F.FusedMultiplyAdd(f3, x3, Avx512F.FusedMultiplyAdd(f2, x2, Avx512F.FusedMultiplyAdd(f1, x1, Avx512F.FusedMultiplyAdd(f0, x0, p))));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowPatterns<TK>(byte* hi, byte* lo, Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3,
        in FpxDecode.ConstsVbmi k, ref Vector512<float> p, ref Vector512<float> q) where TK : struct, ICodeKind
    {
        FpxDecode.Patterns512<TK>(hi, lo, k, out var f0, out var f1, out var f2, out var f3);
        p = Avx512F.FusedMultiplyAdd(f0, x0, p);
        q = Avx512F.FusedMultiplyAdd(f1, x1, q);
        p = Avx512F.FusedMultiplyAdd(f2, x2, p);
        q = Avx512F.FusedMultiplyAdd(f3, x3, q);
    }

    // Four rows share each activation load (x stays in L1/L2 traffic at 1 B/weight instead of 4); two accumulators per row.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Gemv512<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        int blocks = a.KPad / 64, hb = TK.Kind == 1 ? 8 : 16;
        long hs = (long)blocks * hb, ls = (long)blocks * 32;
        var k = new FpxDecode.Consts512(FpxDecode.MaskFor<TK>());
        int r = rowStart, end = rowStart + rowCount;
        for (; r + 4 <= end; r += 4)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* xb = a.X;
            Vector512<float> p0 = default, q0 = default, p1 = default, q1 = default, p2 = default, q2 = default, p3 = default, q3 = default;
            for (byte* stop = lo + ls; lo < stop; lo += 32, hi += hb, xb += 64)
            {
                Prefetch4Rows(hi, lo, hs, ls, hb);
                Vector512<float> x0 = Vector512.Load(xb), x1 = Vector512.Load(xb + 16), x2 = Vector512.Load(xb + 32), x3 = Vector512.Load(xb + 48);
                Row4<TK>(hi, lo, x0, x1, x2, x3, k, ref p0, ref q0);
                Row4<TK>(hi + hs, lo + ls, x0, x1, x2, x3, k, ref p1, ref q1);
                Row4<TK>(hi + 2 * hs, lo + 2 * ls, x0, x1, x2, x3, k, ref p2, ref q2);
                Row4<TK>(hi + 3 * hs, lo + 3 * ls, x0, x1, x2, x3, k, ref p3, ref q3);
            }
            a.Y[r] = Finish(F32x16.Sum(new F32x16(p0 + q0)), a.Scales[r], a.Post[0]);
            a.Y[r + 1] = Finish(F32x16.Sum(new F32x16(p1 + q1)), a.Scales[r + 1], a.Post[0]);
            a.Y[r + 2] = Finish(F32x16.Sum(new F32x16(p2 + q2)), a.Scales[r + 2], a.Post[0]);
            a.Y[r + 3] = Finish(F32x16.Sum(new F32x16(p3 + q3)), a.Scales[r + 3], a.Post[0]);
        }
        for (; r < end; r++)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* xb = a.X;
            Vector512<float> p0 = default, q0 = default;
            for (byte* stop = lo + ls; lo < stop; lo += 32, hi += hb, xb += 64)
                Row4<TK>(hi, lo, Vector512.Load(xb), Vector512.Load(xb + 16), Vector512.Load(xb + 32), Vector512.Load(xb + 48), k, ref p0, ref q0);
            a.Y[r] = Finish(F32x16.Sum(new F32x16(p0 + q0)), a.Scales[r], a.Post[0]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row4<TK>(byte* hi, byte* lo, Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3,
        in FpxDecode.Consts512 k, ref Vector512<float> p, ref Vector512<float> q) where TK : struct, ICodeKind
    {
        Vector512<sbyte> c = FpxDecode.Codes512<TK>(hi, lo, k).AsSByte();
        // vextracti32x4 per quarter (one instruction each; quarter 0 is the low xmm, free).
        p = Avx512F.FusedMultiplyAdd(FpxDecode.Float512<TK>(c.GetLower().GetLower(), k), x0, p);
        q = Avx512F.FusedMultiplyAdd(FpxDecode.Float512<TK>(Avx512F.ExtractVector128(c, 1), k), x1, q);
        p = Avx512F.FusedMultiplyAdd(FpxDecode.Float512<TK>(Avx512F.ExtractVector128(c, 2), k), x2, p);
        q = Avx512F.FusedMultiplyAdd(FpxDecode.Float512<TK>(Avx512F.ExtractVector128(c, 3), k), x3, q);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Gemv256<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        int blocks = a.KPad / 64, hb = TK.Kind == 1 ? 8 : 16;
        float* x = a.X;
        var k = new FpxDecode.Consts256(FpxDecode.MaskFor<TK>());
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            byte* hi = a.High + (long)r * blocks * hb, lo = a.Low + (long)r * blocks * 32;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int b = 0; b < blocks; b++)
            {
                FpxDecode.Codes256<TK>(hi + b * hb, lo + b * 32, k, out var c0, out var c1);
                float* xb = x + 64 * b;
                Vector128<sbyte> q0 = c0.AsSByte().GetLower(), q1 = c0.AsSByte().GetUpper();
                Vector128<sbyte> q2 = c1.AsSByte().GetLower(), q3 = c1.AsSByte().GetUpper();
                a0 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(q0, k), Vector256.Load(xb), a0);
                a1 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(Sse2.ShiftRightLogical128BitLane(q0, 8), k), Vector256.Load(xb + 8), a1);
                a2 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(q1, k), Vector256.Load(xb + 16), a2);
                a3 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(Sse2.ShiftRightLogical128BitLane(q1, 8), k), Vector256.Load(xb + 24), a3);
                a0 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(q2, k), Vector256.Load(xb + 32), a0);
                a1 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(Sse2.ShiftRightLogical128BitLane(q2, 8), k), Vector256.Load(xb + 40), a1);
                a2 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(q3, k), Vector256.Load(xb + 48), a2);
                a3 = Fma.MultiplyAdd(FpxDecode.Float256<TK>(Sse2.ShiftRightLogical128BitLane(q3, 8), k), Vector256.Load(xb + 56), a3);
            }
            a.Y[r] = Finish(F32x8.Sum(new F32x8((a0 + a1) + (a2 + a3))), a.Scales[r], a.Post[0]);
        }
    }

    /// <summary>Columns decoded per scratch tile: 4 rows × 1024 fp32 (16 KB) plus a 4-token slice of x (16 KB) stay in L1.</summary>
    internal const int KTile = 1024;

    /// <summary>Decodes four rows × <see cref="KTile"/> columns at a time into the per-thread scratch, then runs 4×4 register
    /// tiles over the tokens, accumulating per-(row, token) partial sums across column tiles.</summary>
    private static void DecodedTiles<TK, TV>(IsaPath isa, ref FpxArgs a, int rowStart, int rowCount, bool patterns = false)
        where TK : struct, ICodeKind where TV : struct, ISimdF32<TV>
    {
        int kPad = a.KPad, blocks = kPad / 64, hb = TK.Kind == 1 ? 8 : 16, kt = Math.Min(kPad, KTile);
        float* w = ThreadScratch.Floats(4 * kt + 4 * a.N);
        float* part = w + 4 * kt;
        for (int r = rowStart; r < rowStart + rowCount; r += 4)
        {
            int valid = Math.Min(4, rowStart + rowCount - r);
            new Span<float>(part, 4 * a.N).Clear();
            for (int k0 = 0; k0 < kPad; k0 += kt)
            {
                int len = Math.Min(kt, kPad - k0), b0 = k0 / 64;
                for (int i = 0; i < 4; i++)
                {
                    long rr = r + Math.Min(i, valid - 1); // missing rows repeat the last one; their outputs are not stored
                    byte* hi = a.High + (rr * blocks + b0) * hb, lo = a.Low + (rr * blocks + b0) * 32;
                    if (patterns) FpxDecode.RowPatterns512<TK>(hi, lo, len / 64, w + i * len); // same lane order as the permuted x
                    else FpxDecode.Row<TK>(isa, hi, lo, len / 64, w + i * len);
                }
                DecodedDot.Tiles<TV>(w, a.X + k0, kPad, a.N, len, part);
            }
            DecodedDot.Store(part, valid, a.N, r, a.M, a.Scales, a.Post, a.Y);
        }
    }

    private static void RunDequantize<TD>(FpxWeights weights, Span<TD> destination, KernelOptions? options) where TD : unmanaged
    {
        ArgumentNullException.ThrowIfNull(weights);
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, (long)weights.Rows * weights.Columns);
        IsaPath isa = CpuIsa.Resolve(options);
        if (destination.IsEmpty) return;
        fixed (byte* ph = weights.HighBits)
        fixed (byte* pl = weights.LowBits)
        fixed (float* ps = weights.Scales)
        fixed (TD* pd = destination)
        {
            var state = new DequantChunks<TD>
            {
                High = ph, Low = pl, Scales = ps, Dst = pd, K = weights.Columns, KPad = weights.PaddedColumns, Isa = isa,
                Fp5 = weights.Format == FpxFormat.Fp5E2M2, Pow = MathF.ScaleB(1f, FpxCodec.Fp32BiasShift(weights.Format)),
            };
            WorkerPool.Run(weights.Rows, (options ?? KernelOptions.Default).EffectiveParallelism, ref state);
        }
    }

    private struct DequantChunks<TD> : IChunkKernel<DequantChunks<TD>> where TD : unmanaged
    {
        public byte* High, Low;
        public float* Scales;
        public TD* Dst;
        public int K, KPad;
        public IsaPath Isa;
        public bool Fp5;
        public float Pow;

        public static void Execute(ref DequantChunks<TD> s, int r)
        {
            float* w = ThreadScratch.Floats(s.KPad);
            int blocks = s.KPad / 64;
            if (s.Fp5) FpxDecode.Row<Fp5Kind>(s.Isa, s.High + (long)r * blocks * 8, s.Low + (long)r * blocks * 32, blocks, w);
            else FpxDecode.Row<Fp6Kind>(s.Isa, s.High + (long)r * blocks * 16, s.Low + (long)r * blocks * 32, blocks, w);
            DecodedDot.ScaleRow(w, s.K, s.Pow, s.Scales[r], s.Dst + (long)r * s.K);
        }
    }
}

/// <summary>Shared tail of the decoded paths: 4×4 register tiles over a decoded scratch block, and row scaling.</summary>
internal static unsafe class DecodedDot
{
    /// <summary>part[i·n + j] += Σ_c w[i·len + c]·x[j·xStride + c] for the four rows i and every token j (len a multiple of 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Tiles<TV>(float* w, float* x, int xStride, int n, int len, float* part) where TV : struct, ISimdF32<TV>
    {
        float* w0 = w, w1 = w + len, w2 = w1 + len, w3 = w2 + len;
        float* p0 = part, p1 = part + n, p2 = p1 + n, p3 = p2 + n;
        int j = 0;
        for (; j + 4 <= n; j += 4)
        {
            float* x0 = x + (long)j * xStride, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride;
            TV a00 = TV.Zero, a01 = TV.Zero, a02 = TV.Zero, a03 = TV.Zero, a10 = TV.Zero, a11 = TV.Zero, a12 = TV.Zero, a13 = TV.Zero;
            TV a20 = TV.Zero, a21 = TV.Zero, a22 = TV.Zero, a23 = TV.Zero, a30 = TV.Zero, a31 = TV.Zero, a32 = TV.Zero, a33 = TV.Zero;
            for (int c = 0; c < len; c += TV.Count)
            {
                TV v0 = TV.Load(ref x0[c]), v1 = TV.Load(ref x1[c]), v2 = TV.Load(ref x2[c]), v3 = TV.Load(ref x3[c]);
                TV u = TV.Load(ref w0[c]);
                a00 = TV.MultiplyAdd(u, v0, a00); a01 = TV.MultiplyAdd(u, v1, a01); a02 = TV.MultiplyAdd(u, v2, a02); a03 = TV.MultiplyAdd(u, v3, a03);
                u = TV.Load(ref w1[c]);
                a10 = TV.MultiplyAdd(u, v0, a10); a11 = TV.MultiplyAdd(u, v1, a11); a12 = TV.MultiplyAdd(u, v2, a12); a13 = TV.MultiplyAdd(u, v3, a13);
                u = TV.Load(ref w2[c]);
                a20 = TV.MultiplyAdd(u, v0, a20); a21 = TV.MultiplyAdd(u, v1, a21); a22 = TV.MultiplyAdd(u, v2, a22); a23 = TV.MultiplyAdd(u, v3, a23);
                u = TV.Load(ref w3[c]);
                a30 = TV.MultiplyAdd(u, v0, a30); a31 = TV.MultiplyAdd(u, v1, a31); a32 = TV.MultiplyAdd(u, v2, a32); a33 = TV.MultiplyAdd(u, v3, a33);
            }
            p0[j] += TV.Sum(a00); p0[j + 1] += TV.Sum(a01); p0[j + 2] += TV.Sum(a02); p0[j + 3] += TV.Sum(a03);
            p1[j] += TV.Sum(a10); p1[j + 1] += TV.Sum(a11); p1[j + 2] += TV.Sum(a12); p1[j + 3] += TV.Sum(a13);
            p2[j] += TV.Sum(a20); p2[j + 1] += TV.Sum(a21); p2[j + 2] += TV.Sum(a22); p2[j + 3] += TV.Sum(a23);
            p3[j] += TV.Sum(a30); p3[j + 1] += TV.Sum(a31); p3[j + 2] += TV.Sum(a32); p3[j + 3] += TV.Sum(a33);
        }
        for (; j < n; j++)
        {
            float* xj = x + (long)j * xStride;
            TV a0 = TV.Zero, a1 = TV.Zero, a2 = TV.Zero, a3 = TV.Zero;
            for (int c = 0; c < len; c += TV.Count)
            {
                TV v = TV.Load(ref xj[c]);
                a0 = TV.MultiplyAdd(TV.Load(ref w0[c]), v, a0);
                a1 = TV.MultiplyAdd(TV.Load(ref w1[c]), v, a1);
                a2 = TV.MultiplyAdd(TV.Load(ref w2[c]), v, a2);
                a3 = TV.MultiplyAdd(TV.Load(ref w3[c]), v, a3);
            }
            p0[j] += TV.Sum(a0); p1[j] += TV.Sum(a1); p2[j] += TV.Sum(a2); p3[j] += TV.Sum(a3);
        }
    }

    /// <summary>y[j, r0 + i] = Finish(part[i·n + j]) for the <paramref name="valid"/> real rows.</summary>
    public static void Store(float* part, int valid, int n, int r0, int m, float* scales, double* post, float* y)
    {
        for (int i = 0; i < valid; i++)
            for (int j = 0; j < n; j++) y[(long)j * m + r0 + i] = Finish(part[i * n + j], scales, r0 + i, post, j);
    }

    // FP: scales = row scales, post = 2^(B − e_j). INT6 (scales == null): the decoded weights already carry their scales.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(float acc, float* scales, int r, double* post, int j) =>
        scales == null ? acc : (float)(acc * (double)scales[r] * post[j]);

    /// <summary>dst[c] = (w[c]·pow)·scale for c &lt; k (both products rounded like the reference: the first is exact).</summary>
    public static void ScaleRow<TD>(float* w, int k, float pow, float scale, TD* dst) where TD : unmanaged
    {
        int c = 0;
        if (typeof(TD) == typeof(float))
        {
            float* d = (float*)dst;
            for (; c <= k - Vector<float>.Count; c += Vector<float>.Count)
                (Unsafe.Read<Vector<float>>(w + c) * pow * scale).CopyTo(new Span<float>(d + c, Vector<float>.Count));
            for (; c < k; c++) d[c] = w[c] * pow * scale;
        }
        else
        {
            BFloat16* d = (BFloat16*)dst;
            for (; c < k; c++) d[c] = (BFloat16)(w[c] * pow * scale);
        }
    }
}
