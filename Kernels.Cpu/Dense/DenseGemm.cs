using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Simd;
using Kernels.Cpu.Threading;

namespace Kernels.Cpu.Dense;

/// <summary>Dense GEMV/GEMM with fp32 or bf16 weights and fp32 activations: the baseline for every low-bit format.</summary>
/// <remarks>
/// <para>Layout as in <see cref="IDenseOps"/>: weights <c>[m, k]</c> row-major, x <c>[n, k]</c>, y <c>[n, m]</c>,
/// <c>y[j, r] = Σ_c w[r, c] · x[j, c]</c> with fp32 accumulation. The oracle is <see cref="Quant.Reference.DenseReference"/>.</para>
/// <para>Accumulation order: each output sums <c>Count</c> lane-wise partial sums over k in vector steps (fused multiply-add),
/// reduces the lanes pairwise, then adds the k tail sequentially. Results are deterministic for a given ISA path and
/// thread count, but differ across ISA paths by rounding: the error bound is <c>|y − y_exact| ≤ 1.01·k·2⁻²⁴·Σ|w·x|</c>.</para>
/// <para>Work is split by rows across <see cref="KernelOptions.MaxDegreeOfParallelism"/> threads; nothing is allocated per call.</para>
/// </remarks>
public static unsafe partial class DenseGemm
{
    /// <summary>Computes <c>y = x · weightsᵀ</c> with fp32 weights.</summary>
    /// <param name="weights"><c>m·k</c> weights, row-major.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten; must not overlap the inputs.</param>
    /// <param name="m">Output features.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="n">Activation vectors (1 = GEMV).</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length (the message names it) or y overlaps an input.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(ReadOnlySpan<float> weights, ReadOnlySpan<float> x, Span<float> y, int m, int k, int n, KernelOptions? options = null)
        => Run(weights, x, y, m, k, n, options);

    /// <summary>Computes <c>y = x · weightsᵀ</c> with bf16 weights (widened exactly to fp32 in registers).</summary>
    /// <param name="weights"><c>m·k</c> weights, row-major.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten; must not overlap the inputs.</param>
    /// <param name="m">Output features.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="n">Activation vectors (1 = GEMV).</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length (the message names it) or y overlaps an input.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(ReadOnlySpan<BFloat16> weights, ReadOnlySpan<float> x, Span<float> y, int m, int k, int n, KernelOptions? options = null)
        => Run(weights, x, y, m, k, n, options);

    private static void Run<TW>(ReadOnlySpan<TW> weights, ReadOnlySpan<float> x, Span<float> y, int m, int k, int n, KernelOptions? options)
        where TW : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ThrowHelper.ThrowIfLengthMismatch(nameof(weights), weights.Length, (long)m * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * m);
        ThrowHelper.ThrowIfOverlapping(weights, y, nameof(weights), nameof(y));
        ThrowHelper.ThrowIfOverlapping(x, y, nameof(x), nameof(y));
        IsaPath isa = CpuIsa.Resolve(options);
        if (m == 0 || n == 0) return;

        fixed (TW* pw = weights)
        fixed (float* px = x)
        fixed (float* py = y)
        {
            int rowsPerChunk = n == 1
                ? Math.Max(16, (m / (Environment.ProcessorCount * 8)) & ~3)
                : 16;
            var state = new Chunks<TW>
            {
                W = pw, X = px, Y = py, M = m, K = k, N = n, Isa = isa, RowsPerChunk = rowsPerChunk,
            };
            int chunks = (m + rowsPerChunk - 1) / rowsPerChunk;
            int threads = (long)m * k * Math.Max(n, 1) < 32_768 ? 1 : (options ?? KernelOptions.Default).EffectiveParallelism;
            WorkerPool.Run(chunks, threads, ref state);
        }
    }

    private struct Chunks<TW> : IChunkKernel<Chunks<TW>> where TW : unmanaged
    {
        public TW* W;
        public float* X;
        public float* Y;
        public int M, K, N, RowsPerChunk;
        public IsaPath Isa;

        public static void Execute(ref Chunks<TW> s, int chunk)
        {
            int r0 = chunk * s.RowsPerChunk;
            int rows = Math.Min(s.RowsPerChunk, s.M - r0);
            switch (s.Isa)
            {
                case IsaPath.Avx512: Avx512(s.W, s.X, s.Y, s.M, s.K, s.N, r0, rows); break;
                case IsaPath.Avx2: Avx2(s.W, s.X, s.Y, s.M, s.K, s.N, r0, rows); break;
                case IsaPath.Vector128: Vector128(s.W, s.X, s.Y, s.M, s.K, s.N, r0, rows); break;
                default: Scalar(s.W, s.X, s.Y, s.M, s.K, s.N, r0, rows); break;
            }
        }
    }

    /// <summary>The AVX-512 path over rows <c>[rowStart, rowStart + rowCount)</c>.</summary>
    [SkipLocalsInit]
    internal static void Avx512<TW>(TW* w, float* x, float* y, int m, int k, int n, int rowStart, int rowCount) where TW : unmanaged
        => Tiles<F32x16, TW>(w, x, y, m, k, n, rowStart, rowCount);

    /// <summary>The AVX2 path over rows <c>[rowStart, rowStart + rowCount)</c>.</summary>
    [SkipLocalsInit]
    internal static void Avx2<TW>(TW* w, float* x, float* y, int m, int k, int n, int rowStart, int rowCount) where TW : unmanaged
        => Tiles<F32x8, TW>(w, x, y, m, k, n, rowStart, rowCount);

    /// <summary>The Vector128 path over rows <c>[rowStart, rowStart + rowCount)</c>.</summary>
    [SkipLocalsInit]
    internal static void Vector128<TW>(TW* w, float* x, float* y, int m, int k, int n, int rowStart, int rowCount) where TW : unmanaged
        => Tiles<F32x4, TW>(w, x, y, m, k, n, rowStart, rowCount);

    /// <summary>The scalar path over rows <c>[rowStart, rowStart + rowCount)</c>: fp32 multiply-add in index order.</summary>
    internal static void Scalar<TW>(TW* w, float* x, float* y, int m, int k, int n, int rowStart, int rowCount) where TW : unmanaged
    {
        for (int j = 0; j < n; j++)
        {
            float* xj = x + (nint)j * k;
            for (int r = rowStart; r < rowStart + rowCount; r++)
            {
                TW* wr = w + (nint)r * k;
                float acc = 0;
                for (int c = 0; c < k; c++) acc += WeightLoad.Scalar(wr[c]) * xj[c];
                y[(nint)j * m + r] = acc;
            }
        }
    }

    private const int BfloatPrefetchElements = 512;

    // Token blocks of 16 keep a 16×k slice of x and the chunk's rows of W in L2 while 4×4 register tiles run over them.
    private const int TokenBlock = 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tiles<TV, TW>(TW* w, float* x, float* y, int m, int k, int n, int rowStart, int rowCount)
        where TV : struct, ISimdF32<TV> where TW : unmanaged
    {
        int rowEnd = rowStart + rowCount;
        for (int jb = 0; jb < n; jb += TokenBlock)
        {
            int je = Math.Min(n, jb + TokenBlock);
            int r = rowStart;
            for (; r + 4 <= rowEnd; r += 4)
            {
                int j = jb;
                for (; j + 4 <= je; j += 4) Tile4x4<TV, TW>(w, x, y, m, k, r, j);
                for (; j < je; j++) Tile4x1<TV, TW>(w, x, y, m, k, r, j);
            }
            for (; r < rowEnd; r++)
                for (int j = jb; j < je; j++) Tile1x1<TV, TW>(w, x, y, m, k, r, j);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile4x1<TV, TW>(TW* w, float* x, float* y, int m, int k, int r, int j)
        where TV : struct, ISimdF32<TV> where TW : unmanaged
    {
        TW* w0 = w + (nint)r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
        float* xj = x + (nint)j * k;
        TV a0 = TV.Zero, a1 = TV.Zero, a2 = TV.Zero, a3 = TV.Zero;
        TV b0 = TV.Zero, b1 = TV.Zero, b2 = TV.Zero, b3 = TV.Zero;
        int c = 0;
        // Two vectors per row per step: each row stream advances a whole 64-byte line per iteration for bf16,
        // and 8 independent FMA chains hide the FMA latency.
        for (; c <= k - 2 * TV.Count; c += 2 * TV.Count)
        {
            if (typeof(TW) == typeof(BFloat16) && Sse.IsSupported)
            {
                // prefetcht0 1 KB ahead on each row: the widening (vpmovzxwd + vpslld) makes the bf16 loop execute ~2.5x
                // more instructions per byte than fp32, which leaves fewer cache-line misses in flight per core; the
                // hint restores them (+15-20 % GEMV bandwidth measured on Zen 5; prefetching into L2 only did not help).
                // A prefetch past the end of a row is harmless (prefetches never fault).
                Sse.Prefetch0(w0 + c + BfloatPrefetchElements);
                Sse.Prefetch0(w1 + c + BfloatPrefetchElements);
                Sse.Prefetch0(w2 + c + BfloatPrefetchElements);
                Sse.Prefetch0(w3 + c + BfloatPrefetchElements);
            }
            TV xv = TV.Load(ref xj[c]), xw = TV.Load(ref xj[c + TV.Count]);
            a0 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w0[c]), xv, a0);
            b0 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w0[c + TV.Count]), xw, b0);
            a1 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w1[c]), xv, a1);
            b1 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w1[c + TV.Count]), xw, b1);
            a2 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w2[c]), xv, a2);
            b2 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w2[c + TV.Count]), xw, b2);
            a3 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w3[c]), xv, a3);
            b3 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w3[c + TV.Count]), xw, b3);
        }
        a0 = TV.Add(a0, b0); a1 = TV.Add(a1, b1); a2 = TV.Add(a2, b2); a3 = TV.Add(a3, b3);
        for (; c <= k - TV.Count; c += TV.Count)
        {
            TV xv = TV.Load(ref xj[c]);
            a0 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w0[c]), xv, a0);
            a1 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w1[c]), xv, a1);
            a2 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w2[c]), xv, a2);
            a3 = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref w3[c]), xv, a3);
        }
        float s0 = TV.Sum(a0), s1 = TV.Sum(a1), s2 = TV.Sum(a2), s3 = TV.Sum(a3);
        for (; c < k; c++)
        {
            float xv = xj[c];
            s0 += WeightLoad.Scalar(w0[c]) * xv;
            s1 += WeightLoad.Scalar(w1[c]) * xv;
            s2 += WeightLoad.Scalar(w2[c]) * xv;
            s3 += WeightLoad.Scalar(w3[c]) * xv;
        }
        float* yo = y + (nint)j * m + r;
        yo[0] = s0; yo[1] = s1; yo[2] = s2; yo[3] = s3;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile4x4<TV, TW>(TW* w, float* x, float* y, int m, int k, int r, int j)
        where TV : struct, ISimdF32<TV> where TW : unmanaged
    {
        TW* w0 = w + (nint)r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
        float* x0 = x + (nint)j * k, x1 = x0 + k, x2 = x1 + k, x3 = x2 + k;
        TV a00 = TV.Zero, a01 = TV.Zero, a02 = TV.Zero, a03 = TV.Zero;
        TV a10 = TV.Zero, a11 = TV.Zero, a12 = TV.Zero, a13 = TV.Zero;
        TV a20 = TV.Zero, a21 = TV.Zero, a22 = TV.Zero, a23 = TV.Zero;
        TV a30 = TV.Zero, a31 = TV.Zero, a32 = TV.Zero, a33 = TV.Zero;
        int c = 0;
        for (; c <= k - TV.Count; c += TV.Count)
        {
            TV v0 = TV.Load(ref x0[c]), v1 = TV.Load(ref x1[c]), v2 = TV.Load(ref x2[c]), v3 = TV.Load(ref x3[c]);
            TV u = WeightLoad.Load<TV, TW>(ref w0[c]);
            a00 = TV.MultiplyAdd(u, v0, a00); a01 = TV.MultiplyAdd(u, v1, a01); a02 = TV.MultiplyAdd(u, v2, a02); a03 = TV.MultiplyAdd(u, v3, a03);
            u = WeightLoad.Load<TV, TW>(ref w1[c]);
            a10 = TV.MultiplyAdd(u, v0, a10); a11 = TV.MultiplyAdd(u, v1, a11); a12 = TV.MultiplyAdd(u, v2, a12); a13 = TV.MultiplyAdd(u, v3, a13);
            u = WeightLoad.Load<TV, TW>(ref w2[c]);
            a20 = TV.MultiplyAdd(u, v0, a20); a21 = TV.MultiplyAdd(u, v1, a21); a22 = TV.MultiplyAdd(u, v2, a22); a23 = TV.MultiplyAdd(u, v3, a23);
            u = WeightLoad.Load<TV, TW>(ref w3[c]);
            a30 = TV.MultiplyAdd(u, v0, a30); a31 = TV.MultiplyAdd(u, v1, a31); a32 = TV.MultiplyAdd(u, v2, a32); a33 = TV.MultiplyAdd(u, v3, a33);
        }
        Span<float> s = stackalloc float[16];
        s[0] = TV.Sum(a00); s[1] = TV.Sum(a01); s[2] = TV.Sum(a02); s[3] = TV.Sum(a03);
        s[4] = TV.Sum(a10); s[5] = TV.Sum(a11); s[6] = TV.Sum(a12); s[7] = TV.Sum(a13);
        s[8] = TV.Sum(a20); s[9] = TV.Sum(a21); s[10] = TV.Sum(a22); s[11] = TV.Sum(a23);
        s[12] = TV.Sum(a30); s[13] = TV.Sum(a31); s[14] = TV.Sum(a32); s[15] = TV.Sum(a33);
        for (int rr = 0; rr < 4; rr++)
        {
            TW* wr = w + (nint)(r + rr) * k;
            for (int jj = 0; jj < 4; jj++)
            {
                float* xj = x + (nint)(j + jj) * k;
                float acc = s[rr * 4 + jj];
                for (int cc = c; cc < k; cc++) acc += WeightLoad.Scalar(wr[cc]) * xj[cc];
                y[(nint)(j + jj) * m + r + rr] = acc;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile1x1<TV, TW>(TW* w, float* x, float* y, int m, int k, int r, int j)
        where TV : struct, ISimdF32<TV> where TW : unmanaged
    {
        TW* wr = w + (nint)r * k;
        float* xj = x + (nint)j * k;
        TV a = TV.Zero;
        int c = 0;
        for (; c <= k - TV.Count; c += TV.Count)
            a = TV.MultiplyAdd(WeightLoad.Load<TV, TW>(ref wr[c]), TV.Load(ref xj[c]), a);
        float s = TV.Sum(a);
        for (; c < k; c++) s += WeightLoad.Scalar(wr[c]) * xj[c];
        y[(nint)j * m + r] = s;
    }
}
