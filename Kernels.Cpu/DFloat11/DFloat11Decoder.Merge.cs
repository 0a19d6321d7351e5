using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Kernels.Quant.DFloat11;

namespace Kernels.Cpu.DFloat11;

public static unsafe partial class DFloat11Decoder
{
    // Merge: out[i] = (sm[i] & 0x80) << 8 | exp[i] << 7 | (sm[i] & 0x7F), the vectorizable half of the decoder.
    // Each path widens bytes to 16-bit lanes (vpmovzxbw), combines with shifts/ands/ors, and leaves a scalar tail.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Merge(IsaPath isa, byte* exps, byte* sm, ushort* dst, int count)
    {
        switch (isa)
        {
            case IsaPath.Avx512: Avx512(exps, sm, dst, count); break;
            case IsaPath.Avx2: Avx2(exps, sm, dst, count); break;
            case IsaPath.Vector128: Vector128(exps, sm, dst, count); break;
            default: Scalar(exps, sm, dst, count); break;
        }
    }

    /// <summary>The AVX-512 merge: 64 elements per step.</summary>
    [SkipLocalsInit]
    internal static void Avx512(byte* exps, byte* sm, ushort* dst, int count)
    {
        Debug.Assert(Vector512.IsHardwareAccelerated);
        int i = 0;
        var signMask = Vector512.Create((ushort)0x80);
        var mantMask = Vector512.Create((ushort)0x7F);
        for (; i <= count - 64; i += 64)
        {
            var e = Vector512.Load(exps + i);
            var s = Vector512.Load(sm + i);
            var (eLo, eHi) = Vector512.Widen(e);
            var (sLo, sHi) = Vector512.Widen(s);
            (Vector512.ShiftLeft(sLo & signMask, 8) | Vector512.ShiftLeft(eLo, 7) | (sLo & mantMask)).Store(dst + i);
            (Vector512.ShiftLeft(sHi & signMask, 8) | Vector512.ShiftLeft(eHi, 7) | (sHi & mantMask)).Store(dst + i + 32);
        }
        Scalar(exps + i, sm + i, dst + i, count - i);
    }

    /// <summary>The AVX2 merge: 32 elements per step.</summary>
    [SkipLocalsInit]
    internal static void Avx2(byte* exps, byte* sm, ushort* dst, int count)
    {
        Debug.Assert(Vector256.IsHardwareAccelerated);
        int i = 0;
        var signMask = Vector256.Create((ushort)0x80);
        var mantMask = Vector256.Create((ushort)0x7F);
        for (; i <= count - 32; i += 32)
        {
            var (eLo, eHi) = Vector256.Widen(Vector256.Load(exps + i));
            var (sLo, sHi) = Vector256.Widen(Vector256.Load(sm + i));
            (Vector256.ShiftLeft(sLo & signMask, 8) | Vector256.ShiftLeft(eLo, 7) | (sLo & mantMask)).Store(dst + i);
            (Vector256.ShiftLeft(sHi & signMask, 8) | Vector256.ShiftLeft(eHi, 7) | (sHi & mantMask)).Store(dst + i + 16);
        }
        Scalar(exps + i, sm + i, dst + i, count - i);
    }

    /// <summary>The Vector128 merge: 16 elements per step.</summary>
    [SkipLocalsInit]
    internal static void Vector128(byte* exps, byte* sm, ushort* dst, int count)
    {
        Debug.Assert(System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated);
        int i = 0;
        var signMask = System.Runtime.Intrinsics.Vector128.Create((ushort)0x80);
        var mantMask = System.Runtime.Intrinsics.Vector128.Create((ushort)0x7F);
        for (; i <= count - 16; i += 16)
        {
            var (eLo, eHi) = System.Runtime.Intrinsics.Vector128.Widen(System.Runtime.Intrinsics.Vector128.Load(exps + i));
            var (sLo, sHi) = System.Runtime.Intrinsics.Vector128.Widen(System.Runtime.Intrinsics.Vector128.Load(sm + i));
            (System.Runtime.Intrinsics.Vector128.ShiftLeft(sLo & signMask, 8) | System.Runtime.Intrinsics.Vector128.ShiftLeft(eLo, 7) | (sLo & mantMask)).Store(dst + i);
            (System.Runtime.Intrinsics.Vector128.ShiftLeft(sHi & signMask, 8) | System.Runtime.Intrinsics.Vector128.ShiftLeft(eHi, 7) | (sHi & mantMask)).Store(dst + i + 8);
        }
        Scalar(exps + i, sm + i, dst + i, count - i);
    }

    /// <summary>The scalar merge (the reference's formula, <see cref="DFloat11Format.Combine"/>).</summary>
    internal static void Scalar(byte* exps, byte* sm, ushort* dst, int count)
    {
        for (int i = 0; i < count; i++) dst[i] = DFloat11Format.Combine(sm[i], exps[i]);
    }
}
