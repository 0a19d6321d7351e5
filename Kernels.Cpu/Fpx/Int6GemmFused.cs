using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Simd;
using Kernels.Quant.Fpx;

namespace Kernels.Cpu.Fpx;

/// <summary>Small-batch INT6 W6A16 GEMM on AVX-512 with the decode fused into register tiles.</summary>
public static unsafe partial class Int6Gemm
{
    /// <summary>
    /// W6A16 for n ≥ 2 on AVX-512, the structure of <see cref="FpxGemm.GemmPatterns512{TK}"/>: per 64-code block two rows are
    /// decoded to the exact dequantized fp32 weights <c>(float)(q·scale_g)</c> (the values the decoded-tile path uses, so the
    /// same error bound holds) in the pattern lane order, kept in registers and multiplied into eight tokens' accumulators
    /// (16 zmm). Tokens past a multiple of eight, and a last odd row, run the n = 1 kernel.
    /// </summary>
    [SkipLocalsInit]
    internal static void W6A16Fused512(ref A16Args a, int rowStart, int rowCount)
    {
        Debug.Assert(Avx512BW.IsSupported && a.N >= 2);
        int j = 0;
        for (; j + 8 <= a.N; j += 8)
        {
            var s = TokenSlice(a, j, 8);
            int pairs = rowCount & ~1;
            Tokens8(ref s, rowStart, pairs);
            if (pairs < rowCount)
                for (int t = 0; t < 8; t++)
                {
                    var g = TokenSlice(a, j + t, 1);
                    W6A16Avx512(ref g, rowStart + pairs, 1);
                }
        }
        for (; j < a.N; j++)
        {
            var g = TokenSlice(a, j, 1);
            W6A16Avx512(ref g, rowStart, rowCount);
        }
    }

    private static A16Args TokenSlice(in A16Args a, int j, int n) => a with { X = a.X + (long)j * a.KPad, Y = a.Y + (long)j * a.M, N = n };

    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Tokens8(ref A16Args a, int rowStart, int rowCount)
    {
        int blocks = a.KPad / 64, gb = a.GroupBlocks;
        long hs = (long)blocks * 16, ls = (long)blocks * 32, xs = a.KPad;
        var k = new FpxDecode.Consts512(0);
        Vector512<ushort> magicHi = Vector512.Create((ushort)0x4B00);
        Vector512<float> magic = Vector512.Create(8_388_608f + Int6Weights.Offset);
        for (int r = rowStart; r < rowStart + rowCount; r += 2)
        {
            byte* hi = a.High + r * hs, lo = a.Low + r * ls;
            float* sc = a.Scales + (long)r * a.Groups, x = a.X;
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
            Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default, d6 = default, d7 = default;
            for (int b = 0; b < blocks; b++, x += 64)
            {
                int g = b / gb;
                Weights(hi + 16 * b, lo + 32 * b, Vector512.Create(sc[g]), k, magicHi, magic, out var f0, out var f1, out var f2, out var f3);
                Weights(hi + hs + 16 * b, lo + ls + 32 * b, Vector512.Create(sc[a.Groups + g]), k, magicHi, magic, out var g0, out var g1, out var g2, out var g3);
                FpxGemm.Token(x, f0, f1, f2, f3, g0, g1, g2, g3, ref c0, ref d0);
                FpxGemm.Token(x + xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c1, ref d1);
                FpxGemm.Token(x + 2 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c2, ref d2);
                FpxGemm.Token(x + 3 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c3, ref d3);
                FpxGemm.Token(x + 4 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c4, ref d4);
                FpxGemm.Token(x + 5 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c5, ref d5);
                FpxGemm.Token(x + 6 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c6, ref d6);
                FpxGemm.Token(x + 7 * xs, f0, f1, f2, f3, g0, g1, g2, g3, ref c7, ref d7);
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

    /// <summary>One block's dequantized weights <c>(float)(q·scale)</c> in pattern lane order (q exact by the 2^23 trick).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Weights(byte* hi, byte* lo, Vector512<float> scale, in FpxDecode.Consts512 k, Vector512<ushort> magicHi, Vector512<float> magic,
        out Vector512<float> f0, out Vector512<float> f1, out Vector512<float> f2, out Vector512<float> f3)
    {
        Vector512<byte> u = FpxDecode.Codes512<Int6Kind>(hi, lo, k);
        Vector512<ushort> w0 = Avx512BW.UnpackLow(u, Vector512<byte>.Zero).AsUInt16(), w1 = Avx512BW.UnpackHigh(u, Vector512<byte>.Zero).AsUInt16();
        f0 = (Avx512BW.UnpackLow(w0, magicHi).AsSingle() - magic) * scale;
        f1 = (Avx512BW.UnpackHigh(w0, magicHi).AsSingle() - magic) * scale;
        f2 = (Avx512BW.UnpackLow(w1, magicHi).AsSingle() - magic) * scale;
        f3 = (Avx512BW.UnpackHigh(w1, magicHi).AsSingle() - magic) * scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ref A16Args a, int r, int t, Vector512<float> c, Vector512<float> d)
    {
        float* y = a.Y + (long)t * a.M;
        y[r] = F32x16.Sum(new F32x16(c));
        y[r + 1] = F32x16.Sum(new F32x16(d));
    }
}
