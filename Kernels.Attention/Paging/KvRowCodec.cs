using System.Runtime.Intrinsics;

namespace Kernels.Attention.Paging;

/// <summary>Encodes one K/V row of fp32 values into a cache format, vectorized (portable <see cref="Vector128{T}"/>, 4
/// lanes, with a scalar tail) and bit for bit equal to the scalar definitions it replaces: <see cref="BFloat16"/>'s
/// rounding, <see cref="Float8"/>'s encoders, and the int8/int4 quantizers' <c>(int)clamp(round(x / s) [+ z])</c>. Rows
/// with NaN (and int rows whose scale is not a positive finite number) take the scalar path, whose NaN rules
/// (<c>Math.Clamp</c> keeps NaN, a NaN code converts to 0) vector min/max would not reproduce.</summary>
internal static class KvRowCodec
{
    /// <summary>bf16: round to nearest even, NaN quiet (sign and top payload kept).</summary>
    public static void ToBf16(ReadOnlySpan<float> x, Span<ushort> dst)
    {
        int i = 0;
        if (Vector128.IsHardwareAccelerated)
        {
            for (; i + 8 <= x.Length; i += 8)
            {
                var lo = Bf16(Vector128.Create(x.Slice(i, 4)).AsUInt32());
                var hi = Bf16(Vector128.Create(x.Slice(i + 4, 4)).AsUInt32());
                Vector128.Narrow(lo, hi).CopyTo(dst.Slice(i, 8));
            }
        }
        for (; i < x.Length; i++) dst[i] = ((BFloat16)x[i]).Bits;
    }

    private static Vector128<uint> Bf16(Vector128<uint> bits)
    {
        var nan = Vector128.GreaterThan(bits & Vector128.Create(0x7FFF_FFFFu), Vector128.Create(0x7F80_0000u));
        var rounded = (bits + Vector128.Create(0x7FFFu) + ((bits >> 16) & Vector128<uint>.One)) >> 16;
        return Vector128.ConditionalSelect(nan, (bits >> 16) | Vector128.Create(0x40u), rounded);
    }

    /// <summary>fp8 (E4M3 or E5M2) of <c>x / scale</c>; returns whether any code is non-finite (NaN, or an E5M2 Inf).</summary>
    public static bool ToFloat8(ReadOnlySpan<float> x, float scale, bool e4m3, Span<byte> dst)
    {
        int i = 0;
        bool special = false;
        if (Vector128.IsHardwareAccelerated)
        {
            var s = Vector128.Create(scale);
            var any = Vector128<uint>.Zero;
            var exp = Vector128.Create(e4m3 ? 0x7Fu : 0x7Cu); // E4M3 NaN is S.1111.111; E5M2 Inf/NaN have exponent 31
            for (; i + 16 <= x.Length; i += 16)
            {
                var c0 = Fp8(Vector128.Create(x.Slice(i, 4)) / s, e4m3);
                var c1 = Fp8(Vector128.Create(x.Slice(i + 4, 4)) / s, e4m3);
                var c2 = Fp8(Vector128.Create(x.Slice(i + 8, 4)) / s, e4m3);
                var c3 = Fp8(Vector128.Create(x.Slice(i + 12, 4)) / s, e4m3);
                any |= Vector128.Equals(c0 & exp, exp) | Vector128.Equals(c1 & exp, exp) | Vector128.Equals(c2 & exp, exp) | Vector128.Equals(c3 & exp, exp);
                Vector128.Narrow(Vector128.Narrow(c0, c1), Vector128.Narrow(c2, c3)).CopyTo(dst.Slice(i, 16));
            }
            special = any != Vector128<uint>.Zero;
        }
        for (; i < x.Length; i++)
        {
            byte c = e4m3 ? Float8.SingleToE4M3(x[i] / scale) : Float8.SingleToE5M2(x[i] / scale);
            dst[i] = c;
            special |= e4m3 ? Float8.IsE4M3NonFinite(c) : Float8.IsE5M2NonFinite(c);
        }
        return special;
    }

    /// <summary>The codes of <see cref="Float8.SingleToE4M3"/> / <see cref="Float8.SingleToE5M2"/>, four lanes at a time.</summary>
    private static Vector128<uint> Fp8(Vector128<float> v, bool e4m3)
    {
        var bits = v.AsUInt32();
        var abs = bits & Vector128.Create(0x7FFF_FFFFu);
        var sign = (bits >> 24) & Vector128.Create(0x80u);
        Vector128<uint> normal, sub, code;
        if (e4m3)
        {
            normal = Vector128.Min(((abs + Vector128.Create(0x7_FFFFu) + ((abs >> 20) & Vector128<uint>.One)) >> 20) - Vector128.Create(120u << 3), Vector128.Create(0x7Eu));
            sub = Vector128.ConvertToInt32(Vector128.Round(abs.AsSingle() * Vector128.Create(512f))).AsUInt32(); // in [0, 8] where selected: the signed conversion is one instruction without AVX-512
            code = Vector128.ConditionalSelect(Vector128.LessThan(abs, Vector128.Create(0x3C80_0000u)), sub, normal);
            code = Vector128.ConditionalSelect(Vector128.GreaterThanOrEqual(abs, Vector128.Create(0x43E0_0000u)), Vector128.Create(0x7Eu), code);
        }
        else
        {
            normal = Vector128.Min(((abs + Vector128.Create(0xF_FFFFu) + ((abs >> 21) & Vector128<uint>.One)) >> 21) - Vector128.Create(112u << 2), Vector128.Create(0x7Bu));
            sub = Vector128.ConvertToInt32(Vector128.Round(abs.AsSingle() * Vector128.Create(65536f))).AsUInt32(); // in [0, 8] where selected: the signed conversion is one instruction without AVX-512
            code = Vector128.ConditionalSelect(Vector128.LessThan(abs, Vector128.Create(0x3880_0000u)), sub, normal);
            code = Vector128.ConditionalSelect(Vector128.GreaterThanOrEqual(abs, Vector128.Create(0x4760_0000u)), Vector128.Create(0x7Bu), code);
        }
        code = Vector128.ConditionalSelect(Vector128.GreaterThan(abs, Vector128.Create(0x7F80_0000u)), Vector128.Create(0x7Fu), code);
        return code | sign;
    }

    /// <summary>int8 codes <c>(sbyte)clamp(round(x / s), −127, 127)</c> (0 where <paramref name="s"/> is 0).</summary>
    public static void ToInt8(ReadOnlySpan<float> x, float s, Span<byte> dst)
    {
        int i = 0;
        if (Vector128.IsHardwareAccelerated && s > 0 && float.IsFinite(s) && !HasNaN(x))
        {
            var sv = Vector128.Create(s);
            var lo = Vector128.Create(-127f);
            var hi = Vector128.Create(127f);
            for (; i + 16 <= x.Length; i += 16)
            {
                var q0 = Vector128.ConvertToInt32(Vector128.Max(Vector128.Min(Vector128.Round(Vector128.Create(x.Slice(i, 4)) / sv), hi), lo));
                var q1 = Vector128.ConvertToInt32(Vector128.Max(Vector128.Min(Vector128.Round(Vector128.Create(x.Slice(i + 4, 4)) / sv), hi), lo));
                var q2 = Vector128.ConvertToInt32(Vector128.Max(Vector128.Min(Vector128.Round(Vector128.Create(x.Slice(i + 8, 4)) / sv), hi), lo));
                var q3 = Vector128.ConvertToInt32(Vector128.Max(Vector128.Min(Vector128.Round(Vector128.Create(x.Slice(i + 12, 4)) / sv), hi), lo));
                Vector128.Narrow(Vector128.Narrow(q0, q1), Vector128.Narrow(q2, q3)).AsByte().CopyTo(dst.Slice(i, 16));
            }
        }
        for (; i < x.Length; i++)
        {
            float q = s == 0 ? 0 : MathF.Round(x[i] / s);
            dst[i] = (byte)(sbyte)Math.Clamp(q, -127f, 127f);
        }
    }

    /// <summary>int4 bytes: element j in the low nibble and element j + half in the high nibble of byte j, each
    /// <c>(int)clamp(round(x / s) + z, 0, 15)</c>.</summary>
    public static void ToInt4(ReadOnlySpan<float> x, float s, float z, Span<byte> dst)
    {
        int half = x.Length / 2, j = 0;
        if (Vector128.IsHardwareAccelerated && s > 0 && float.IsFinite(s) && float.IsFinite(z) && !HasNaN(x))
        {
            var sv = Vector128.Create(s);
            var zv = Vector128.Create(z);
            var top = Vector128.Create(15f);
            for (; j + 8 <= half; j += 8)
            {
                var lo = Narrow4(Nibbles(x.Slice(j, 4), sv, zv, top), Nibbles(x.Slice(j + 4, 4), sv, zv, top));
                var hi = Narrow4(Nibbles(x.Slice(half + j, 4), sv, zv, top), Nibbles(x.Slice(half + j + 4, 4), sv, zv, top));
                var packed = lo | (hi << 4); // 8 lanes, each < 256
                System.Runtime.InteropServices.MemoryMarshal.Write(dst.Slice(j, 8), Vector128.Narrow(packed, packed).AsUInt64().ToScalar());
            }
        }
        for (; j < half; j++)
        {
            int lo = (int)Math.Clamp(MathF.Round(x[j] / s) + z, 0f, 15f);
            int hi = (int)Math.Clamp(MathF.Round(x[j + half] / s) + z, 0f, 15f);
            dst[j] = (byte)(lo | (hi << 4));
        }
    }

    private static Vector128<int> Nibbles(ReadOnlySpan<float> x, Vector128<float> s, Vector128<float> z, Vector128<float> top) =>
        Vector128.ConvertToInt32(Vector128.Max(Vector128.Min(Vector128.Round(Vector128.Create(x) / s) + z, top), Vector128<float>.Zero));

    private static Vector128<ushort> Narrow4(Vector128<int> a, Vector128<int> b) => Vector128.Narrow(a, b).AsUInt16();

    /// <summary>Whether any element is NaN.</summary>
    internal static bool HasNaN(ReadOnlySpan<float> x)
    {
        int i = 0;
        var bad = Vector128<float>.Zero;
        for (; i + 4 <= x.Length; i += 4)
        {
            var v = Vector128.Create(x.Slice(i, 4));
            bad |= ~Vector128.Equals(v, v);
        }
        for (; i < x.Length; i++)
            if (float.IsNaN(x[i])) return true;
        return bad != Vector128<float>.Zero;
    }
}
