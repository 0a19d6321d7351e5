namespace Kernels.Quant.Reference;

/// <summary>The scalar oracle for dense GEMM/GEMV: plain loops, double accumulation.</summary>
/// <remarks>
/// Layout as in <see cref="IDenseOps"/>: weights <c>[m, k]</c>, x <c>[n, k]</c>, y <c>[n, m]</c>,
/// <c>y[j, r] = (float)Σ_c (double)w[r, c] · (double)x[j, c]</c>. Summation is in index order, so the result is
/// deterministic; the only rounding is the final conversion to float (and none in the products, which are exact in double).
/// </remarks>
public static class DenseReference
{
    /// <summary>Dense GEMM with fp32 weights.</summary>
    /// <param name="weights"><c>m·k</c> weights, row-major.</param>
    /// <param name="x"><c>n·k</c> activations, one row per vector.</param>
    /// <param name="y"><c>n·m</c> outputs.</param>
    /// <param name="m">Output features.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="n">Number of activation vectors.</param>
    /// <exception cref="ArgumentException">A buffer is shorter than the sizes require.</exception>
    public static void Gemm(ReadOnlySpan<float> weights, ReadOnlySpan<float> x, Span<float> y, int m, int k, int n)
    {
        Validate(weights.Length, x.Length, y.Length, m, k, n);
        for (int j = 0; j < n; j++)
        {
            ReadOnlySpan<float> xj = x.Slice(j * k, k);
            for (int r = 0; r < m; r++)
            {
                ReadOnlySpan<float> wr = weights.Slice(r * k, k);
                double acc = 0;
                for (int c = 0; c < k; c++) acc += (double)wr[c] * xj[c];
                y[j * m + r] = (float)acc;
            }
        }
    }

    /// <summary>Dense GEMM with bf16 weights (each converted exactly to float).</summary>
    /// <param name="weights"><c>m·k</c> weights, row-major.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs.</param>
    /// <param name="m">Output features.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="n">Number of activation vectors.</param>
    /// <exception cref="ArgumentException">A buffer is shorter than the sizes require.</exception>
    public static void Gemm(ReadOnlySpan<BFloat16> weights, ReadOnlySpan<float> x, Span<float> y, int m, int k, int n)
    {
        Validate(weights.Length, x.Length, y.Length, m, k, n);
        for (int j = 0; j < n; j++)
        {
            ReadOnlySpan<float> xj = x.Slice(j * k, k);
            for (int r = 0; r < m; r++)
            {
                ReadOnlySpan<BFloat16> wr = weights.Slice(r * k, k);
                double acc = 0;
                for (int c = 0; c < k; c++) acc += (double)(float)wr[c] * xj[c];
                y[j * m + r] = (float)acc;
            }
        }
    }

    /// <summary>The sum of magnitudes <c>Σ_c |w[r,c]·x[j,c]|</c> per output: the scale of a dot product's rounding error.</summary>
    /// <param name="weights">Weights as float, <c>m·k</c>.</param>
    /// <param name="x">Activations, <c>n·k</c>.</param>
    /// <param name="magnitudes">Output, <c>n·m</c>.</param>
    /// <param name="m">Output features.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="n">Number of activation vectors.</param>
    public static void AbsGemm(ReadOnlySpan<float> weights, ReadOnlySpan<float> x, Span<double> magnitudes, int m, int k, int n)
    {
        Validate(weights.Length, x.Length, magnitudes.Length, m, k, n);
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
            {
                double acc = 0;
                for (int c = 0; c < k; c++) acc += Math.Abs((double)weights[r * k + c] * x[j * k + c]);
                magnitudes[j * m + r] = acc;
            }
    }

    private static void Validate(int wLen, int xLen, int yLen, int m, int k, int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ThrowHelper.ThrowIfTooShort("weights", wLen, (long)m * k);
        ThrowHelper.ThrowIfTooShort("x", xLen, (long)n * k);
        ThrowHelper.ThrowIfTooShort("y", yLen, (long)n * m);
    }
}
