using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using X86Avx2 = System.Runtime.Intrinsics.X86.Avx2;

namespace Kernels.Cpu.Lut;

public static unsafe partial class LutGemm
{
    /// <summary>The AVX2 int8-table path over tiles <c>[tileStart, tileStart + tileCount)</c>.</summary>
    /// <remarks>A 64-row tile is processed as two 32-byte halves (rows 8h..8h+7 of each 16-row block), each a full pass over
    /// k; the second pass finds the tile's bytes in L2. Same integer sums as <see cref="Avx512(ref LutArgs, int, int)"/>.</remarks>
    [SkipLocalsInit]
    internal static void Avx2(ref LutArgs a, int tileStart, int tileCount)
    {
        Debug.Assert(X86Avx2.IsSupported);
        switch (a.Bits)
        {
            case 1: Avx2<Planes1>(ref a, tileStart, tileCount); break;
            case 2: Avx2<Planes2>(ref a, tileStart, tileCount); break;
            case 3: Avx2<Planes3>(ref a, tileStart, tileCount); break;
            default: Avx2<Planes4>(ref a, tileStart, tileCount); break;
        }
    }

    [SkipLocalsInit]
    private static void Avx2<TB>(ref LutArgs a, int tileStart, int tileCount) where TB : struct, IPlaneCount
    {
        int pairs = a.GroupSize / 8, groups = a.Groups, kgPerGroup = a.GroupSize / 4;
        long tileBytes = (long)groups * pairs * TB.Bits * 64;
        var nibble = Vector256.Create((byte)0x0F);
        float* tmp = stackalloc float[64];
        for (int t = tileStart; t < tileStart + tileCount; t++)
            for (int j = 0; j < a.N; j++)
            {
                sbyte* tab = (sbyte*)a.Tables + (long)j * (a.K / 4) * 16;
                float* hls = a.HalfLutScale + j * groups, xsum = a.GroupSum + j * groups;
                for (int h = 0; h < 2; h++)
                {
                    byte* wp = a.Planes + t * tileBytes + h * 32;
                    ushort* sp = a.Scales + (long)t * groups * 64 + h * 8, op = a.Offsets + (long)t * groups * 64 + h * 8;
                    Vector256<float> y0 = default, y1 = default, y2 = default, y3 = default;
                    for (int g = 0; g < groups; g++)
                    {
                        Vector256<int> ae = default, ao = default, be = default, bo = default;
                        sbyte* tg = tab + g * kgPerGroup * 16;
                        for (int p0 = 0; p0 < pairs; p0 += PairsPerFlush)
                        {
                            Vector256<short> accA = default, accB = default;
                            int pEnd = Math.Min(pairs, p0 + PairsPerFlush);
                            for (int p = p0; p < pEnd; p++)
                            {
                                Vector256<sbyte> tLo = X86Avx2.BroadcastVector128ToVector256(tg + p * 32);   // vbroadcasti128
                                Vector256<sbyte> tHi = X86Avx2.BroadcastVector128ToVector256(tg + p * 32 + 16);
                                Plane256(wp, tLo, tHi, nibble, 1, ref accA, ref accB);
                                if (TB.Bits > 1) Plane256(wp + 64, tLo, tHi, nibble, 2, ref accA, ref accB);
                                if (TB.Bits > 2) Plane256(wp + 128, tLo, tHi, nibble, 4, ref accA, ref accB);
                                if (TB.Bits > 3) Plane256(wp + 192, tLo, tHi, nibble, 8, ref accA, ref accB);
                                wp += TB.Bits * 64;
                            }
                            Vector256<int> a32 = accA.AsInt32(), b32 = accB.AsInt32();
                            ae += X86Avx2.ShiftRightArithmetic(X86Avx2.ShiftLeftLogical(a32, 16), 16);
                            ao += X86Avx2.ShiftRightArithmetic(a32, 16);
                            be += X86Avx2.ShiftRightArithmetic(X86Avx2.ShiftLeftLogical(b32, 16), 16);
                            bo += X86Avx2.ShiftRightArithmetic(b32, 16);
                        }
                        var hl = Vector256.Create(hls[g]);
                        var xg = Vector256.Create(xsum[g]);
                        y0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(ae), Bf16x8(sp) * hl, y0);
                        y1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(ao), Bf16x8(sp + 16) * hl, y1);
                        y2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(be), Bf16x8(sp + 32) * hl, y2);
                        y3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(bo), Bf16x8(sp + 48) * hl, y3);
                        y0 = Vector256.FusedMultiplyAdd(Bf16x8(op), xg, y0);
                        y1 = Vector256.FusedMultiplyAdd(Bf16x8(op + 16), xg, y1);
                        y2 = Vector256.FusedMultiplyAdd(Bf16x8(op + 32), xg, y2);
                        y3 = Vector256.FusedMultiplyAdd(Bf16x8(op + 48), xg, y3);
                        sp += 64;
                        op += 64;
                    }
                    y0.Store(tmp + h * 8); y1.Store(tmp + 16 + h * 8); y2.Store(tmp + 32 + h * 8); y3.Store(tmp + 48 + h * 8);
                }
                StoreTile(ref a, t, j, tmp);
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Plane256(byte* w, Vector256<sbyte> tLo, Vector256<sbyte> tHi, Vector256<byte> nibble, byte weight,
        ref Vector256<short> accA, ref Vector256<short> accB)
    {
        Vector256<byte> v = Vector256.Load(w);
        Vector256<byte> lo = v & nibble;
        Vector256<byte> hi = X86Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble;    // vpsrlw 4
        Vector256<sbyte> rl = X86Avx2.Shuffle(tLo, lo.AsSByte());                              // vpshufb
        Vector256<sbyte> rh = X86Avx2.Shuffle(tHi, hi.AsSByte());
        var wv = Vector256.Create(weight);
        accA += X86Avx2.MultiplyAddAdjacent(wv, X86Avx2.UnpackLow(rl, rh));                   // vpunpcklbw + vpmaddubsw
        accB += X86Avx2.MultiplyAddAdjacent(wv, X86Avx2.UnpackHigh(rl, rh));
    }

    /// <summary>8 bf16 → fp32: vpmovzxwd then vpslld 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Bf16x8(ushort* p) =>
        X86Avx2.ShiftLeftLogical(X86Avx2.ConvertToVector256Int32(System.Runtime.Intrinsics.Vector128.Load(p)), 16).AsSingle();
}
