using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Quant.Fpx;

namespace Kernels.Cpu.Fpx;

/// <summary>Which 64-code block format a kernel instantiation decodes (a struct type argument, so the JIT folds the branches).</summary>
internal interface ICodeKind
{
    /// <summary>0 = FP6 e3m2, 1 = FP5 e2m2, 2 = INT6 (offset code u = q + 32).</summary>
    static abstract int Kind { get; }
}

/// <summary>FP6 e3m2 blocks.</summary>
internal struct Fp6Kind : ICodeKind
{
    public static int Kind => 0;
}

/// <summary>FP5 e2m2 blocks.</summary>
internal struct Fp5Kind : ICodeKind
{
    public static int Kind => 1;
}

/// <summary>INT6 blocks.</summary>
internal struct Int6Kind : ICodeKind
{
    public static int Kind => 2;
}

/// <summary>
/// Per-ISA unpacking of one 64-code block (<see cref="FpxPacking"/> layout) into bytes, and of bytes into fp32 vectors.
/// </summary>
/// <remarks>
/// <para>Byte stage: code p ends in byte p as <c>s00eeemm</c> (FP6: sign in bit 7, e2 in bit 4, e1 e0 m1 m0 in bits 3..0),
/// <c>s???eemm</c> (FP5: bits 6..4 are don't-care) or <c>u</c> (INT6, 1..63).</para>
/// <para>Float stage (FP): <c>vpmovsxbd</c> copies the sign into bits 31..8, <c>vpslld 21</c> puts e·m into bits 25..21 (FP6)
/// or 24..21 (FP5) with the sign in bit 31, and one AND (0x83E00000 / 0x81E00000) clears the rest. The fp32 value of that pattern
/// is exactly <c>Decode(code) · 2^−124</c> (FP6) or <c>· 2^−126</c> (FP5): e = 0 codes become fp32 subnormals, which is still exact.
/// The kernels never multiply by 2^124 per element: they pre-scale the activations by a power of two and fold the rest into the
/// row scale (see <see cref="FpxGemm"/>). Float stage (INT6): <c>vpsubb 32</c>, <c>vpmovsxbd</c>, <c>vcvtdq2ps</c>.</para>
/// </remarks>
internal static unsafe class FpxDecode
{
    public const uint Fp6Mask = 0x83E0_0000u, Fp5Mask = 0x81E0_0000u;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint MaskFor<TK>() where TK : struct, ICodeKind => TK.Kind == 0 ? Fp6Mask : Fp5Mask;

    // ---------------------------------------------------------------- AVX-512

    /// <summary>Loop-invariant constants of the AVX-512 decode, created once per kernel call so the JIT keeps them in registers.</summary>
    public readonly struct Consts512
    {
        public readonly Vector512<uint> NibShift, TwoShift, Three;
        public readonly Vector512<ushort> SignShift;
        public readonly Vector512<byte> Lut, Low4;
        public readonly Vector512<int> Mask;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Consts512(uint mask)
        {
            NibShift = Vector512.Create(0u, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
            TwoShift = Vector512.Create(0u, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
            Three = Vector512.Create(0x0303_0303u);
            SignShift = Vector512.Create((ushort)7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
            // (s, e2) → s<<7 | e2<<4, repeated so it serves as a 16-entry vpshufb table per lane and a 64-entry vpermb table
            // indexed by any byte whose low two bits are the field (vpermb ignores bits 7..6, the table ignores bits 5..2).
            Lut = Vector512.Create(
                (byte)0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90,
                0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90,
                0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90,
                0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90, 0x00, 0x10, 0x80, 0x90);
            Low4 = Vector512.Create((byte)0x0F);
            Mask = Vector512.Create((int)mask);
        }
    }

    /// <summary>64 code bytes from one block (AVX-512BW).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<byte> Codes512<TK>(byte* hi, byte* lo, in Consts512 k) where TK : struct, ICodeKind
    {
        Debug.Assert(Avx512BW.IsSupported);
        // vbroadcasti64x4 + vpsrlvd: the 4-bit plane in both halves, shifted by 0 (codes 0..31) and 4 (codes 32..63).
        Vector512<uint> nib = Avx512F.ShiftRightLogicalVariable(Avx512F.BroadcastVector256ToVector512((ulong*)lo).AsUInt32(), k.NibShift);
        Vector512<byte> top;
        if (TK.Kind == 1)
        {
            // vpbroadcastq: byte p = plane[p & 7]; vpsllvw by 7 − p/8 moves code p's sign (bit p/8) to bit 7.
            top = Avx512BW.ShiftLeftLogicalVariable(Vector512.Create(*(ulong*)hi).AsUInt16(), k.SignShift).AsByte();
        }
        else
        {
            // vbroadcasti32x4 + vpsrlvd by 2·lane: the 2-bit field of code p in bits 1..0 of byte p (bits 7..2 hold other fields).
            Vector512<uint> two = Avx512F.ShiftRightLogicalVariable(Avx512F.BroadcastVector128ToVector512((uint*)hi), k.TwoShift);
            if (TK.Kind == 0)
            {
                top = Avx512Vbmi.IsSupported
                    ? Avx512Vbmi.PermuteVar64x8(k.Lut, two.AsByte())                   // vpermb: (s, e2) → s<<7 | e2<<4
                    : Avx512BW.Shuffle(k.Lut, (two & k.Three).AsByte());              // vpandd + vpshufb
            }
            else
            {
                top = Avx512BW.ShiftLeftLogical((two & k.Three).AsUInt16(), 4).AsByte(); // INT6: bits 5..4 of u (field ≤ 3: no spill)
            }
        }
        // vpternlogd 0xE4 = C ? A : B with C = 0x0F: bits 3..0 from the nibbles, bits 7..4 from the top part.
        return Avx512F.TernaryLogic(nib.AsByte(), top, k.Low4, 0xE4);
    }

    /// <summary>Constants of the AVX-512 VBMI byte-interleave decode (<see cref="Patterns512"/>).</summary>
    public readonly struct ConstsVbmi
    {
        public readonly Vector512<uint> NibShift, TwoShift;
        public readonly Vector512<ushort> SignShift;
        public readonly Vector512<byte> LutHigh, LutLow, One, Sign;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ConstsVbmi(int unused)
        {
            NibShift = Vector512.Create(0u, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
            TwoShift = Vector512.Create(0u, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
            SignShift = Vector512.Create((ushort)7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
            // vpermb tables (index bits 5..0). High byte: (s, e2) in index bits 1..0 → s<<7 | e2<<1. Low byte: e0 m1 m0 (index bits 2..0) → bits 7..5.
            LutHigh = Vector512.Create(
                (byte)0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82,
                0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82,
                0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82,
                0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82, 0x00, 0x02, 0x80, 0x82);
            LutLow = Vector512.Create(
                (byte)0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0,
                0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0,
                0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0,
                0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0, 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0);
            One = Vector512.Create((byte)0x01);
            Sign = Vector512.Create((byte)0x80);
            // GF(2) affine matrices (vgf2p8affineqb): output bit i of a byte is the parity of (matrix byte 7 − i) & input byte,
            // with one matrix per qword lane. Qwords 0–3 of the broadcast 4-bit plane hold codes 0–31 (low nibbles), 4–7 codes
            // 32–63 (high nibbles); the 2-bit plane's 128-bit lane ℓ holds codes 16ℓ… in bits 2ℓ+1..2ℓ; the 1-bit plane's qword t
            // holds codes 8t… in bit t.
            Span<ulong> l = stackalloc ulong[8], e = stackalloc ulong[8], h6 = stackalloc ulong[8], h5 = stackalloc ulong[8];
            for (int q = 0; q < 8; q++)
            {
                int off = q < 4 ? 0 : 4, lane = q / 2;
                l[q] = (1ul << (2 + off)) | (1ul << (1 + off)) << 8 | (1ul << off) << 16;  // L bits 7, 6, 5 ← e0, m1, m0
                e[q] = (1ul << (3 + off)) << 56;                                            // H bit 0 ← e1
                h6[q] = (1ul << (2 * lane + 1)) | (1ul << (2 * lane)) << 48;                 // H bit 7 ← s, bit 1 ← e2
                h5[q] = 1ul << q;                                                           // H bit 7 ← s
            }
            MatLow = Vector512.Create<ulong>(l).AsByte();
            MatE1 = Vector512.Create<ulong>(e).AsByte();
            MatHigh6 = Vector512.Create<ulong>(h6).AsByte();
            MatHigh5 = Vector512.Create<ulong>(h5).AsByte();
        }

        /// <summary>GFNI matrices: L from the 4-bit plane, H's e1 bit from the 4-bit plane, H's sign (and FP6 e2) from the high plane.</summary>
        public readonly Vector512<byte> MatLow, MatE1, MatHigh6, MatHigh5;
    }

    /// <summary>
    /// The four fp32 patterns of a block without any per-16 arithmetic (AVX-512 VBMI; FP6/FP5 only). The pattern's top byte is
    /// <c>s00000·e2·e1</c> (H) and its second byte <c>e0·m1·m0·00000</c> (L); bytes 1 and 0 are zero. H and L are built per code
    /// byte, then <c>vpunpck{l,h}bw(L, H)</c> and <c>vpunpck{l,h}wd(0, ·)</c> place them: pattern vector v, lane 4ℓ + t holds code
    /// <c>16ℓ + 4v + t</c> (the unpacks work inside 128-bit lanes), so the caller permutes the activations to match
    /// (<see cref="PermuteForPatterns512"/>). With GFNI, H and L come from three <c>vgf2p8affineqb</c> bit-matrix transforms and one
    /// <c>vpord</c> (10 instructions per 64 weights); without it (<c>DOTNET_EnableGFNI=0</c>, tested in a child process) from shifts and
    /// two <c>vpermb</c> tables (12), instead of 18 for the per-16 shift/mask path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Patterns512<TK>(byte* hi, byte* lo, in ConstsVbmi k,
        out Vector512<float> f0, out Vector512<float> f1, out Vector512<float> f2, out Vector512<float> f3) where TK : struct, ICodeKind
    {
        Debug.Assert(Avx512Vbmi.IsSupported && TK.Kind != 2);
        Vector512<byte> h, l;
        if (Gfni.V512.IsSupported)
        {
            // Three affine transforms and one OR build H and L straight from the planes (no shifts, no byte tables).
            Vector512<byte> src = Avx512F.BroadcastVector256ToVector512((ulong*)lo).AsByte();
            Vector512<byte> two = TK.Kind == 1 ? Vector512.Create(*(ulong*)hi).AsByte() : Avx512F.BroadcastVector128ToVector512((uint*)hi).AsByte();
            l = Gfni.V512.GaloisFieldAffineTransform(src, k.MatLow, 0);
            h = Gfni.V512.GaloisFieldAffineTransform(two, TK.Kind == 1 ? k.MatHigh5 : k.MatHigh6, 0)
                | Gfni.V512.GaloisFieldAffineTransform(src, k.MatE1, 0);
        }
        else
        {
            Bytes<TK>(hi, lo, k, out h, out l);
        }
        Vector512<ushort> w0 = Avx512BW.UnpackLow(l, h).AsUInt16(), w1 = Avx512BW.UnpackHigh(l, h).AsUInt16(); // vpunpck{l,h}bw
        Vector512<ushort> z = Vector512<ushort>.Zero;
        f0 = Avx512BW.UnpackLow(z, w0).AsSingle();                                              // vpunpcklwd: word → bits 31..16
        f1 = Avx512BW.UnpackHigh(z, w0).AsSingle();
        f2 = Avx512BW.UnpackLow(z, w1).AsSingle();
        f3 = Avx512BW.UnpackHigh(z, w1).AsSingle();
    }

    /// <summary>H and L by shifts and <c>vpermb</c> byte tables (AVX-512 VBMI without GFNI).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Bytes<TK>(byte* hi, byte* lo, in ConstsVbmi k, out Vector512<byte> h, out Vector512<byte> l) where TK : struct, ICodeKind
    {
        Vector512<byte> nib = Avx512F.ShiftRightLogicalVariable(Avx512F.BroadcastVector256ToVector512((ulong*)lo).AsUInt32(), k.NibShift).AsByte();
        Vector512<byte> top = TK.Kind == 1
            ? Avx512BW.ShiftLeftLogicalVariable(Vector512.Create(*(ulong*)hi).AsUInt16(), k.SignShift).AsByte() & k.Sign
            : Avx512Vbmi.PermuteVar64x8(k.LutHigh,
                Avx512F.ShiftRightLogicalVariable(Avx512F.BroadcastVector128ToVector512((uint*)hi), k.TwoShift).AsByte());
        // H: bit 0 = e1 (nibble bit 3, via vpsrld 3), bits 7..1 from top; vpternlogd 0xE4 = C ? A : B.
        h = Avx512F.TernaryLogic(Avx512F.ShiftRightLogical(nib.AsUInt32(), 3).AsByte(), top, k.One, 0xE4);
        l = Avx512Vbmi.PermuteVar64x8(k.LutLow, nib);                                          // vpermb: e0 m1 m0 → bits 7..5
    }

    /// <summary>Reorders each 64-float block of <paramref name="x"/> to the lane order of <see cref="Patterns512"/>:
    /// <c>out[16v + 4ℓ + t] = in[16ℓ + 4v + t]</c> (a 4×4 transpose of float quads).</summary>
    public static void PermuteForPatterns512(Span<float> x)
    {
        Span<float> t = stackalloc float[64];
        for (int b = 0; b + 64 <= x.Length; b += 64)
        {
            Span<float> blk = x.Slice(b, 64);
            blk.CopyTo(t);
            for (int v = 0; v < 4; v++)
                for (int l = 0; l < 4; l++)
                    t.Slice(16 * l + 4 * v, 4).CopyTo(blk.Slice(16 * v + 4 * l, 4));
        }
    }

    /// <summary>Float lanes 16q..16q+15 of a decoded block: FP bit patterns, or INT6 q as float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Float512<TK>(Vector128<sbyte> quarter, in Consts512 k) where TK : struct, ICodeKind
    {
        if (TK.Kind == 2)
            return Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(quarter - Vector128.Create((sbyte)Int6Weights.Offset)));
        Vector512<int> v = Avx512F.ConvertToVector512Int32(quarter);       // vpmovsxbd
        return (Avx512F.ShiftLeftLogical(v, 21) & k.Mask).AsSingle();      // vpslld 21, vpandd
    }

    // ---------------------------------------------------------------- AVX2

    /// <summary>Loop-invariant constants of the AVX2 decode.</summary>
    public readonly struct Consts256
    {
        public readonly Vector256<byte> Lut, Low4;
        public readonly Vector256<int> Mask;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Consts256(uint mask)
        {
            Lut = Vector256.Create((byte)0x00, 0x10, 0x80, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0x80, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
            Low4 = Vector256.Create((byte)0x0F);
            Mask = Vector256.Create((int)mask);
        }
    }

    /// <summary>Codes 0..31 (<paramref name="c0"/>) and 32..63 (<paramref name="c1"/>) of one block (AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Codes256<TK>(byte* hi, byte* lo, in Consts256 k, out Vector256<byte> c0, out Vector256<byte> c1) where TK : struct, ICodeKind
    {
        Debug.Assert(Avx2.IsSupported);
        Vector256<byte> l = Vector256.Load(lo);
        Vector256<byte> low4 = k.Low4;
        Vector256<byte> n0 = l & low4, n1 = Avx2.ShiftRightLogical(l.AsUInt32(), 4).AsByte() & low4;
        if (TK.Kind == 1)
        {
            Vector256<uint> s = Vector256.Create(*(ulong*)hi).AsUInt32();
            Vector256<byte> sign = Vector256.Create((byte)0x80);
            // vpsllvd by 7 − p/8: dword d holds bytes 4d..4d+3, which share p/8.
            c0 = n0 | (Avx2.ShiftLeftLogicalVariable(s, Vector256.Create(7u, 7, 6, 6, 5, 5, 4, 4)).AsByte() & sign);
            c1 = n1 | (Avx2.ShiftLeftLogicalVariable(s, Vector256.Create(3u, 3, 2, 2, 1, 1, 0, 0)).AsByte() & sign);
            return;
        }
        Vector256<uint> h = Avx2.BroadcastVector128ToVector256((uint*)hi);
        Vector256<uint> three = Vector256.Create(0x0303_0303u);
        Vector256<byte> t0 = (Avx2.ShiftRightLogicalVariable(h, Vector256.Create(0u, 0, 0, 0, 2, 2, 2, 2)) & three).AsByte();
        Vector256<byte> t1 = (Avx2.ShiftRightLogicalVariable(h, Vector256.Create(4u, 4, 4, 4, 6, 6, 6, 6)) & three).AsByte();
        if (TK.Kind == 0)
        {
            Vector256<byte> lut = k.Lut;
            c0 = n0 | Avx2.Shuffle(lut, t0);   // vpshufb
            c1 = n1 | Avx2.Shuffle(lut, t1);
        }
        else
        {
            c0 = n0 | Avx2.ShiftLeftLogical(t0.AsUInt16(), 4).AsByte();
            c1 = n1 | Avx2.ShiftLeftLogical(t1.AsUInt16(), 4).AsByte();
        }
    }

    /// <summary>8 float lanes from the low 8 bytes of <paramref name="eight"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Float256<TK>(Vector128<sbyte> eight, in Consts256 k) where TK : struct, ICodeKind
    {
        if (TK.Kind == 2)
            return Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(eight - Vector128.Create((sbyte)Int6Weights.Offset)));
        Vector256<int> v = Avx2.ConvertToVector256Int32(eight);                              // vpmovsxbd ymm, xmm
        return (Avx2.ShiftLeftLogical(v, 21) & k.Mask).AsSingle();
    }

    // ---------------------------------------------------------------- Vector128 (portable)

    /// <summary>Codes 16q..16q+15 of one block with portable 128-bit operations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<byte> Codes128<TK>(byte* hi, byte* lo, int q) where TK : struct, ICodeKind
    {
        Vector128<byte> l = Vector128.Load(lo + 16 * (q & 1));
        Vector128<byte> nib = q < 2 ? l & Vector128.Create((byte)0x0F) : Vector128.ShiftRightLogical(l, 4);
        Vector128<byte> top;
        if (TK.Kind == 1)
        {
            // byte i = plane[i & 7]; code 16q + i has its sign in bit 2q + i/8.
            Vector128<byte> b = Vector128.ShiftRightLogical(Vector128.Create(*(ulong*)hi).AsByte(), 2 * q);
            Vector128<byte> bit = Vector128.Create((byte)1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2);
            top = Vector128.Equals(b & bit, bit) & Vector128.Create((byte)0x80);
        }
        else
        {
            Vector128<byte> two = Vector128.ShiftRightLogical(Vector128.Load(hi), 2 * q) & Vector128.Create((byte)3);
            top = TK.Kind == 0
                ? Vector128.ShiftLeft(two & Vector128.Create((byte)2), 6) | Vector128.ShiftLeft(two & Vector128.Create((byte)1), 4)
                : Vector128.ShiftLeft(two, 4);
        }
        return nib | top;
    }

    /// <summary>Writes the 16 float lanes of <paramref name="codes"/> to <paramref name="dst"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Floats128<TK>(Vector128<byte> codes, float* dst) where TK : struct, ICodeKind
    {
        Vector128<sbyte> s = codes.AsSByte();
        if (TK.Kind == 2) s -= Vector128.Create((sbyte)Int6Weights.Offset);
        Vector128<short> lo = Vector128.WidenLower(s), hi = Vector128.WidenUpper(s);
        Store128<TK>(Vector128.WidenLower(lo), dst);
        Store128<TK>(Vector128.WidenUpper(lo), dst + 4);
        Store128<TK>(Vector128.WidenLower(hi), dst + 8);
        Store128<TK>(Vector128.WidenUpper(hi), dst + 12);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store128<TK>(Vector128<int> v, float* dst) where TK : struct, ICodeKind
    {
        if (TK.Kind == 2) Vector128.ConvertToSingle(v).Store(dst);
        else (Vector128.ShiftLeft(v, 21) & Vector128.Create((int)MaskFor<TK>())).AsSingle().Store(dst);
    }

    // ---------------------------------------------------------------- Scalar

    /// <summary>The float lane of code <paramref name="i"/> of a block (the scalar definition every SIMD path matches bit for bit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FloatScalar<TK>(byte* hi, byte* lo, int i) where TK : struct, ICodeKind
    {
        int nib = (lo[i & 31] >> (4 * (i >> 5))) & 15;
        if (TK.Kind == 1)
        {
            int s = (hi[i & 7] >> (i >> 3)) & 1;
            return BitConverter.Int32BitsToSingle((s << 31) | (nib << 21));
        }
        int two = (hi[i & 15] >> (2 * (i >> 4))) & 3;
        if (TK.Kind == 2) return (two << 4 | nib) - Int6Weights.Offset;
        return BitConverter.Int32BitsToSingle((int)((uint)(two >> 1) << 31) | ((two & 1) << 25) | (nib << 21));
    }


    // ---------------------------------------------------------------- whole rows

    /// <summary>Decodes <paramref name="blocks"/> consecutive blocks to float lanes (FP: bit patterns; INT6: q) with the given path.</summary>
    public static void Row<TK>(IsaPath isa, byte* hi, byte* lo, int blocks, float* dst) where TK : struct, ICodeKind
    {
        int hb = TK.Kind == 1 ? 8 : 16;
        switch (isa)
        {
            case IsaPath.Avx512:
                RowAvx512<TK>(hi, lo, blocks, dst, hb);
                break;
            case IsaPath.Avx2:
                RowAvx2<TK>(hi, lo, blocks, dst, hb);
                break;
            case IsaPath.Vector128:
                for (int b = 0; b < blocks; b++, hi += hb, lo += 32, dst += 64)
                    for (int q = 0; q < 4; q++) Floats128<TK>(Codes128<TK>(hi, lo, q), dst + 16 * q);
                break;
            default:
                for (int b = 0; b < blocks; b++, hi += hb, lo += 32, dst += 64)
                    for (int i = 0; i < 64; i++) dst[i] = FloatScalar<TK>(hi, lo, i);
                break;
        }
    }

    /// <summary>Decodes blocks to fp32 patterns in the lane order of <see cref="Patterns512"/> (AVX-512 VBMI; FP6/FP5).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void RowPatterns512<TK>(byte* hi, byte* lo, int blocks, float* dst) where TK : struct, ICodeKind
    {
        var k = new ConstsVbmi(0);
        int hb = TK.Kind == 1 ? 8 : 16;
        for (int b = 0; b < blocks; b++, hi += hb, lo += 32, dst += 64)
        {
            Patterns512<TK>(hi, lo, k, out var f0, out var f1, out var f2, out var f3);
            f0.Store(dst);
            f1.Store(dst + 16);
            f2.Store(dst + 32);
            f3.Store(dst + 48);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RowAvx512<TK>(byte* hi, byte* lo, int blocks, float* dst, int hb) where TK : struct, ICodeKind
    {
        var k = new Consts512(MaskFor<TK>());
        for (int b = 0; b < blocks; b++, hi += hb, lo += 32, dst += 64)
        {
            Vector512<sbyte> c = Codes512<TK>(hi, lo, k).AsSByte();
            Float512<TK>(c.GetLower().GetLower(), k).Store(dst);
            Float512<TK>(c.GetLower().GetUpper(), k).Store(dst + 16);
            Float512<TK>(c.GetUpper().GetLower(), k).Store(dst + 32);
            Float512<TK>(c.GetUpper().GetUpper(), k).Store(dst + 48);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RowAvx2<TK>(byte* hi, byte* lo, int blocks, float* dst, int hb) where TK : struct, ICodeKind
    {
        var k = new Consts256(MaskFor<TK>());
        for (int b = 0; b < blocks; b++, hi += hb, lo += 32, dst += 64)
        {
            Codes256<TK>(hi, lo, k, out var c0, out var c1);
            Store8x4<TK>(c0.AsSByte(), dst, k);
            Store8x4<TK>(c1.AsSByte(), dst + 32, k);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store8x4<TK>(Vector256<sbyte> c, float* dst, in Consts256 k) where TK : struct, ICodeKind
    {
        Vector128<sbyte> a = c.GetLower(), b = c.GetUpper();
        Float256<TK>(a, k).Store(dst);
        Float256<TK>(Sse2.ShiftRightLogical128BitLane(a, 8), k).Store(dst + 8);   // vpsrldq 8: bytes 8..15 down
        Float256<TK>(b, k).Store(dst + 16);
        Float256<TK>(Sse2.ShiftRightLogical128BitLane(b, 8), k).Store(dst + 24);
    }
}
