using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Simd;

namespace Kernels.Cpu.Fpx;

/// <summary>Small-batch FP6/FP5 GEMM on AVX-512 VBMI with the decode fused into register tiles.</summary>
public static unsafe partial class FpxGemm
{
    /// <summary>
    /// GEMM for n ≥ 2 on AVX-512 VBMI: per 64-code block, two rows are decoded once into
    /// pattern vectors (<see cref="FpxDecode.Patterns512"/>, 10 instructions each) that stay in registers and are multiplied into
    /// eight tokens' accumulators (2 rows × 8 tokens = 16 zmm, 64 FMAs per block): no fp32 scratch round trip, and the decode is
    /// amortized over eight tokens. Tokens past a multiple of eight, and a last odd row, run the GEMV. Measured against the
    /// decoded-tile path (4096², two cores): n = 8 1.3 vs 2.1–2.2 ms, n = 32 4.8 vs 5.9 ms, n = 128 19 vs 24 ms; the weights are
    /// decoded once per eight tokens, which costs less than the scratch round trip of the tile path even at n = 128.
    /// </summary>
    [SkipLocalsInit]
    internal static void GemmPatterns512<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        Debug.Assert(Avx512Vbmi.IsSupported && a.N >= 2);
        int j = 0;
        for (; j + 8 <= a.N; j += 8)
        {
            var s = TokenSlice(a, j, 8);
            int pairs = rowCount & ~1;
            Tokens8<TK>(ref s, rowStart, pairs);
            if (pairs < rowCount)
                for (int t = 0; t < 8; t++)
                {
                    var g = TokenSlice(a, j + t, 1);
                    GemvPatterns512<TK>(ref g, rowStart + pairs, 1);
                }
        }
        for (; j < a.N; j++)
        {
            var g = TokenSlice(a, j, 1);
            GemvPatterns512<TK>(ref g, rowStart, rowCount);
        }
    }

    /// <summary>The arguments for tokens <c>[j, j + n)</c>: x, y and the post-scales offset to token j.</summary>
    private static FpxArgs TokenSlice(in FpxArgs a, int j, int n) => a with
    {
        X = a.X + (long)j * a.KPad, Y = a.Y + (long)j * a.M, Post = a.Post + j, N = n,
    };

    /// <summary>Eight tokens (x rows <c>a.X + t·KPad</c>), rows in pairs over <c>[rowStart, rowStart + rowCount)</c> (even count).</summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Tokens8<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        int blocks = a.KPad / 64, hb = TK.Kind == 1 ? 8 : 16;
        long hs = (long)blocks * hb, ls = (long)blocks * 32, xs = a.KPad;
        var k = new FpxDecode.ConstsVbmi(0);
        for (int r = rowStart; r < rowStart + rowCount; r += 2)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* x = a.X;
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
            Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default, d6 = default, d7 = default;
            for (byte* stop = lo + ls; lo < stop; lo += 32, hi += hb, x += 64)
            {
                FpxDecode.Patterns512<TK>(hi, lo, k, out var f0, out var f1, out var f2, out var f3);
                FpxDecode.Patterns512<TK>(hi + hs, lo + ls, k, out var g0, out var g1, out var g2, out var g3);
                Token(x, f0, f1, f2, f3, g0, g1, g2, g3, ref c0, ref d0);
                Token(x + xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c1, ref d1);
                Token(x + 2 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c2, ref d2);
                Token(x + 3 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c3, ref d3);
                Token(x + 4 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c4, ref d4);
                Token(x + 5 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c5, ref d5);
                Token(x + 6 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c6, ref d6);
                Token(x + 7 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c7, ref d7);
            }
            Store(ref a, r, 0, c0, d0);
            Store(ref a, r, 1, c1, d1);
            Store(ref a, r, 2, c2, d2);
            Store(ref a, r, 3, c3, d3);
            Store(ref a, r, 4, c4, d4);
            Store(ref a, r, 5, c5, d5);
            Store(ref a, r, 6, c6, d6);
            Store(ref a, r, 7, c7, d7);
        }
    }

    /// <summary>One token's 64 activations against two rows' decoded block: each activation vector is loaded once (also used by
    /// <see cref="Int6Gemm"/>'s fused W6A16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Token(float* x, Vector512<float> f0, Vector512<float> f1, Vector512<float> f2, Vector512<float> f3,
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

    /// <summary>y[t, r] and y[t, r + 1] from the two rows' accumulators of token t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ref FpxArgs a, int r, int t, Vector512<float> c, Vector512<float> d)
    {
        float* y = a.Y + (long)t * a.M;
        y[r] = Finish(F32x16.Sum(new F32x16(c)), a.Scales[r], a.Post[t]);
        y[r + 1] = Finish(F32x16.Sum(new F32x16(d)), a.Scales[r + 1], a.Post[t]);
    }
}
