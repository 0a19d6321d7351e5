namespace Kernels.Quant.Reference;

/// <summary>Compares kernel outputs with the oracle under an explicit error bound.</summary>
/// <remarks>
/// The bound per element is <c>|e − a| ≤ absTol + relTol · scale[i]</c>, where <c>scale</c> is the magnitude the rounding
/// error is proportional to (for a dot product, <c>Σ|w·x|</c>; for a conversion, <c>|e|</c>). NaN must match NaN, and ±Inf must
/// match exactly. This is what the tests, the probe and the benchmark's verify step all use.
/// </remarks>
public static class ResultComparer
{
    /// <summary>Compares element by element.</summary>
    /// <param name="expected">The oracle's output.</param>
    /// <param name="actual">The kernel's output.</param>
    /// <param name="scale">Per-element error scale (same length), or empty to use <c>|expected|</c>.</param>
    /// <param name="relTol">Relative tolerance applied to the scale.</param>
    /// <param name="absTol">Absolute tolerance.</param>
    /// <returns>The comparison.</returns>
    /// <exception cref="ArgumentException">Lengths differ.</exception>
    public static ComparisonResult Compare(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, ReadOnlySpan<double> scale, double relTol, double absTol = 0)
    {
        ThrowHelper.ThrowIfLengthMismatch(nameof(actual), actual.Length, expected.Length);
        if (!scale.IsEmpty) ThrowHelper.ThrowIfLengthMismatch(nameof(scale), scale.Length, expected.Length);
        int failures = 0, worst = -1;
        double worstRatio = 0, num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            double ratio;
            if (double.IsNaN(e) || double.IsNaN(a) || double.IsInfinity(e) || double.IsInfinity(a))
            {
                bool same = (double.IsNaN(e) && double.IsNaN(a)) || e.Equals(a);
                ratio = same ? 0 : double.PositiveInfinity;
            }
            else
            {
                double s = scale.IsEmpty ? Math.Abs(e) : scale[i];
                double bound = absTol + relTol * s;
                double err = Math.Abs(e - a);
                ratio = err == 0 ? 0 : bound == 0 ? double.PositiveInfinity : err / bound;
                num += (e - a) * (e - a);
                den += e * e;
            }
            if (ratio > 1) failures++;
            if (ratio > worstRatio || worst < 0)
            {
                worstRatio = ratio;
                worst = i;
            }
        }
        double nmse = den == 0 ? (num == 0 ? 0 : double.PositiveInfinity) : num / den;
        return worst < 0
            ? new ComparisonResult(0, 0, -1, 0, 0, 0, 0)
            : new ComparisonResult(expected.Length, failures, worst, expected[worst], actual[worst], worstRatio, nmse);
    }

    /// <summary>The relative tolerance of an fp32 dot product of length <paramref name="k"/> against <c>Σ|w·x|</c>:
    /// <c>1.01·k·2⁻²⁴</c> (the γ_k bound of recursive summation, which also covers pairwise and lane-split orders).</summary>
    /// <param name="k">Reduction length.</param>
    /// <returns>The relative tolerance.</returns>
    public static double DotTolerance(int k) => 1.01 * Math.Max(k, 1) * Math.ScaleB(1.0, -24) + Math.ScaleB(1.0, -24);

    /// <summary>The absolute error an fp32 dot product of length <paramref name="k"/> can add by underflow, which the relative
    /// bound of <see cref="DotTolerance"/> does not cover when <c>Σ|w·x|</c> is itself subnormal: half the smallest subnormal
    /// (2⁻¹⁵⁰) per rounding, for k products and sums plus a lane reduction. Pass it as <c>absTol</c> with
    /// <see cref="DotTolerance"/>. (Without it, two subnormal products that cancel gave −2⁻¹⁴⁹ against the oracle's −0 in one
    /// case of about 20,000 random edge-value GEMMs.)</summary>
    /// <param name="k">Reduction length.</param>
    /// <returns>The absolute tolerance.</returns>
    public static double DotUnderflow(int k) => (Math.Max(k, 0) + 16) * Math.ScaleB(1.0, -150);
}
