using Kernels.Quant.Lut;

namespace Kernels.Quant.Reference;

/// <summary>The scalar oracle for LUT-GEMM formats: dequantize on the logical layout and multiply in double.</summary>
/// <remarks>
/// <c>w[r, c] = s[r, g]·(q[r, c] − c₀) + o[r, g]</c> (see <see cref="LutFormat"/>), <c>y[j, r] = (float)Σ_c w[r, c]·x[j, c]</c>
/// accumulated in double in index order. Also provides the error scales the fast kernels are tested against.
/// </remarks>
public static class LutReference
{
    /// <summary>One weight's value in double.</summary>
    /// <param name="w">Matrix.</param>
    /// <param name="r">Row.</param>
    /// <param name="c">Column.</param>
    /// <returns><c>s·(q − c₀) + o</c>.</returns>
    public static double Weight(LutQuantizedMatrix w, int r, int c)
    {
        ArgumentNullException.ThrowIfNull(w);
        if ((uint)r >= (uint)w.M) throw new ArgumentOutOfRangeException(nameof(r), r, $"row {r} is outside [0, {w.M}).");
        if ((uint)c >= (uint)w.K) throw new ArgumentOutOfRangeException(nameof(c), c, $"column {c} is outside [0, {w.K}).");
        long gi = (long)r * w.GroupsPerRow + c / w.Format.GroupSize;
        return (double)(float)w.Scales[gi] * (w.Codes[(long)r * w.K + c] - w.Format.Center) + (float)w.Offsets[gi];
    }

    /// <summary>Dequantizes to fp32 (each weight rounded once from its exact double value).</summary>
    /// <param name="w">Matrix.</param>
    /// <returns><c>m·k</c> weights, row-major.</returns>
    public static float[] Dequantize(LutQuantizedMatrix w)
    {
        ArgumentNullException.ThrowIfNull(w);
        var result = new float[(long)w.M * w.K];
        for (int r = 0; r < w.M; r++)
            for (int c = 0; c < w.K; c++) result[(long)r * w.K + c] = (float)Weight(w, r, c);
        return result;
    }

    /// <summary>GEMM in double: <c>y[j, r] = Σ_c w[r, c]·x[j, c]</c>.</summary>
    /// <param name="w">Matrix <c>[m, k]</c>.</param>
    /// <param name="x">Activations <c>[n, k]</c>.</param>
    /// <param name="y">Output <c>[n, m]</c>.</param>
    /// <param name="n">Activation vectors.</param>
    /// <exception cref="ArgumentException">A length mismatch.</exception>
    public static void Gemm(LutQuantizedMatrix w, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        ArgumentNullException.ThrowIfNull(w);
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * w.K);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * w.M);
        for (int j = 0; j < n; j++)
            for (int r = 0; r < w.M; r++) y[j * w.M + r] = (float)Dot(w, r, x.Slice(j * w.K, w.K));
    }

    /// <summary>One output in double.</summary>
    /// <param name="w">Matrix.</param>
    /// <param name="r">Row.</param>
    /// <param name="x">One activation vector of length k.</param>
    /// <returns><c>Σ_c w[r, c]·x[c]</c>.</returns>
    public static double Dot(LutQuantizedMatrix w, int r, ReadOnlySpan<float> x)
    {
        CheckRow(w, r, x.Length);
        double acc = 0;
        for (int c = 0; c < w.K; c++) acc += Weight(w, r, c) * x[c];
        return acc;
    }

    /// <summary>The magnitude the fp32 rounding error of a LUT kernel is proportional to:
    /// <c>Σ_g (|s|·c₀ + |o|)·Σ_{c∈g} |x_c|</c> (tables sum activations with signs before the scale is applied).</summary>
    /// <param name="w">Matrix.</param>
    /// <param name="r">Row.</param>
    /// <param name="x">One activation vector.</param>
    /// <returns>The scale; multiply by <c>ResultComparer.DotTolerance(k)</c> for a bound.</returns>
    public static double RoundingScale(LutQuantizedMatrix w, int r, ReadOnlySpan<float> x)
    {
        CheckRow(w, r, x.Length);
        int gs = w.Format.GroupSize;
        double acc = 0;
        for (int g = 0; g < w.GroupsPerRow; g++)
        {
            double sx = 0;
            for (int c = g * gs; c < (g + 1) * gs; c++) sx += Math.Abs(x[c]);
            long gi = (long)r * w.GroupsPerRow + g;
            acc += (Math.Abs((float)w.Scales[gi]) * w.Format.Center + Math.Abs((float)w.Offsets[gi])) * sx;
        }
        return acc;
    }

    /// <summary>The error bound of the int8-table mode for one output, from table quantization alone.</summary>
    /// <param name="w">Matrix.</param>
    /// <param name="r">Row.</param>
    /// <param name="x">One activation vector.</param>
    /// <returns><c>Σ_g |s[r,g]| · Σ_i 2^(i−1) · (G/4) · lutScale_g/2 = Σ_g |s[r,g]| · (2^b − 1) · G/16 · lutScale_g</c>.</returns>
    /// <remarks>Each lookup is off by at most <c>lutScale_g/2</c>; plane <c>i</c> weighs its G/4 lookups by <c>2^(i−1)·s</c>.</remarks>
    public static double Int8TableErrorBound(LutQuantizedMatrix w, int r, ReadOnlySpan<float> x)
    {
        CheckRow(w, r, x.Length);
        int gs = w.Format.GroupSize;
        double acc = 0;
        for (int g = 0; g < w.GroupsPerRow; g++)
        {
            double lutScale = LutTable.Int8Scale(x.Slice(g * gs, gs));
            acc += Math.Abs((float)w.Scales[(long)r * w.GroupsPerRow + g]) * w.Format.MaxCode * (gs / 16.0) * lutScale;
        }
        return acc;
    }

    private static void CheckRow(LutQuantizedMatrix w, int r, int xLength)
    {
        ArgumentNullException.ThrowIfNull(w);
        if ((uint)r >= (uint)w.M) throw new ArgumentOutOfRangeException(nameof(r), r, $"row {r} is outside [0, {w.M}).");
        ThrowHelper.ThrowIfLengthMismatch("x", xLength, w.K);
    }
}
