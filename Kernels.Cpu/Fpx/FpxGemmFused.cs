using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Simd;

namespace Kernels.Cpu.Fpx;

/// <summary>Small-batch FP6/FP5 GEMM on AVX-512 VBMI with the decode fused into register tiles.</summary>
public static unsafe partial class FpxGemm
{
    /// <summary>GEMM for n ≥ 2 on AVX-512 VBMI: <see cref="FusedSmallBatch"/> over the pattern decode (10 instructions per
    /// block and row); outputs as the GEMV (<c>scale_r · 2^(B − e_j) · Σ</c>).</summary>
    internal static void GemmPatterns512<TK>(ref FpxArgs a, int rowStart, int rowCount) where TK : struct, ICodeKind
    {
        Debug.Assert(Avx512Vbmi.IsSupported && a.N >= 2);
        var rows = new FusedRows<TK>(a);
        FusedSmallBatch.Run(ref rows, a.X, a.KPad, a.Y, a.M, a.N, rowStart, rowCount);
    }

    /// <summary>The arguments for token j alone: x, y and the post-scale offset to token j.</summary>
    private static FpxArgs SingleToken(in FpxArgs a, int j) => a with
    {
        X = a.X + (long)j * a.KPad, Y = a.Y + (long)j * a.M, Post = a.Post + j, N = 1,
    };

    /// <summary>FP6/FP5 planes as <see cref="IFusedRows"/>.</summary>
    private readonly struct FusedRows<TK>(FpxArgs a) : IFusedRows where TK : struct, ICodeKind
    {
        private readonly FpxArgs _a = a;
        private readonly FpxDecode.ConstsVbmi _k = new(0);
        private readonly int _hb = TK.Kind == 1 ? 8 : 16;

        public int Blocks => _a.KPad / 64;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Decode(long row, int block, out Vector512<float> f0, out Vector512<float> f1, out Vector512<float> f2, out Vector512<float> f3)
        {
            long b = row * Blocks + block;
            FpxDecode.Patterns512<TK>(_a.High + b * _hb, _a.Low + b * 32, _k, out f0, out f1, out f2, out f3);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float Finish(long row, int token, Vector512<float> sum) => FpxGemm.Finish(F32x16.Sum(new F32x16(sum)), _a.Scales[row], _a.Post[token]);

        public void Gemv(int token, int rowStart, int rowCount)
        {
            var g = SingleToken(_a, token);
            GemvPatterns512<TK>(ref g, rowStart, rowCount);
        }
    }
}
