using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Attention;

/// <summary>e^x for softmax arguments (x − max ≤ 0) at each vector width, within 2 ulp; 0 below ln 2⁻¹²⁶ (also for −∞);
/// NaN stays NaN.</summary>
/// <remarks>Cody–Waite reduction <c>x = n·ln2 + r</c>, |r| ≤ ln2/2, with n rounded by the 1.5·2²³ trick (whose low mantissa
/// bits also give 2ⁿ by one shift); e^r by the Cephes <c>expf</c> polynomial (relative error ≈ 1 ulp). About 15 vector
/// instructions inline: <c>Vector512/256/128.Exp</c> cost several times more in the attention inner loop. The 256/128-bit
/// versions use <c>MultiplyAddEstimate</c> (fused where the hardware has FMA), so they also serve Arm64 and non-FMA x64.</remarks>
internal static class SoftmaxExp
{
    private const float Lo = Kernels.Attention.Reference.AttentionReference.SmallestWeightExponent; // ln 2^−126: below it the result would be subnormal; returns 0
    private const float Magic = 12582912f;           // 1.5·2^23
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = -0.693359375f, Ln2Lo = 2.12194440e-4f;
    private const float P0 = 1.9875691500E-4f, P1 = 1.3981999507E-3f, P2 = 8.3334519073E-3f, P3 = 4.1665795894E-2f, P4 = 1.6666665459E-1f, P5 = 5.0000001201E-1f;

    /// <summary>The shift subtracted from a row's logits before <c>Exp</c>: the running maximum, or 0 while it is −∞ (every
    /// logit seen so far is −∞ or masked), so that those lanes give e^(−∞) = 0 rather than e^(−∞ + ∞) = NaN. This keeps a
    /// first tile of −∞ logits (an Inf in K rows) from poisoning a row whose later logits are finite.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Shift(float max) => float.IsNegativeInfinity(max) ? 0f : max;

    /// <summary>A scalar softmax weight <c>e^x</c> (x ≤ 0) under the same rule as the vector <c>Exp</c>: 0 below ln 2⁻¹²⁶, where
    /// <see cref="MathF.Exp"/> would give a subnormal (the oracle flushes there too, so a weight that fp32 cannot hold as a
    /// normal number meets an Inf/NaN V row as 0 on every path); NaN stays NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Weight(float x) => x < Lo ? 0f : MathF.Exp(x);

    /// <summary>AVX-512.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var xc = Avx512F.Max(Vector512.Create(Lo), x);                      // vmaxps returns its second operand (x) when x is NaN
        var t = Avx512F.FusedMultiplyAdd(xc, Vector512.Create(Log2E), Vector512.Create(Magic));
        var n = t - Vector512.Create(Magic);                                // round(x·log2 e)
        var r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(Ln2Hi), xc);
        r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(Ln2Lo), r);
        var p = Avx512F.FusedMultiplyAdd(Vector512.Create(P0), r, Vector512.Create(P1));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(P2));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(P3));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(P4));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(P5));
        p = Avx512F.FusedMultiplyAdd(p, r * r, r) + Vector512<float>.One;
        var scale = ((t.AsInt32() << 23) + Vector512.Create(127 << 23)).AsSingle(); // 2^n
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(Lo)).AsSingle(), Vector512<float>.Zero, p * scale);
    }

    /// <summary>256-bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        var xc = Vector256.MaxNative(Vector256.Create(Lo), x);              // x86 vmaxps / Arm fmax: a NaN x is kept
        var t = Vector256.MultiplyAddEstimate(xc, Vector256.Create(Log2E), Vector256.Create(Magic));
        var n = t - Vector256.Create(Magic);
        var r = Vector256.MultiplyAddEstimate(n, Vector256.Create(Ln2Hi), xc);
        r = Vector256.MultiplyAddEstimate(n, Vector256.Create(Ln2Lo), r);
        var p = Vector256.MultiplyAddEstimate(Vector256.Create(P0), r, Vector256.Create(P1));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(P2));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(P3));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(P4));
        p = Vector256.MultiplyAddEstimate(p, r, Vector256.Create(P5));
        p = Vector256.MultiplyAddEstimate(p, r * r, r) + Vector256<float>.One;
        var scale = ((t.AsInt32() << 23) + Vector256.Create(127 << 23)).AsSingle();
        return Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(Lo)), Vector256<float>.Zero, p * scale);
    }

    /// <summary>128-bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp(Vector128<float> x)
    {
        var xc = Vector128.MaxNative(Vector128.Create(Lo), x);
        var t = Vector128.MultiplyAddEstimate(xc, Vector128.Create(Log2E), Vector128.Create(Magic));
        var n = t - Vector128.Create(Magic);
        var r = Vector128.MultiplyAddEstimate(n, Vector128.Create(Ln2Hi), xc);
        r = Vector128.MultiplyAddEstimate(n, Vector128.Create(Ln2Lo), r);
        var p = Vector128.MultiplyAddEstimate(Vector128.Create(P0), r, Vector128.Create(P1));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P2));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P3));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P4));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P5));
        p = Vector128.MultiplyAddEstimate(p, r * r, r) + Vector128<float>.One;
        var scale = ((t.AsInt32() << 23) + Vector128.Create(127 << 23)).AsSingle();
        return Vector128.ConditionalSelect(Vector128.LessThan(x, Vector128.Create(Lo)), Vector128<float>.Zero, p * scale);
    }
}
