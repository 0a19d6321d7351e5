namespace Kernels.Quant.Fpx;

/// <summary>FlexQ-style INT6 weights: symmetric per-group 6-bit integers with one fp32 scale per (row, group), packed densely.</summary>
/// <remarks>
/// <para>Quantization: for each row and each group of <see cref="GroupSize"/> consecutive columns (64 or 128),
/// <c>scale = max|w_group| / 31</c> (a zero group gets 1), <c>q = clamp(RoundToEven(w / scale), −31, 31)</c> computed in binary64.
/// Dequantized weight: <c>q · scale</c>. NaN/±Inf weights are rejected (the message names row and column).</para>
/// <para>Storage: the offset code <c>u = q + 32 ∈ [1, 63]</c> (u = 0 never occurs) is packed with <see cref="FpxPacking"/>
/// as a 2-bit plane + 4-bit plane (6.0 bits per weight, padding columns hold u = 32, i.e. q = 0), plus
/// <c>rows·⌈k/G⌉</c> scales (32/G bits per weight). Keeping <c>u</c> unsigned and ≤ 63 is what makes the int8 dot product
/// safe with <c>vpmaddubsw</c> (see <c>Int6Gemm</c>). FlexQ itself stores two's-complement bit planes for its binary tensor-core
/// kernels; the values represented are the same.</para>
/// </remarks>
public sealed class Int6Weights
{
    /// <summary>Largest |q|.</summary>
    public const int MaxQ = 31;

    /// <summary>Offset added to q to form the stored code.</summary>
    public const int Offset = 32;

    private readonly byte[] _high;
    private readonly byte[] _low;
    private readonly float[] _scales;

    private Int6Weights(int rows, int columns, int groupSize, byte[] high, byte[] low, float[] scales)
    {
        Rows = rows;
        Columns = columns;
        GroupSize = groupSize;
        _high = high;
        _low = low;
        _scales = scales;
    }

    /// <summary>Output channels (m).</summary>
    public int Rows { get; }

    /// <summary>Logical columns (k).</summary>
    public int Columns { get; }

    /// <summary>Columns per scale group: 64 or 128.</summary>
    public int GroupSize { get; }

    /// <summary>Groups per row: <c>⌈k / GroupSize⌉</c>.</summary>
    public int GroupsPerRow => (int)(((long)Columns + GroupSize - 1) / GroupSize);

    /// <summary>Columns padded to whole 64-code blocks.</summary>
    public int PaddedColumns => FpxPacking.PaddedColumns(Columns);

    /// <summary>The 2-bit plane (bits 5..4 of u).</summary>
    public ReadOnlySpan<byte> HighBits => _high;

    /// <summary>The 4-bit plane (bits 3..0 of u).</summary>
    public ReadOnlySpan<byte> LowBits => _low;

    /// <summary>Scales, <c>[rows, GroupsPerRow]</c> row-major.</summary>
    public ReadOnlySpan<float> Scales => _scales;

    /// <summary>Packed payload bytes (planes + scales).</summary>
    public long SizeInBytes => _high.LongLength + _low.LongLength + 4L * _scales.Length;

    /// <summary>Quantizes a row-major fp32 matrix.</summary>
    /// <param name="weights"><c>rows·columns</c> values.</param>
    /// <param name="rows">Rows (m).</param>
    /// <param name="columns">Columns (k).</param>
    /// <param name="groupSize">64 or 128.</param>
    /// <returns>The weights.</returns>
    /// <exception cref="ArgumentException">Length mismatch or a NaN/±Inf weight.</exception>
    /// <exception cref="NotSupportedException"><paramref name="groupSize"/> is not 64 or 128.</exception>
    public static Int6Weights Quantize(ReadOnlySpan<float> weights, int rows, int columns, int groupSize = 128)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        CheckGroup(groupSize);
        ThrowHelper.ThrowIfLengthMismatch(nameof(weights), weights.Length, (long)rows * columns);
        int groups = (int)(((long)columns + groupSize - 1) / groupSize);
        var q = new sbyte[(long)rows * columns];
        var scales = new float[(long)rows * groups];
        for (int r = 0; r < rows; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                int c0 = g * groupSize, c1 = Math.Min(columns, c0 + groupSize);
                float amax = 0;
                for (int c = c0; c < c1; c++)
                {
                    float v = weights[r * columns + c];
                    if (!float.IsFinite(v)) ThrowHelper.Argument(nameof(weights), $"weights[{r}, {c}] is {v}; INT6 quantization needs finite weights.");
                    amax = Math.Max(amax, Math.Abs(v));
                }
                float scale = amax / MaxQ;
                if (scale == 0) scale = 1;
                scales[r * groups + g] = scale;
                for (int c = c0; c < c1; c++)
                {
                    double v = Math.Round(weights[r * columns + c] / (double)scale, MidpointRounding.ToEven);
                    q[r * columns + c] = (sbyte)Math.Clamp(v, -MaxQ, MaxQ);
                }
            }
        }
        return FromValues(q, scales, rows, columns, groupSize);
    }

    /// <summary>Builds weights from signed values q ∈ [−31, 31] (row-major) and scales <c>[rows, groups]</c>.</summary>
    /// <param name="values"><c>rows·columns</c> values.</param>
    /// <param name="scales"><c>rows·⌈columns/groupSize⌉</c> finite, non-negative scales.</param>
    /// <param name="rows">Rows.</param>
    /// <param name="columns">Columns.</param>
    /// <param name="groupSize">64 or 128.</param>
    /// <returns>The weights.</returns>
    /// <exception cref="ArgumentException">A length is wrong, a value is outside [−31, 31] or a scale is not finite.</exception>
    /// <exception cref="NotSupportedException"><paramref name="groupSize"/> is not 64 or 128.</exception>
    public static Int6Weights FromValues(ReadOnlySpan<sbyte> values, ReadOnlySpan<float> scales, int rows, int columns, int groupSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        CheckGroup(groupSize);
        int groups = (int)(((long)columns + groupSize - 1) / groupSize);
        ThrowHelper.ThrowIfLengthMismatch(nameof(values), values.Length, (long)rows * columns);
        ThrowHelper.ThrowIfLengthMismatch(nameof(scales), scales.Length, (long)rows * groups);
        var codes = new byte[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            if (values[i] is < -MaxQ or > MaxQ) ThrowHelper.Argument(nameof(values), $"values[{i}] = {values[i]} is outside [−31, 31].");
            codes[i] = (byte)(values[i] + Offset);
        }
        for (int i = 0; i < scales.Length; i++)
            if (!float.IsFinite(scales[i]) || scales[i] < 0) ThrowHelper.Argument(nameof(scales), $"scales[{i}] = {scales[i]} must be finite and ≥ 0.");
        long blocks = (long)rows * (FpxPacking.PaddedColumns(columns) / FpxPacking.BlockCodes);
        var high = new byte[blocks * 16];
        var low = new byte[blocks * FpxPacking.Lo4BlockBytes];
        FpxPacking.Pack(codes, rows, columns, 6, high, low, padCode: Offset);
        return new Int6Weights(rows, columns, groupSize, high, low, scales.ToArray());
    }

    internal static Int6Weights FromPlanes(int rows, int columns, int groupSize, byte[] high, byte[] low, float[] scales) =>
        new(rows, columns, groupSize, high, low, scales);

    /// <summary>The signed value q at (<paramref name="row"/>, <paramref name="column"/>).</summary>
    /// <param name="row">Row.</param>
    /// <param name="column">Column.</param>
    /// <returns>q ∈ [−31, 31].</returns>
    public int ValueAt(int row, int column)
    {
        if ((uint)row >= (uint)Rows) throw new ArgumentOutOfRangeException(nameof(row), row, $"row {row} is outside [0, {Rows}).");
        return FpxPacking.CodeAt(_high, _low, row, column, Columns, 6) - Offset;
    }

    /// <summary>Unpacks all values q (row-major).</summary>
    /// <returns><c>rows·columns</c> values.</returns>
    public sbyte[] GetValues()
    {
        var codes = new byte[(long)Rows * Columns];
        FpxPacking.Unpack(_high, _low, Rows, Columns, 6, codes);
        var q = new sbyte[codes.Length];
        for (int i = 0; i < q.Length; i++) q[i] = (sbyte)(codes[i] - Offset);
        return q;
    }

    internal static void CheckGroup(int groupSize)
    {
        if (groupSize is not (64 or 128)) throw new NotSupportedException($"INT6 group size must be 64 or 128; got {groupSize}.");
    }
}
