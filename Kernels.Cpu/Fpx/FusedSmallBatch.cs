using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Fpx;

/// <summary>A packed weight format as the fused small-batch GEMM sees it (AVX-512): decode one row's 64-code block into four
/// fp32 vectors in the pattern lane order of <see cref="FpxDecode.Patterns512"/> (activations are permuted to match), turn a
/// row's dot product into its output, and run one token through the format's GEMV.</summary>
internal unsafe interface IFusedRows
{
    /// <summary>64-code blocks per row.</summary>
    int Blocks { get; }

    /// <summary>Row <paramref name="row"/>, block <paramref name="block"/> as four 16-lane vectors.</summary>
    void Decode(long row, int block, out Vector512<float> f0, out Vector512<float> f1, out Vector512<float> f2, out Vector512<float> f3);

    /// <summary>The output for row <paramref name="row"/> and token <paramref name="token"/> from its lane sums.</summary>
    float Finish(long row, int token, Vector512<float> sum);

    /// <summary>Token <paramref name="token"/> over rows <c>[rowStart, rowStart + rowCount)</c> by the format's GEMV.</summary>
    void Gemv(int token, int rowStart, int rowCount);
}

/// <summary>
/// GEMM for n ≥ 2 on AVX-512 with the decode fused into register tiles, shared by FP6/FP5 (<see cref="FpxGemm"/>) and INT6
/// W6A16 (<see cref="Int6Gemm"/>): per 64-code block two rows are decoded once into eight vectors that stay in registers and
/// are multiplied into eight tokens' accumulators (2 × 8 zmm, 64 FMAs per block), so there is no fp32 scratch round trip and
/// the decode is amortized over eight tokens. Tokens past a multiple of eight, and a last odd row, run the format's GEMV.
/// Measured against the decoded-tile path (bench harness, 4096², two cores, FP6): n = 8 3.07 → 1.50 ms, n = 32 7.16 → 5.15 ms.
/// </summary>
internal static unsafe class FusedSmallBatch
{
    /// <summary>y[j·m + r] for tokens j &lt; n (x rows of <paramref name="xStride"/> floats) and rows
    /// <c>[rowStart, rowStart + rowCount)</c>.</summary>
    public static void Run<TR>(ref TR rows, float* x, long xStride, float* y, int m, int n, int rowStart, int rowCount)
        where TR : struct, IFusedRows
    {
        int j = 0, pairs = rowCount & ~1;
        for (; j + 8 <= n; j += 8)
        {
            Tokens8(ref rows, x + j * xStride, xStride, y + (long)j * m, m, j, rowStart, pairs);
            if (pairs < rowCount)
                for (int t = 0; t < 8; t++) rows.Gemv(j + t, rowStart + pairs, 1);
        }
        for (; j < n; j++) rows.Gemv(j, rowStart, rowCount);
    }

    /// <summary>Eight tokens from <paramref name="token0"/> (x rows at <paramref name="x"/>), rows in pairs (even count).</summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Tokens8<TR>(ref TR rows, float* x, long xs, float* y, int m, int token0, int rowStart, int rowCount)
        where TR : struct, IFusedRows
    {
        int blocks = rows.Blocks;
        for (int r = rowStart; r < rowStart + rowCount; r += 2)
        {
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
            Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default, d6 = default, d7 = default;
            float* xb = x;
            for (int b = 0; b < blocks; b++, xb += 64)
            {
                rows.Decode(r, b, out var f0, out var f1, out var f2, out var f3);
                rows.Decode(r + 1, b, out var g0, out var g1, out var g2, out var g3);
                Token(xb, f0, f1, f2, f3, g0, g1, g2, g3, ref c0, ref d0);
                Token(xb + xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c1, ref d1);
                Token(xb + 2 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c2, ref d2);
                Token(xb + 3 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c3, ref d3);
                Token(xb + 4 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c4, ref d4);
                Token(xb + 5 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c5, ref d5);
                Token(xb + 6 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c6, ref d6);
                Token(xb + 7 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c7, ref d7);
            }
            Store(ref rows, y, m, r, token0, 0, c0, d0);
            Store(ref rows, y, m, r, token0, 1, c1, d1);
            Store(ref rows, y, m, r, token0, 2, c2, d2);
            Store(ref rows, y, m, r, token0, 3, c3, d3);
            Store(ref rows, y, m, r, token0, 4, c4, d4);
            Store(ref rows, y, m, r, token0, 5, c5, d5);
            Store(ref rows, y, m, r, token0, 6, c6, d6);
            Store(ref rows, y, m, r, token0, 7, c7, d7);
        }
    }

    /// <summary>One token's 64 activations against two rows' decoded block: each activation vector is loaded once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Token(float* x, Vector512<float> f0, Vector512<float> f1, Vector512<float> f2, Vector512<float> f3,
        Vector512<float> g0, Vector512<float> g1, Vector512<float> g2, Vector512<float> g3, ref Vector512<float> c, ref Vector512<float> d)
    {
        var v = Vector512.Load(x);
        c = Avx512F.FusedMultiplyAdd(f0, v, c);
        d = Avx512F.FusedMultiplyAdd(g0, v, d);
        v = Vector512.Load(x + 16);
        c = Avx512F.FusedMultiplyAdd(f1, v, c);
        d = Avx512F.FusedMultiplyAdd(g1, v, d);
        v = Vector512.Load(x + 32);
        c = Avx512F.FusedMultiplyAdd(f2, v, c);
        d = Avx512F.FusedMultiplyAdd(g2, v, d);
        v = Vector512.Load(x + 48);
        c = Avx512F.FusedMultiplyAdd(f3, v, c);
        d = Avx512F.FusedMultiplyAdd(g3, v, d);
    }

    /// <summary>y[t, r] and y[t, r + 1] from the two rows' accumulators of token t of the pass.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store<TR>(ref TR rows, float* y, int m, int r, int token0, int t, Vector512<float> c, Vector512<float> d)
        where TR : struct, IFusedRows
    {
        y[(long)t * m + r] = rows.Finish(r, token0 + t, c);
        y[(long)t * m + r + 1] = rows.Finish(r + 1, token0 + t, d);
    }
}
