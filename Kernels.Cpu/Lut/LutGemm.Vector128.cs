using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using V128 = System.Runtime.Intrinsics.Vector128;

namespace Kernels.Cpu.Lut;

public static unsafe partial class LutGemm
{
    /// <summary>The 128-bit (SSSE3) int8-table path over tiles <c>[tileStart, tileStart + tileCount)</c>.</summary>
    /// <remarks>Four 16-byte passes per tile (lane L holds rows 4L..4L+3 of each 16-row block). Without SSSE3 (e.g. Arm64)
    /// the dispatcher runs <see cref="Scalar(ref LutArgs, int, int)"/> instead.</remarks>
    [SkipLocalsInit]
    internal static void Vector128(ref LutArgs a, int tileStart, int tileCount)
    {
        Debug.Assert(Ssse3.IsSupported);
        switch (a.Bits)
        {
            case 1: Vector128<Planes1>(ref a, tileStart, tileCount); break;
            case 2: Vector128<Planes2>(ref a, tileStart, tileCount); break;
            case 3: Vector128<Planes3>(ref a, tileStart, tileCount); break;
            default: Vector128<Planes4>(ref a, tileStart, tileCount); break;
        }
    }

    [SkipLocalsInit]
    private static void Vector128<TB>(ref LutArgs a, int tileStart, int tileCount) where TB : struct, IPlaneCount
    {
        int pairs = a.GroupSize / 8, groups = a.Groups, kgPerGroup = a.GroupSize / 4;
        long tileBytes = (long)groups * pairs * TB.Bits * 64;
        var nibble = V128.Create((byte)0x0F);
        float* tmp = stackalloc float[64];
        for (int t = tileStart; t < tileStart + tileCount; t++)
            for (int j = 0; j < a.N; j++)
            {
                sbyte* tab = (sbyte*)a.Tables + (long)j * (a.K / 4) * 16;
                float* hls = a.HalfLutScale + j * groups, xsum = a.GroupSum + j * groups;
                for (int q = 0; q < 4; q++)
                {
                    byte* wp = a.Planes + t * tileBytes + q * 16;
                    ushort* sp = a.Scales + (long)t * groups * 64 + q * 4, op = a.Offsets + (long)t * groups * 64 + q * 4;
                    Vector128<float> y0 = default, y1 = default, y2 = default, y3 = default;
                    for (int g = 0; g < groups; g++)
                    {
                        Vector128<int> ae = default, ao = default, be = default, bo = default;
                        sbyte* tg = tab + g * kgPerGroup * 16;
                        for (int p0 = 0; p0 < pairs; p0 += PairsPerFlush)
                        {
                            Vector128<short> accA = default, accB = default;
                            int pEnd = Math.Min(pairs, p0 + PairsPerFlush);
                            for (int p = p0; p < pEnd; p++)
                            {
                                Vector128<sbyte> tLo = V128.Load(tg + p * 32), tHi = V128.Load(tg + p * 32 + 16);
                                Plane128(wp, tLo, tHi, nibble, 1, ref accA, ref accB);
                                if (TB.Bits > 1) Plane128(wp + 64, tLo, tHi, nibble, 2, ref accA, ref accB);
                                if (TB.Bits > 2) Plane128(wp + 128, tLo, tHi, nibble, 4, ref accA, ref accB);
                                if (TB.Bits > 3) Plane128(wp + 192, tLo, tHi, nibble, 8, ref accA, ref accB);
                                wp += TB.Bits * 64;
                            }
                            Vector128<int> a32 = accA.AsInt32(), b32 = accB.AsInt32();
                            ae += V128.ShiftRightArithmetic(V128.ShiftLeft(a32, 16), 16);
                            ao += V128.ShiftRightArithmetic(a32, 16);
                            be += V128.ShiftRightArithmetic(V128.ShiftLeft(b32, 16), 16);
                            bo += V128.ShiftRightArithmetic(b32, 16);
                        }
                        var hl = V128.Create(hls[g]);
                        var xg = V128.Create(xsum[g]);
                        y0 = V128.FusedMultiplyAdd(V128.ConvertToSingle(ae), Bf16x4(sp) * hl, y0);
                        y1 = V128.FusedMultiplyAdd(V128.ConvertToSingle(ao), Bf16x4(sp + 16) * hl, y1);
                        y2 = V128.FusedMultiplyAdd(V128.ConvertToSingle(be), Bf16x4(sp + 32) * hl, y2);
                        y3 = V128.FusedMultiplyAdd(V128.ConvertToSingle(bo), Bf16x4(sp + 48) * hl, y3);
                        y0 = V128.FusedMultiplyAdd(Bf16x4(op), xg, y0);
                        y1 = V128.FusedMultiplyAdd(Bf16x4(op + 16), xg, y1);
                        y2 = V128.FusedMultiplyAdd(Bf16x4(op + 32), xg, y2);
                        y3 = V128.FusedMultiplyAdd(Bf16x4(op + 48), xg, y3);
                        sp += 64;
                        op += 64;
                    }
                    y0.Store(tmp + q * 4); y1.Store(tmp + 16 + q * 4); y2.Store(tmp + 32 + q * 4); y3.Store(tmp + 48 + q * 4);
                }
                StoreTile(ref a, t, j, tmp);
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Plane128(byte* w, Vector128<sbyte> tLo, Vector128<sbyte> tHi, Vector128<byte> nibble, byte weight,
        ref Vector128<short> accA, ref Vector128<short> accB)
    {
        Vector128<byte> v = V128.Load(w);
        Vector128<byte> lo = v & nibble;
        Vector128<byte> hi = V128.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble;        // psrlw 4
        Vector128<sbyte> rl = Ssse3.Shuffle(tLo, lo.AsSByte());                                // pshufb
        Vector128<sbyte> rh = Ssse3.Shuffle(tHi, hi.AsSByte());
        var wv = V128.Create(weight);
        accA += Ssse3.MultiplyAddAdjacent(wv, Sse2.UnpackLow(rl, rh));                        // punpcklbw + pmaddubsw
        accB += Ssse3.MultiplyAddAdjacent(wv, Sse2.UnpackHigh(rl, rh));
    }

    /// <summary>4 bf16 → fp32 (an 8-byte load, zero-extend, shift left 16); never reads past the 4 values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Bf16x4(ushort* p) =>
        V128.ShiftLeft(V128.WidenLower(V128.CreateScalar(*(ulong*)p).AsUInt16()), 16).AsSingle();
}
