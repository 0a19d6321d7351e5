using Kernels.Quant.Fpx;

namespace Kernels.Quant.Reference;

/// <summary>The scalar oracle for FP6/FP5 (per-row scale) and INT6 (per-group scale) weights, on the logical layout.</summary>
/// <remarks>
/// Layout as in <see cref="IDenseOps"/>: x <c>[n, k]</c>, y <c>[n, m]</c>. Everything accumulates in binary64 in index order.
/// <list type="bullet">
/// <item>FP6/FP5: <c>y[j, r] = (float)(scale_r · Σ_c Decode(code[r, c]) · x[j, c])</c>.</item>
/// <item>Dequantize: <c>w[r, c] = (float)(Decode(code) · scale_r)</c>, one rounding (the product of two floats is exact in binary64).</item>
/// <item>INT6 W6A16: <c>y[j, r] = (float)Σ_g scale[r, g] · Σ_{c∈g} q[r, c] · x[j, c]</c>.</item>
/// <item>INT6 W6A8: activations quantized per token (<see cref="QuantizeActivations"/>), then
/// <c>y[j, r] = (float)(xScale_j · Σ_g scale[r, g] · Σ_{c∈g} q[r, c] · xq[j, c])</c>, the inner sums exact integers.</item>
/// </list>
/// </remarks>
public static class FpxReference
{
    /// <summary>Dequantizes FP6/FP5 weights to fp32.</summary>
    /// <param name="weights">The weights.</param>
    /// <param name="destination"><c>rows·columns</c> floats.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has the wrong length.</exception>
    public static void Dequantize(FpxWeights weights, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, (long)weights.Rows * weights.Columns);
        for (int r = 0; r < weights.Rows; r++)
            for (int c = 0; c < weights.Columns; c++)
                destination[r * weights.Columns + c] = (float)((double)FpxCodec.Decode(weights.Format, weights.CodeAt(r, c)) * weights.Scales[r]);
    }

    /// <summary>FP6/FP5 GEMM: <c>y = x · Wᵀ</c>.</summary>
    /// <param name="weights">The weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs.</param>
    /// <param name="n">Activation vectors.</param>
    /// <param name="magnitudes">Optional <c>n·m</c> output: <c>scale_r · Σ_c |Decode · x|</c>, the error scale of a float dot product.</param>
    public static void Gemm(FpxWeights weights, ReadOnlySpan<float> x, Span<float> y, int n, Span<double> magnitudes = default)
    {
        ArgumentNullException.ThrowIfNull(weights);
        int m = weights.Rows, k = weights.Columns;
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * m);
        if (!magnitudes.IsEmpty) ThrowHelper.ThrowIfLengthMismatch(nameof(magnitudes), magnitudes.Length, (long)n * m);
        byte[] codes = weights.GetCodes();
        var table = new double[FpxCodec.CodeCount(weights.Format)];
        for (int i = 0; i < table.Length; i++) table[i] = FpxCodec.Decode(weights.Format, i);
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
            {
                double acc = 0, mag = 0;
                for (int c = 0; c < k; c++)
                {
                    double p = table[codes[r * k + c]] * x[j * k + c];
                    acc += p;
                    mag += Math.Abs(p);
                }
                y[j * m + r] = (float)(acc * weights.Scales[r]);
                if (!magnitudes.IsEmpty) magnitudes[j * m + r] = mag * weights.Scales[r];
            }
    }

    /// <summary>Dequantizes INT6 weights: <c>(float)(q · scale)</c>.</summary>
    /// <param name="weights">The weights.</param>
    /// <param name="destination"><c>rows·columns</c> floats.</param>
    public static void Dequantize(Int6Weights weights, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, (long)weights.Rows * weights.Columns);
        int groups = weights.GroupsPerRow;
        for (int r = 0; r < weights.Rows; r++)
            for (int c = 0; c < weights.Columns; c++)
                destination[r * weights.Columns + c] = (float)((double)weights.ValueAt(r, c) * weights.Scales[r * groups + c / weights.GroupSize]);
    }

    /// <summary>INT6 W6A16 GEMM with fp32 activations.</summary>
    /// <param name="weights">The weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs.</param>
    /// <param name="n">Activation vectors.</param>
    /// <param name="magnitudes">Optional <c>n·m</c> output: <c>Σ_c |q·scale·x|</c>.</param>
    public static void GemmW6A16(Int6Weights weights, ReadOnlySpan<float> x, Span<float> y, int n, Span<double> magnitudes = default)
    {
        ArgumentNullException.ThrowIfNull(weights);
        int m = weights.Rows, k = weights.Columns, groups = weights.GroupsPerRow, g = weights.GroupSize;
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * m);
        if (!magnitudes.IsEmpty) ThrowHelper.ThrowIfLengthMismatch(nameof(magnitudes), magnitudes.Length, (long)n * m);
        sbyte[] q = weights.GetValues();
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
            {
                double acc = 0, mag = 0;
                for (int c = 0; c < k; c++)
                {
                    double p = q[r * k + c] * (double)weights.Scales[r * groups + c / g] * x[j * k + c];
                    acc += p;
                    mag += Math.Abs(p);
                }
                y[j * m + r] = (float)acc;
                if (!magnitudes.IsEmpty) magnitudes[j * m + r] = mag;
            }
    }

    /// <summary>Per-token symmetric int8 activation quantization: <c>scale = max|x_j| / 127</c> (0 → 1), <c>xq = clamp(RoundToEven(x / scale), −127, 127)</c> in binary64.</summary>
    /// <param name="x"><c>n·k</c> finite activations.</param>
    /// <param name="k">Values per token.</param>
    /// <param name="quantized"><c>n·k</c> int8 outputs.</param>
    /// <param name="scales"><c>n</c> scales.</param>
    /// <exception cref="ArgumentException">A length is wrong, or an activation is NaN/±Inf (the message names token and column).</exception>
    public static void QuantizeActivations(ReadOnlySpan<float> x, int k, Span<sbyte> quantized, Span<float> scales)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        int n = scales.Length;
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(quantized), quantized.Length, (long)n * k);
        for (int j = 0; j < n; j++)
        {
            float amax = 0;
            for (int c = 0; c < k; c++)
            {
                float v = x[j * k + c];
                if (!float.IsFinite(v)) ThrowHelper.Argument(nameof(x), $"x[{j}, {c}] is {v}; W6A8 needs finite activations.");
                amax = Math.Max(amax, Math.Abs(v));
            }
            float s = amax / 127f;
            if (s == 0) s = 1;
            scales[j] = s;
            for (int c = 0; c < k; c++)
                quantized[j * k + c] = (sbyte)Math.Clamp(Math.Round(x[j * k + c] / (double)s, MidpointRounding.ToEven), -127, 127);
        }
    }

    /// <summary>INT6 W6A8 GEMM on already-quantized int8 activations.</summary>
    /// <param name="weights">The weights <c>[m, k]</c>.</param>
    /// <param name="xq"><c>n·k</c> int8 activations (any value in [−128, 127]).</param>
    /// <param name="xScales"><c>n</c> activation scales.</param>
    /// <param name="y"><c>n·m</c> outputs.</param>
    /// <param name="magnitudes">Optional <c>n·m</c>: <c>xScale · Σ_g scale_g · Σ_{c∈g} |q·xq|</c>, the error scale of the float epilogue (valid for any split of a group's integer sum into lanes).</param>
    public static void GemmW6A8(Int6Weights weights, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xScales, Span<float> y, Span<double> magnitudes = default)
    {
        ArgumentNullException.ThrowIfNull(weights);
        int m = weights.Rows, k = weights.Columns, groups = weights.GroupsPerRow, g = weights.GroupSize, n = xScales.Length;
        ThrowHelper.ThrowIfLengthMismatch(nameof(xq), xq.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * m);
        if (!magnitudes.IsEmpty) ThrowHelper.ThrowIfLengthMismatch(nameof(magnitudes), magnitudes.Length, (long)n * m);
        sbyte[] q = weights.GetValues();
        for (int j = 0; j < n; j++)
            for (int r = 0; r < m; r++)
            {
                double acc = 0, mag = 0;
                for (int gi = 0; gi < groups; gi++)
                {
                    long dot = 0, abs = 0;
                    for (int c = gi * g; c < Math.Min(k, (gi + 1) * g); c++)
                    {
                        dot += q[r * k + c] * xq[j * k + c];
                        abs += Math.Abs(q[r * k + c] * xq[j * k + c]);
                    }
                    acc += (double)weights.Scales[r * groups + gi] * dot;
                    mag += (double)weights.Scales[r * groups + gi] * abs;
                }
                y[j * m + r] = (float)(acc * xScales[j]);
                if (!magnitudes.IsEmpty) magnitudes[j * m + r] = mag * xScales[j];
            }
    }
}
