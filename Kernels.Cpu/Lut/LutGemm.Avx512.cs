using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Lut;

/// <summary>The plane count as a JIT-time constant, so the per-plane steps unroll.</summary>
internal interface IPlaneCount
{
    static abstract int Bits { get; }
}

internal struct Planes1 : IPlaneCount { public static int Bits => 1; }
internal struct Planes2 : IPlaneCount { public static int Bits => 2; }
internal struct Planes3 : IPlaneCount { public static int Bits => 3; }
internal struct Planes4 : IPlaneCount { public static int Bits => 4; }

public static unsafe partial class LutGemm
{
    /// <summary>Column pairs summed in int16 before widening: 8 pairs × 254·(2^b − 1) ≤ 30,480 &lt; 32,767 for b ≤ 4.</summary>
    internal const int PairsPerFlush = 8;

    /// <summary>The AVX-512BW int8-table path over tiles <c>[tileStart, tileStart + tileCount)</c>.</summary>
    [SkipLocalsInit]
    internal static void Avx512(ref LutArgs a, int tileStart, int tileCount)
    {
        Debug.Assert(Avx512BW.IsSupported);
        switch (a.Bits)
        {
            case 1: Avx512<Planes1>(ref a, tileStart, tileCount); break;
            case 2: Avx512<Planes2>(ref a, tileStart, tileCount); break;
            case 3: Avx512<Planes3>(ref a, tileStart, tileCount); break;
            default: Avx512<Planes4>(ref a, tileStart, tileCount); break;
        }
    }

    [SkipLocalsInit]
    private static void Avx512<TB>(ref LutArgs a, int tileStart, int tileCount) where TB : struct, IPlaneCount
    {
        int pairs = a.GroupSize / 8, groups = a.Groups, kgPerGroup = a.GroupSize / 4;
        long tileBytes = (long)groups * pairs * TB.Bits * 64;
        var nibble = Vector512.Create((byte)0x0F);
        float* tmp = stackalloc float[64];
        for (int t = tileStart; t < tileStart + tileCount; t++)
            for (int j = 0; j < a.N; j++)
            {
                sbyte* tab = (sbyte*)a.Tables + (long)j * (a.K / 4) * 16;
                float* hls = a.HalfLutScale + j * groups, xsum = a.GroupSum + j * groups;
                byte* wp = a.Planes + t * tileBytes;
                ushort* sp = a.Scales + (long)t * groups * 64, op = a.Offsets + (long)t * groups * 64;
                Vector512<float> y0 = default, y1 = default, y2 = default, y3 = default;
                for (int g = 0; g < groups; g++)
                {
                    // int32 sums: A even/odd int16 lanes = rows 0–15 / 16–31, B even/odd = rows 32–47 / 48–63.
                    Vector512<int> ae = default, ao = default, be = default, bo = default;
                    sbyte* tg = tab + g * kgPerGroup * 16;
                    for (int p0 = 0; p0 < pairs; p0 += PairsPerFlush)
                    {
                        Vector512<short> accA = default, accB = default;
                        int pEnd = Math.Min(pairs, p0 + PairsPerFlush);
                        for (int p = p0; p < pEnd; p++)
                        {
                            // vbroadcasti32x4: the 16-entry tables of 4-groups 2p and 2p+1 in every 128-bit lane.
                            Vector512<sbyte> tLo = Avx512F.BroadcastVector128ToVector512((int*)(tg + p * 32)).AsSByte();
                            Vector512<sbyte> tHi = Avx512F.BroadcastVector128ToVector512((int*)(tg + p * 32 + 16)).AsSByte();
                            Plane512(wp, tLo, tHi, nibble, 1, ref accA, ref accB);
                            if (TB.Bits > 1) Plane512(wp + 64, tLo, tHi, nibble, 2, ref accA, ref accB);
                            if (TB.Bits > 2) Plane512(wp + 128, tLo, tHi, nibble, 4, ref accA, ref accB);
                            if (TB.Bits > 3) Plane512(wp + 192, tLo, tHi, nibble, 8, ref accA, ref accB);
                            wp += TB.Bits * 64;
                        }
                        // Widen int16 → int32 within each 32-bit lane: even lanes by vpslld 16 + vpsrad 16, odd by vpsrad 16.
                        Vector512<int> a32 = accA.AsInt32(), b32 = accB.AsInt32();
                        ae += Avx512F.ShiftRightArithmetic(Avx512F.ShiftLeftLogical(a32, 16), 16);
                        ao += Avx512F.ShiftRightArithmetic(a32, 16);
                        be += Avx512F.ShiftRightArithmetic(Avx512F.ShiftLeftLogical(b32, 16), 16);
                        bo += Avx512F.ShiftRightArithmetic(b32, 16);
                    }
                    // Epilogue once per group: y = fma(float(sum), s·½lutScale, y); y = fma(o, X_g, y).
                    var hl = Vector512.Create(hls[g]);
                    var xg = Vector512.Create(xsum[g]);
                    y0 = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(ae), Bf16x16(sp) * hl, y0);
                    y1 = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(ao), Bf16x16(sp + 16) * hl, y1);
                    y2 = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(be), Bf16x16(sp + 32) * hl, y2);
                    y3 = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(bo), Bf16x16(sp + 48) * hl, y3);
                    y0 = Vector512.FusedMultiplyAdd(Bf16x16(op), xg, y0);
                    y1 = Vector512.FusedMultiplyAdd(Bf16x16(op + 16), xg, y1);
                    y2 = Vector512.FusedMultiplyAdd(Bf16x16(op + 32), xg, y2);
                    y3 = Vector512.FusedMultiplyAdd(Bf16x16(op + 48), xg, y3);
                    sp += 64;
                    op += 64;
                }
                float* yo = a.Y + (long)j * a.M + t * 64;
                if (t * 64 + 64 <= a.M)
                {
                    y0.Store(yo); y1.Store(yo + 16); y2.Store(yo + 32); y3.Store(yo + 48);
                }
                else
                {
                    y0.Store(tmp); y1.Store(tmp + 16); y2.Store(tmp + 32); y3.Store(tmp + 48);
                    StoreTile(ref a, t, j, tmp);
                }
            }
    }

    /// <summary>One plane of one column pair for 64 rows: 128 lookups, summed pairwise and weighted by 2^i into int16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Plane512(byte* w, Vector512<sbyte> tLo, Vector512<sbyte> tHi, Vector512<byte> nibble, byte weight,
        ref Vector512<short> accA, ref Vector512<short> accB)
    {
        Vector512<byte> v = Vector512.Load(w);
        Vector512<byte> lo = v & nibble;
        Vector512<byte> hi = Avx512BW.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble;   // vpsrlw 4: high nibbles
        Vector512<sbyte> rl = Avx512BW.Shuffle(tLo, lo.AsSByte());                             // vpshufb: T_2p[lo]
        Vector512<sbyte> rh = Avx512BW.Shuffle(tHi, hi.AsSByte());                             // vpshufb: T_2p+1[hi]
        var wv = Vector512.Create(weight);
        accA += Avx512BW.MultiplyAddAdjacent(wv, Avx512BW.UnpackLow(rl, rh));                  // vpunpcklbw + vpmaddubsw
        accB += Avx512BW.MultiplyAddAdjacent(wv, Avx512BW.UnpackHigh(rl, rh));                 // vpunpckhbw + vpmaddubsw
    }

    /// <summary>16 bf16 → fp32: vpmovzxwd then vpslld 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Bf16x16(ushort* p) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Load(p)), 16).AsSingle();
}
