using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Threading;
using Kernels.Quant.Lut;

namespace Kernels.Cpu.Lut;

/// <summary>The dequantize-then-multiply baseline over the same packed <see cref="LutWeights"/> as <see cref="LutGemm"/>:
/// codes are rebuilt from the bit-planes in registers, converted to fp32 and multiplied with fused multiply-adds.</summary>
/// <remarks>
/// <para>It exists to measure what the table lookups buy (the "vs dequant" column of the LUT benchmark suite), so it uses
/// the same layout, threading and per-group epilogue: <c>y += s·(Σ q·x − c·X_g) + o·X_g</c>. Per 16 rows and 8 columns it
/// does, for each column, <c>b</c> shift/and pairs to gather the code bits, one int→fp32 conversion and one FMA.</para>
/// <para>GEMM (n &gt; 1, AVX-512 or AVX2) dequantizes each 64-row × G block once and reuses it for every activation vector.
/// Paths: AVX-512 (16 rows per vector), AVX2 + FMA (8 rows per vector; until 2026-12-02 AVX2 machines ran the scalar
/// code, 10–100× slower, which inflated the "vs dequant" column there) and a scalar fallback for the others.
/// Accumulation is fp32 in column order per row, the same on every vector path; results are within fp32 rounding of
/// <see cref="Quant.Reference.LutReference"/>.</para>
/// </remarks>
public static unsafe class LutDequantGemm
{
    /// <summary>Computes <c>y = x · Wᵀ</c> by dequantizing in registers.</summary>
    /// <param name="weights">Packed weights.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="n">Activation vectors.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A length mismatch or overlapping buffers.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(LutWeights weights, ReadOnlySpan<float> x, Span<float> y, int n, KernelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * weights.K);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * weights.M);
        ThrowHelper.ThrowIfOverlapping(x, y, nameof(x), nameof(y));
        IsaPath isa = CpuIsa.Resolve(options);
        if (weights.M == 0 || n == 0) return;
        fixed (float* px = x)
        fixed (float* py = y)
        fixed (byte* pw = weights.Planes)
        fixed (BFloat16* ps = weights.Scales)
        fixed (BFloat16* po = weights.Offsets)
        {
            var s = new Chunks
            {
                Planes = pw, Scales = (ushort*)ps, Offsets = (ushort*)po, X = px, Y = py,
                M = weights.M, K = weights.K, N = n, Bits = weights.Format.Bits, GroupSize = weights.Format.GroupSize,
                Center = (float)weights.Format.Center, Avx512 = isa == IsaPath.Avx512,
                Avx2 = isa == IsaPath.Avx2 && Avx2.IsSupported && Fma.IsSupported,
            };
            int threads = (long)weights.M * weights.K * n < 65_536 ? 1 : (options ?? KernelOptions.Default).EffectiveParallelism;
            WorkerPool.Run(weights.Tiles, threads, ref s);
        }
    }

    private struct Chunks : IChunkKernel<Chunks>
    {
        public byte* Planes;
        public ushort* Scales, Offsets;
        public float* X, Y;
        public int M, K, N, Bits, GroupSize;
        public float Center;
        public bool Avx512, Avx2;

        public static void Execute(ref Chunks s, int tile) => Tile(ref s, tile);
    }

    [SkipLocalsInit]
    private static void Tile(ref Chunks s, int t)
    {
        if (s.N > 1 && (s.Avx512 && Avx512F.IsSupported || s.Avx2))
        {
            TileDecodeOnce(ref s, t);
            return;
        }
        int b = s.Bits, gs = s.GroupSize, groups = s.K / gs, pairs = gs / 8;
        long tileBytes = (long)groups * pairs * b * 64;
        float* accPos = stackalloc float[64];   // Σ q·x per byte position of the current group
        float* yRow = stackalloc float[64];
        int* posOf = stackalloc int[64];
        for (int p = 0; p < 64; p++) posOf[BitPlanePacking.RowOfPosition(p)] = p;
        for (int j = 0; j < s.N; j++)
        {
            float* xj = s.X + (long)j * s.K;
            byte* wp = s.Planes + t * tileBytes;
            new Span<float>(yRow, 64).Clear();
            for (int g = 0; g < groups; g++)
            {
                float* xg = xj + g * gs;
                if (s.Avx512 && Avx512F.IsSupported) GroupAvx512(wp, xg, b, pairs, accPos);
                else if (s.Avx2) GroupAvx2(wp, xg, b, pairs, accPos);
                else GroupScalar(wp, xg, b, pairs, accPos);
                wp += (long)pairs * b * 64;
                float xs = 0;
                for (int c = 0; c < gs; c++) xs += xg[c];
                long si = ((long)t * groups + g) * 64;
                for (int r = 0; r < 64; r++)
                {
                    float dot = accPos[posOf[r]] - s.Center * xs;
                    yRow[r] = MathF.FusedMultiplyAdd(LutGemm.Bf16(s.Scales[si + r]), dot, MathF.FusedMultiplyAdd(LutGemm.Bf16(s.Offsets[si + r]), xs, yRow[r]));
                }
            }
            int rows = Math.Min(64, s.M - t * 64);
            Buffer.MemoryCopy(yRow, s.Y + (long)j * s.M + t * 64, rows * 4, rows * 4);
        }
    }

    /// <summary>GEMM (n &gt; 1): each group of the tile is dequantized once into a 64×G fp32 block (ArrayPool scratch, 32 KB
    /// at G = 128, L1/L2-resident), then every activation vector runs 4 (AVX-512) or 8 (AVX2) FMAs per column over it.</summary>
    [SkipLocalsInit]
    private static void TileDecodeOnce(ref Chunks s, int t)
    {
        int b = s.Bits, gs = s.GroupSize, groups = s.K / gs, pairs = gs / 8;
        int rows = Math.Min(64, s.M - t * 64);
        long tileBytes = (long)groups * pairs * b * 64;
        float[] block = System.Buffers.ArrayPool<float>.Shared.Rent(gs * 64);
        float* accPos = stackalloc float[64];
        int* posOf = stackalloc int[64];
        for (int p = 0; p < 64; p++) posOf[BitPlanePacking.RowOfPosition(p)] = p;
        for (int j = 0; j < s.N; j++) new Span<float>(s.Y + (long)j * s.M + t * 64, rows).Clear();
        fixed (float* wb = block)
        {
            byte* wp = s.Planes + t * tileBytes;
            bool wide = s.Avx512 && Avx512F.IsSupported;
            for (int g = 0; g < groups; g++, wp += (long)pairs * b * 64)
            {
                // Dequantize: wb[col·64 + position] = q (fp32); the centre and scales are applied after the dot.
                if (wide) DequantizeAvx512(wp, b, pairs, wb);
                else DequantizeAvx2(wp, b, pairs, wb);
                long si = ((long)t * groups + g) * 64;
                for (int j = 0; j < s.N; j++)
                {
                    float* xg = s.X + (long)j * s.K + g * gs;
                    float xs = wide ? DotAvx512(wb, xg, gs, accPos) : DotAvx2(wb, xg, gs, accPos);
                    float* yj = s.Y + (long)j * s.M + t * 64;
                    for (int r = 0; r < rows; r++)
                    {
                        float dot = accPos[posOf[r]] - s.Center * xs;
                        yj[r] = MathF.FusedMultiplyAdd(LutGemm.Bf16(s.Scales[si + r]), dot, MathF.FusedMultiplyAdd(LutGemm.Bf16(s.Offsets[si + r]), xs, yj[r]));
                    }
                }
            }
        }
        System.Buffers.ArrayPool<float>.Shared.Return(block);
    }

    /// <summary>wb[col·64 + position] = the code of (position, col) as fp32 for one group, 16 positions per vector.</summary>
    private static void DequantizeAvx512(byte* wp, int b, int pairs, float* wb)
    {
        var one = Vector512.Create(1);
        for (int p = 0; p < pairs; p++)
            for (int c = 0; c < 4; c++)
            {
                byte* w = wp + (long)p * b * 64 + c * 16;
                Vector512<int> p0 = Avx512F.ConvertToVector512Int32(Vector128.Load(w));
                Vector512<int> p1 = b > 1 ? Avx512F.ConvertToVector512Int32(Vector128.Load(w + 64)) : default;
                Vector512<int> p2 = b > 2 ? Avx512F.ConvertToVector512Int32(Vector128.Load(w + 128)) : default;
                Vector512<int> p3 = b > 3 ? Avx512F.ConvertToVector512Int32(Vector128.Load(w + 192)) : default;
                for (int kk = 0; kk < 8; kk++)
                {
                    Vector512<int> q = Vector512.ShiftRightLogical(p0, kk) & one;
                    if (b > 1) q |= Vector512.ShiftLeft(Vector512.ShiftRightLogical(p1, kk) & one, 1);
                    if (b > 2) q |= Vector512.ShiftLeft(Vector512.ShiftRightLogical(p2, kk) & one, 2);
                    if (b > 3) q |= Vector512.ShiftLeft(Vector512.ShiftRightLogical(p3, kk) & one, 3);
                    Vector512.ConvertToSingle(q).Store(wb + (p * 8 + kk) * 64 + c * 16);
                }
            }
    }

    /// <summary><see cref="DequantizeAvx512"/> with 8 positions per vector (<c>vpmovzxbd ymm</c>).</summary>
    private static void DequantizeAvx2(byte* wp, int b, int pairs, float* wb)
    {
        var one = Vector256.Create(1);
        for (int p = 0; p < pairs; p++)
            for (int c = 0; c < 8; c++)
            {
                byte* w = wp + (long)p * b * 64 + c * 8;
                Vector256<int> p0 = Avx2.ConvertToVector256Int32(w);
                Vector256<int> p1 = b > 1 ? Avx2.ConvertToVector256Int32(w + 64) : default;
                Vector256<int> p2 = b > 2 ? Avx2.ConvertToVector256Int32(w + 128) : default;
                Vector256<int> p3 = b > 3 ? Avx2.ConvertToVector256Int32(w + 192) : default;
                for (int kk = 0; kk < 8; kk++)
                {
                    Vector256<int> q = Vector256.ShiftRightLogical(p0, kk) & one;
                    if (b > 1) q |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(p1, kk) & one, 1);
                    if (b > 2) q |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(p2, kk) & one, 2);
                    if (b > 3) q |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(p3, kk) & one, 3);
                    Vector256.ConvertToSingle(q).Store(wb + (p * 8 + kk) * 64 + c * 8);
                }
            }
    }

    /// <summary>accPos[position] = Σ_col wb[col·64 + position]·xg[col] over a dequantized group (4 zmm accumulators);
    /// returns Σ xg.</summary>
    private static float DotAvx512(float* wb, float* xg, int gs, float* accPos)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float xs = 0;
        for (int col = 0; col < gs; col++)
        {
            var xv = Vector512.Create(xg[col]);
            float* wc = wb + col * 64;
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(wc), xv, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(wc + 16), xv, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Load(wc + 32), xv, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Load(wc + 48), xv, a3);
            xs += xg[col];
        }
        a0.Store(accPos); a1.Store(accPos + 16); a2.Store(accPos + 32); a3.Store(accPos + 48);
        return xs;
    }

    /// <summary><see cref="DotAvx512"/> with 8 ymm accumulators.</summary>
    private static float DotAvx2(float* wb, float* xg, int gs, float* accPos)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        float xs = 0;
        for (int col = 0; col < gs; col++)
        {
            var xv = Vector256.Create(xg[col]);
            float* wc = wb + col * 64;
            a0 = Fma.MultiplyAdd(Vector256.Load(wc), xv, a0);
            a1 = Fma.MultiplyAdd(Vector256.Load(wc + 8), xv, a1);
            a2 = Fma.MultiplyAdd(Vector256.Load(wc + 16), xv, a2);
            a3 = Fma.MultiplyAdd(Vector256.Load(wc + 24), xv, a3);
            a4 = Fma.MultiplyAdd(Vector256.Load(wc + 32), xv, a4);
            a5 = Fma.MultiplyAdd(Vector256.Load(wc + 40), xv, a5);
            a6 = Fma.MultiplyAdd(Vector256.Load(wc + 48), xv, a6);
            a7 = Fma.MultiplyAdd(Vector256.Load(wc + 56), xv, a7);
            xs += xg[col];
        }
        a0.Store(accPos); a1.Store(accPos + 8); a2.Store(accPos + 16); a3.Store(accPos + 24);
        a4.Store(accPos + 32); a5.Store(accPos + 40); a6.Store(accPos + 48); a7.Store(accPos + 56);
        return xs;
    }

    private static void GroupScalar(byte* wp, float* xg, int b, int pairs, float* accPos)
    {
        for (int pos = 0; pos < 64; pos++)
        {
            float acc = 0;
            for (int p = 0; p < pairs; p++)
                for (int kk = 0; kk < 8; kk++)
                {
                    int q = 0;
                    for (int i = 0; i < b; i++) q |= ((wp[(p * b + i) * 64 + pos] >> kk) & 1) << i;
                    acc = MathF.FusedMultiplyAdd(q, xg[p * 8 + kk], acc);
                }
            accPos[pos] = acc;
        }
    }

    [SkipLocalsInit]
    private static void GroupAvx512(byte* wp, float* xg, int b, int pairs, float* accPos)
    {
        var one = Vector512.Create(1);
        for (int c = 0; c < 4; c++)
        {
            Vector512<float> acc = default;
            for (int p = 0; p < pairs; p++)
            {
                byte* w = wp + (long)p * b * 64 + c * 16;
                // vpmovzxbd: 16 bytes (one plane, 16 positions) → 16 int32 lanes.
                Vector512<int> p0 = Avx512F.ConvertToVector512Int32(Vector128.Load(w));
                Vector512<int> p1 = b > 1 ? Avx512F.ConvertToVector512Int32(Vector128.Load(w + 64)) : default;
                Vector512<int> p2 = b > 2 ? Avx512F.ConvertToVector512Int32(Vector128.Load(w + 128)) : default;
                Vector512<int> p3 = b > 3 ? Avx512F.ConvertToVector512Int32(Vector128.Load(w + 192)) : default;
                for (int kk = 0; kk < 8; kk++)
                {
                    // q = Σ_i ((plane_i >> kk) & 1) << i, then fp32 and one FMA with x[kk].
                    Vector512<int> q = Vector512.ShiftRightLogical(p0, kk) & one;
                    if (b > 1) q |= Vector512.ShiftLeft(Vector512.ShiftRightLogical(p1, kk) & one, 1);
                    if (b > 2) q |= Vector512.ShiftLeft(Vector512.ShiftRightLogical(p2, kk) & one, 2);
                    if (b > 3) q |= Vector512.ShiftLeft(Vector512.ShiftRightLogical(p3, kk) & one, 3);
                    acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(q), Vector512.Create(xg[p * 8 + kk]), acc);
                }
            }
            acc.Store(accPos + c * 16);
        }
    }

    /// <summary><see cref="GroupAvx512"/> with 8 positions per vector.</summary>
    [SkipLocalsInit]
    private static void GroupAvx2(byte* wp, float* xg, int b, int pairs, float* accPos)
    {
        var one = Vector256.Create(1);
        for (int c = 0; c < 8; c++)
        {
            Vector256<float> acc = default;
            for (int p = 0; p < pairs; p++)
            {
                byte* w = wp + (long)p * b * 64 + c * 8;
                Vector256<int> p0 = Avx2.ConvertToVector256Int32(w);
                Vector256<int> p1 = b > 1 ? Avx2.ConvertToVector256Int32(w + 64) : default;
                Vector256<int> p2 = b > 2 ? Avx2.ConvertToVector256Int32(w + 128) : default;
                Vector256<int> p3 = b > 3 ? Avx2.ConvertToVector256Int32(w + 192) : default;
                for (int kk = 0; kk < 8; kk++)
                {
                    Vector256<int> q = Vector256.ShiftRightLogical(p0, kk) & one;
                    if (b > 1) q |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(p1, kk) & one, 1);
                    if (b > 2) q |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(p2, kk) & one, 2);
                    if (b > 3) q |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(p3, kk) & one, 3);
                    acc = Fma.MultiplyAdd(Vector256.ConvertToSingle(q), Vector256.Create(xg[p * 8 + kk]), acc);
                }
            }
            acc.Store(accPos + c * 8);
        }
    }
}
