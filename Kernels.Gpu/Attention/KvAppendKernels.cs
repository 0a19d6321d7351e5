using ILGPU;
using ILGPU.Algorithms;

namespace Kernels.Gpu.Attention;

/// <summary>Geometry and format of one K/V append launch.</summary>
internal struct KvAppendArgs
{
    public long PageStride;
    public int Tokens, KvHeads, HeadDim, RowBytes, TokenStride, HeadStride, DType, PerHeadScale;
    public int KScaleOffset, VScaleOffset, KZeroOffset, VZeroOffset;
}

/// <summary>Writes new tokens' K/V rows into a device page pool (FlashInfer's <c>append_paged_kv_cache</c>): one warp per
/// (token, kv head, K or V) row, lane i on elements i, i + 32, … (coalesced reads of the fp32 input), converting or
/// quantizing bit for bit as <c>PagedKvCache.WriteToken</c> does on the host: fp16 and bf16 round to nearest even, fp8 as
/// <c>Float8</c> (saturating), int8 per-token <c>s = max|x|/127</c> and int4 <c>s = (max − min)/15</c> by warp reductions
/// that keep NaN as <c>MathF.Max</c>/<c>MathF.Min</c> do.</summary>
internal static class KvAppendKernels
{
    /// <summary>Rows (warps) per thread group.</summary>
    public const int RowsPerGroup = 4;

    /// <summary>One warp per row: row r = ((token·kv_heads + head)·2 + (0 for K, 1 for V)); <paramref name="targets"/> holds
    /// (page, slot) per token, page −1 for a padding token (not written).</summary>
    public static void Append(ArrayView<float> keys, ArrayView<float> values, ArrayView<byte> k, ArrayView<byte> v, ArrayView<float> scales,
        ArrayView<int> targets, KvAppendArgs a)
    {
        int lane = Group.IdxX % 32;
        long r = (long)Grid.IdxX * RowsPerGroup + Group.IdxX / 32;
        if (r >= (long)a.Tokens * a.KvHeads * 2) return; // whole warps leave together
        bool isV = (r & 1) != 0;
        long th = r >> 1;
        int token = (int)(th / a.KvHeads), head = (int)(th % a.KvHeads), d = a.HeadDim;
        if (targets[2 * token] < 0) return; // a padding token (slot_mapping −1): the whole warp leaves
        long row = targets[2 * token] * a.PageStride + (long)targets[2 * token + 1] * a.TokenStride + (long)head * a.HeadStride;
        var src = isV ? values : keys;
        var dst = isV ? v : k;
        long sb = th * d, db = row * a.RowBytes;
        int scaleOffset = isV ? a.VScaleOffset : a.KScaleOffset, zeroOffset = isV ? a.VZeroOffset : a.KZeroOffset;
        switch (a.DType)
        {
            case 0: // F32
                {
                    var f = dst.Cast<float>();
                    for (int i = lane; i < d; i += 32) f[row * d + i] = src[sb + i];
                    break;
                }
            case 1: // F16
                {
                    var h = dst.Cast<ushort>();
                    for (int i = lane; i < d; i += 32) h[row * d + i] = (ushort)FloatToHalfBits(src[sb + i]);
                    break;
                }
            case 2: // BF16
                {
                    var h = dst.Cast<ushort>();
                    for (int i = lane; i < d; i += 32) h[row * d + i] = (ushort)FloatToBf16Bits(src[sb + i]);
                    break;
                }
            case 3: // I8: per-head scale, or s = max|x|/127 per row
                {
                    float s;
                    if (a.PerHeadScale != 0)
                    {
                        s = scales[scaleOffset + head];
                    }
                    else
                    {
                        float amax = 0;
                        for (int i = lane; i < d; i += 32) amax = MaxNaN(amax, XMath.Abs(src[sb + i]));
                        amax = WarpMaxNaN(amax);
                        s = amax / 127f;
                        if (lane == 0) scales[scaleOffset + row] = s;
                    }
                    for (int i = lane; i < d; i += 32)
                    {
                        float q = s == 0 ? 0 : XMath.RoundToEven(src[sb + i] / s);
                        dst[db + i] = (byte)(sbyte)ToInt(Clamp(q, -127f, 127f));
                    }
                    break;
                }
            case 5: // F8E4M3 (÷ the head's scale, or 1)
            case 6: // F8E5M2
                {
                    float s = a.PerHeadScale != 0 ? scales[scaleOffset + head] : 1f;
                    for (int i = lane; i < d; i += 32)
                    {
                        float x = src[sb + i] / s;
                        dst[db + i] = (byte)(a.DType == 5 ? FloatToE4M3(x) : FloatToE5M2(x));
                    }
                    break;
                }
            default: // I4: s = (max − min)/15, z = clamp(round(−min/s), 0, 15) per row; byte j = element j | element j + d/2 << 4
                {
                    float mn = float.PositiveInfinity, mx = float.NegativeInfinity;
                    for (int i = lane; i < d; i += 32)
                    {
                        mn = MinNaN(mn, src[sb + i]);
                        mx = MaxNaN(mx, src[sb + i]);
                    }
                    mn = WarpMinNaN(mn);
                    mx = WarpMaxNaN(mx);
                    float s = (mx - mn) / 15f;
                    if (!(s > 0))
                    {
                        float m = MaxNaN(XMath.Abs(mn), XMath.Abs(mx));
                        s = m > 0 ? m : 1f;
                    }
                    float z = Clamp(XMath.RoundToEven(-mn / s), 0f, 15f);
                    if (lane == 0)
                    {
                        scales[scaleOffset + row] = s;
                        scales[zeroOffset + row] = z;
                    }
                    int half = d / 2;
                    for (int j = lane; j < half; j += 32)
                    {
                        int lo = ToInt(Clamp(XMath.RoundToEven(src[sb + j] / s) + z, 0f, 15f));
                        int hi = ToInt(Clamp(XMath.RoundToEven(src[sb + j + half] / s) + z, 0f, 15f));
                        dst[db + j] = (byte)(lo | (hi << 4));
                    }
                    break;
                }
        }
    }

    /// <summary><c>Math.Clamp</c>: NaN stays NaN.</summary>
    private static float Clamp(float x, float lo, float hi) => x < lo ? lo : x > hi ? hi : x;

    /// <summary>float → int as .NET converts (saturating; NaN → 0), for values already clamped.</summary>
    private static int ToInt(float x) => float.IsNaN(x) ? 0 : (int)x;

    /// <summary><c>MathF.Max</c>: NaN if either is NaN (PTX <c>max.f32</c> would drop it).</summary>
    private static float MaxNaN(float a, float b) => float.IsNaN(a) || float.IsNaN(b) ? float.NaN : a > b ? a : b == a && a == 0 ? (IsNegative(a) ? b : a) : b;

    /// <summary><c>MathF.Min</c>: NaN if either is NaN; −0 below +0.</summary>
    private static float MinNaN(float a, float b) => float.IsNaN(a) || float.IsNaN(b) ? float.NaN : a < b ? a : b == a && a == 0 ? (IsNegative(a) ? a : b) : b;

    private static bool IsNegative(float x) => (Interop.FloatAsInt(x) & 0x80000000u) != 0;

    private static float WarpMaxNaN(float x)
    {
        for (int o = 16; o > 0; o >>= 1) x = MaxNaN(x, Warp.ShuffleXor(x, o));
        return x;
    }

    private static float WarpMinNaN(float x)
    {
        for (int o = 16; o > 0; o >>= 1) x = MinNaN(x, Warp.ShuffleXor(x, o));
        return x;
    }

    /// <summary>fp32 → fp16 bits, round to nearest even (overflow to ±Inf, NaN quiet with its sign and top payload bits).</summary>
    internal static uint FloatToHalfBits(float x)
    {
        uint f = Interop.FloatAsInt(x), sign = (f >> 16) & 0x8000, abs = f & 0x7FFFFFFF;
        if (abs > 0x7F800000) return sign | 0x7E00 | ((abs >> 13) & 0x3FF);
        if (abs >= 0x477FF000) return sign | 0x7C00;                                   // ≥ 65520 (Inf included): ±Inf
        if (abs < 0x38800000) return sign | (uint)(int)XMath.RoundToEven(Interop.IntAsFloat(abs) * 16777216f); // subnormal: units of 2^-24
        return sign | ((abs + 0xFFF + ((abs >> 13) & 1) - 0x38000000) >> 13);
    }

    /// <summary>fp32 → bf16 bits, round to nearest even (NaN quiet, sign and top payload kept), as <c>BFloat16</c>.</summary>
    internal static uint FloatToBf16Bits(float x)
    {
        uint f = Interop.FloatAsInt(x);
        if ((f & 0x7FFFFFFF) > 0x7F800000) return (f >> 16) | 0x40;
        return (f + 0x7FFF + ((f >> 16) & 1)) >> 16;
    }

    /// <summary>fp32 → fp8 E4M3 code, as <c>Float8.SingleToE4M3</c> (nearest even, saturating to ±448, NaN → NaN).</summary>
    internal static uint FloatToE4M3(float x)
    {
        uint f = Interop.FloatAsInt(x), sign = (f >> 24) & 0x80, abs = f & 0x7FFFFFFF;
        if (abs > 0x7F800000) return sign | 0x7F;
        float m = Interop.IntAsFloat(abs);
        if (m >= 448f) return sign | 0x7E;
        if (m < 0.015625f) return sign | (uint)(int)XMath.RoundToEven(m * 512f); // below 2^-6: units of 2^-9
        uint code = ((abs + 0x7FFFF + ((abs >> 20) & 1)) >> 20) - (120 << 3);
        return sign | XMath.Min(code, 0x7Eu);
    }

    /// <summary>fp32 → fp8 E5M2 code, as <c>Float8.SingleToE5M2</c> (nearest even, saturating to ±57344, NaN → NaN).</summary>
    internal static uint FloatToE5M2(float x)
    {
        uint f = Interop.FloatAsInt(x), sign = (f >> 24) & 0x80, abs = f & 0x7FFFFFFF;
        if (abs > 0x7F800000) return sign | 0x7F;
        float m = Interop.IntAsFloat(abs);
        if (m >= 57344f) return sign | 0x7B;
        if (m < 6.1035156E-05f) return sign | (uint)(int)XMath.RoundToEven(m * 65536f); // below 2^-14: units of 2^-16
        uint code = ((abs + 0xFFFFF + ((abs >> 21) & 1)) >> 21) - (112 << 2);
        return sign | XMath.Min(code, 0x7Bu);
    }
}
