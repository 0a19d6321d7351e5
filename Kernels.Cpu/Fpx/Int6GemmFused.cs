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
    /// W6A16 for n ≥ 2 on AVX-512: <see cref="FusedSmallBatch"/> over blocks decoded to the exact dequantized fp32 weights
    /// <c>(float)(q·scale_g)</c> (the values the decoded-tile path uses, so the same error bound holds), in the pattern lane
    /// order (q exact by the 2^23 trick, one <c>vmulps</c> per 16 weights).
    /// </summary>
    internal static void W6A16Fused512(ref A16Args a, int rowStart, int rowCount)
    {
        Debug.Assert(Avx512BW.IsSupported && a.N >= 2);
        var rows = new FusedRows(a);
        FusedSmallBatch.Run(ref rows, a.X, a.KPad, a.Y, a.M, a.N, rowStart, rowCount);
    }

    /// <summary>INT6 planes and group scales as <see cref="IFusedRows"/>.</summary>
    private readonly struct FusedRows(A16Args a) : IFusedRows
    {
        private readonly A16Args _a = a;
        private readonly FpxDecode.Consts512 _k = new(0);
        private readonly Vector512<ushort> _magicHi = Vector512.Create((ushort)0x4B00);
        private readonly Vector512<float> _magic = Vector512.Create(8_388_608f + Int6Weights.Offset);

        public int Blocks => _a.KPad / 64;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Decode(long row, int block, out Vector512<float> f0, out Vector512<float> f1, out Vector512<float> f2, out Vector512<float> f3)
        {
            long b = row * Blocks + block;
            var scale = Vector512.Create(_a.Scales[row * _a.Groups + block / _a.GroupBlocks]);
            Vector512<byte> u = FpxDecode.Codes512<Int6Kind>(_a.High + b * 16, _a.Low + b * 32, _k);
            Vector512<ushort> w0 = Avx512BW.UnpackLow(u, Vector512<byte>.Zero).AsUInt16(), w1 = Avx512BW.UnpackHigh(u, Vector512<byte>.Zero).AsUInt16();
            f0 = (Avx512BW.UnpackLow(w0, _magicHi).AsSingle() - _magic) * scale;
            f1 = (Avx512BW.UnpackHigh(w0, _magicHi).AsSingle() - _magic) * scale;
            f2 = (Avx512BW.UnpackLow(w1, _magicHi).AsSingle() - _magic) * scale;
            f3 = (Avx512BW.UnpackHigh(w1, _magicHi).AsSingle() - _magic) * scale;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float Finish(long row, int token, Vector512<float> sum) => F32x16.Sum(new F32x16(sum));

        public void Gemv(int token, int rowStart, int rowCount)
        {
            var g = _a with { X = _a.X + (long)token * _a.KPad, Y = _a.Y + (long)token * _a.M, N = 1 };
            W6A16Avx512(ref g, rowStart, rowCount);
        }
    }
}
