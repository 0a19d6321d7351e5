using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Quant.Lut;

namespace Kernels.Cpu.Lut;

/// <summary>Builds the per-vector activation tables of <see cref="LutGemm"/> (the definition is <see cref="LutTable"/>).</summary>
/// <remarks>
/// The 256-bit path computes all 16 entries of a 4-group as <c>((x0·σ0 + x1·σ1) + x2·σ2) + x3·σ3</c> with <c>σ = ±1</c>
/// constant vectors: products by ±1 are exact, so every entry (and its mirror <c>T[15 − idx] = −T[idx]</c>) is bit-identical
/// to <see cref="LutTable.Build"/>, and rounding (<c>vroundps</c>, nearest-even) matches <see cref="LutTable.Quantize"/>.
/// Tables are therefore the same on every ISA path.
/// </remarks>
internal static unsafe class LutTableBuilder
{
    public static void Build(ref LutGemm.LutArgs a, int j, int g0, int g1)
    {
        int gs = a.GroupSize, kgPerGroup = gs / 4;
        float* xj = a.X + (long)j * a.K;
        for (int g = g0; g < g1; g++)
        {
            float* xg = xj + g * gs;
            long kg0 = (long)j * (a.K / 4) + g * kgPerGroup;
            float scale, sum;
            if (a.Exact)
            {
                float* t = (float*)a.Tables + kg0 * 16;
                sum = 0;
                for (int q = 0; q < kgPerGroup; q++)
                {
                    LutTable.Build(xg[4 * q], xg[4 * q + 1], xg[4 * q + 2], xg[4 * q + 3], new Span<float>(t + q * 16, 16));
                    sum += t[q * 16 + 15];
                }
                a.GroupSum[j * a.Groups + g] = sum;
                continue;
            }
            sbyte* tq = (sbyte*)a.Tables + kg0 * 16;
            if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) Int8Vector512(xg, tq, kgPerGroup, out scale, out sum);
            else if (Vector256.IsHardwareAccelerated) Int8Vector256(xg, tq, kgPerGroup, out scale, out sum);
            else Int8Scalar(xg, tq, kgPerGroup, out scale, out sum);
            a.HalfLutScale[j * a.Groups + g] = 0.5f * scale;
            a.GroupSum[j * a.Groups + g] = sum;
        }
    }

    /// <summary>One group: its scale (<see cref="LutTable.Int8Scale"/>), sum (<see cref="LutTable.GroupSum"/>) and int8 tables.</summary>
    internal static void Int8Scalar(float* x, sbyte* table, int fourGroups, out float scale, out float sum)
    {
        Span<float> t = stackalloc float[16];
        float max = 0;
        sum = 0;
        for (int q = 0; q < fourGroups; q++)
        {
            LutTable.Build(x[4 * q], x[4 * q + 1], x[4 * q + 2], x[4 * q + 3], t);
            sum += t[15];
            for (int e = 0; e < 16; e++) max = Math.Max(max, Math.Abs(t[e]));
        }
        scale = max / 127f;
        float inv = LutTable.InverseScale(scale);
        bool divide = float.IsInfinity(inv); // scale < 2^-128 (tiny activations): 1/scale overflows, divide instead
        for (int q = 0; q < fourGroups; q++)
        {
            LutTable.Build(x[4 * q], x[4 * q + 1], x[4 * q + 2], x[4 * q + 3], t);
            for (int e = 0; e < 16; e++) table[q * 16 + e] = divide ? LutTable.QuantizeByDivision(t[e], scale) : LutTable.Quantize(t[e], inv);
        }
    }

    /// <summary>The same as <see cref="Int8Scalar"/>, 8 entries per vector: a first pass for the max |T| and the sum of
    /// <c>T[15]</c> (lane 7 of the upper vector), a second to quantize.</summary>
    [SkipLocalsInit]
    internal static void Int8Vector256(float* x, sbyte* table, int fourGroups, out float scale, out float sum)
    {
        // Sign patterns: entry e uses +x_j when bit j of e is set. Lanes 0..7 are entries 0..7, the upper vector 8..15.
        var s0 = Vector256.Create(-1f, 1, -1, 1, -1, 1, -1, 1);
        var s1 = Vector256.Create(-1f, -1, 1, 1, -1, -1, 1, 1);
        var s2 = Vector256.Create(-1f, -1, -1, -1, 1, 1, 1, 1);
        Vector256<float> maxv = default, sumv = default;
        for (int q = 0; q < fourGroups; q++)
        {
            Entries(x + 4 * q, s0, s1, s2, out var lo, out var hi);
            maxv = Vector256.Max(maxv, Vector256.Max(Vector256.Abs(lo), Vector256.Abs(hi)));
            sumv += hi;                                            // lane 7: Σ T[15] in 4-group order
        }
        float max = 0;
        for (int l = 0; l < 8; l++) max = Math.Max(max, maxv.GetElement(l));
        scale = max / 127f;
        sum = sumv.GetElement(7);
        float invScalar = LutTable.InverseScale(scale);
        var inv = Vector256.Create(invScalar);
        var lim = Vector256.Create(127f);
        bool divide = float.IsInfinity(invScalar); // see Int8Scalar
        var sv = Vector256.Create(scale);
        for (int q = 0; q < fourGroups; q++)
        {
            Entries(x + 4 * q, s0, s1, s2, out var lo, out var hi);
            Vector256<float> vlo = divide ? lo / sv : lo * inv, vhi = divide ? hi / sv : hi * inv;
            Vector256<int> qlo = Vector256.ConvertToInt32(Vector256.Clamp(Vector256.Round(vlo), -lim, lim));
            Vector256<int> qhi = Vector256.ConvertToInt32(Vector256.Clamp(Vector256.Round(vhi), -lim, lim));
            Vector256<short> s16 = Vector256.Narrow(qlo, qhi);
            Vector128.Narrow(s16.GetLower(), s16.GetUpper()).Store(table + q * 16);
        }
    }

    /// <summary>The same as <see cref="Int8Scalar"/> with all 16 entries in one vector: <c>x0·σ0</c> then three FMAs with
    /// ±1 (each product is exact, so every FMA rounds exactly like the scalar add), <c>vcvtps2dq</c> after rounding, and
    /// <c>vpmovsdb</c> to bytes.</summary>
    [SkipLocalsInit]
    internal static void Int8Vector512(float* x, sbyte* table, int fourGroups, out float scale, out float sum)
    {
        Debug.Assert(Avx512F.IsSupported);
        var s0 = Vector512.Create(-1f, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1);
        var s1 = Vector512.Create(-1f, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1);
        var s2 = Vector512.Create(-1f, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1);
        var s3 = Vector512.Create(-1f, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1, 1);
        Vector512<float> maxv = default, sumv = default;
        for (int q = 0; q < fourGroups; q++)
        {
            Vector512<float> t = Entries512(x + 4 * q, s0, s1, s2, s3);
            maxv = Vector512.Max(maxv, Vector512.Abs(t));
            sumv += t;                                             // lane 15: Σ T[15] in 4-group order
        }
        float max = 0;
        for (int l = 0; l < 16; l++) max = Math.Max(max, maxv.GetElement(l));
        scale = max / 127f;
        sum = sumv.GetElement(15);
        float invScalar = LutTable.InverseScale(scale);
        var inv = Vector512.Create(invScalar);
        if (float.IsInfinity(invScalar))
        {
            // See Int8Scalar: divide, and clamp (a subnormal scale is rounded, so |T/scale| may pass 127.5).
            var sv = Vector512.Create(scale);
            var lim = Vector512.Create(127f);
            for (int q = 0; q < fourGroups; q++)
            {
                Vector512<int> qd = Vector512.ConvertToInt32(Vector512.Clamp(Vector512.Round(Entries512(x + 4 * q, s0, s1, s2, s3) / sv), -lim, lim));
                Avx512F.ConvertToVector128SByteWithSaturation(qd).Store(table + q * 16);
            }
            return;
        }
        for (int q = 0; q < fourGroups; q++)
        {
            Vector512<int> qi = Vector512.ConvertToInt32(Vector512.Round(Entries512(x + 4 * q, s0, s1, s2, s3) * inv));
            Avx512F.ConvertToVector128SByteWithSaturation(qi).Store(table + q * 16);  // vpmovsdb (|qi| ≤ 127 already)
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Entries512(float* xq, Vector512<float> s0, Vector512<float> s1, Vector512<float> s2, Vector512<float> s3)
    {
        Vector512<float> v = Vector512.Create(xq[0]) * s0;
        v = Vector512.FusedMultiplyAdd(Vector512.Create(xq[1]), s1, v);
        v = Vector512.FusedMultiplyAdd(Vector512.Create(xq[2]), s2, v);
        return Vector512.FusedMultiplyAdd(Vector512.Create(xq[3]), s3, v);
    }

    /// <summary>The 16 fp32 entries of one 4-group as <c>((x0·σ0 + x1·σ1) + x2·σ2) ± x3</c> (bit-identical to <see cref="LutTable.Build"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Entries(float* xq, Vector256<float> s0, Vector256<float> s1, Vector256<float> s2, out Vector256<float> lo, out Vector256<float> hi)
    {
        Vector256<float> v = Vector256.Create(xq[0]) * s0 + Vector256.Create(xq[1]) * s1;
        v += Vector256.Create(xq[2]) * s2;
        var x3 = Vector256.Create(xq[3]);
        hi = v + x3;   // bit 3 set
        lo = v - x3;   // bit 3 clear
    }
}
