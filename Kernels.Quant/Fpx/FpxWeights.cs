
namespace Kernels.Quant.Fpx;

/// <summary>A weight matrix quantized to FP6 e3m2 or FP5 e2m2 with one fp32 scale per output channel (row), bit-level pre-packed.</summary>
/// <remarks>
/// <para>Dequantized weight: <c>w[r, c] = Decode(code[r, c]) · Scales[r]</c>. Storage: <see cref="HighBits"/> (2-bit plane for FP6,
/// 1-bit plane for FP5) and <see cref="LowBits"/> (4-bit plane), laid out as in <see cref="FpxPacking"/>, plus
/// <see cref="Scales"/> (<c>rows</c> floats): 6.0 (5.0) bits per weight plus 32 bits per row.</para>
/// <para>Quantization (per row, as DeepSpeed's <c>fp_quantize</c>): <c>scale = max|w_row| / max</c> (28 or 7; a zero row gets 1),
/// <c>code = Encode(w / scale)</c> computed in binary64, round to nearest even onto the grid including subnormals, saturating at
/// ±max. Zeros keep their sign (−0 → code 0x20 / 0x10, which decodes to −0), as do negative values that round to zero.
/// NaN or ±Inf inputs are rejected with an <see cref="ArgumentException"/> naming the row and column. DeepSpeed (qtorch) may round
/// magnitudes below 0.25·scale differently (ties away from zero, non-IEEE subnormals); FP6-LLM's own caster truncates.</para>
/// <para>Instances are immutable after construction; the arrays are exposed read-only.</para>
/// </remarks>
public sealed class FpxWeights
{
    private readonly byte[] _high;
    private readonly byte[] _low;
    private readonly float[] _scales;

    private FpxWeights(FpxFormat format, int rows, int columns, byte[] high, byte[] low, float[] scales)
    {
        Format = format;
        Rows = rows;
        Columns = columns;
        _high = high;
        _low = low;
        _scales = scales;
    }

    /// <summary>The code format.</summary>
    public FpxFormat Format { get; }

    /// <summary>Output channels (m).</summary>
    public int Rows { get; }

    /// <summary>Logical columns (k).</summary>
    public int Columns { get; }

    /// <summary>Columns padded to whole 64-code blocks.</summary>
    public int PaddedColumns => FpxPacking.PaddedColumns(Columns);

    /// <summary>Bits per code (6 or 5).</summary>
    public int CodeBits => FpxCodec.Bits(Format);

    /// <summary>The 2-bit (FP6) or 1-bit (FP5) plane.</summary>
    public ReadOnlySpan<byte> HighBits => _high;

    /// <summary>The 4-bit plane.</summary>
    public ReadOnlySpan<byte> LowBits => _low;

    /// <summary>Per-row scales.</summary>
    public ReadOnlySpan<float> Scales => _scales;

    /// <summary>Packed payload bytes (planes + scales).</summary>
    public long SizeInBytes => _high.LongLength + _low.LongLength + 4L * _scales.Length;

    /// <summary>Quantizes a row-major fp32 matrix.</summary>
    /// <param name="weights"><c>rows·columns</c> values.</param>
    /// <param name="rows">Rows (m).</param>
    /// <param name="columns">Columns (k).</param>
    /// <param name="format">FP6 e3m2 or FP5 e2m2.</param>
    /// <returns>The quantized, packed weights.</returns>
    /// <exception cref="ArgumentException">Length mismatch, or a NaN/±Inf weight (the message names row and column).</exception>
    public static FpxWeights Quantize(ReadOnlySpan<float> weights, int rows, int columns, FpxFormat format)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        ThrowHelper.ThrowIfLengthMismatch(nameof(weights), weights.Length, (long)rows * columns);
        CheckFormat(format);
        var codes = new byte[(long)rows * columns];
        var scales = new float[rows];
        double max = FpxCodec.MaxValue(format);
        for (int r = 0; r < rows; r++)
        {
            ReadOnlySpan<float> row = weights.Slice(r * columns, columns);
            float amax = 0;
            for (int c = 0; c < columns; c++)
            {
                if (!float.IsFinite(row[c]))
                    ThrowHelper.Argument(nameof(weights), $"weights[{r}, {c}] is {row[c]}; FP6/FP5 quantization needs finite weights.");
                amax = Math.Max(amax, Math.Abs(row[c]));
            }
            float scale = (float)(amax / max);
            if (scale == 0) scale = 1;
            scales[r] = scale;
            for (int c = 0; c < columns; c++) codes[(long)r * columns + c] = FpxCodec.Encode(format, row[c] / (double)scale);
        }
        return FromCodes(codes, scales, rows, columns, format);
    }

    /// <summary>Quantizes a row-major bf16 matrix (each value widened exactly to fp32 first).</summary>
    /// <param name="weights"><c>rows·columns</c> values.</param>
    /// <param name="rows">Rows (m).</param>
    /// <param name="columns">Columns (k).</param>
    /// <param name="format">FP6 e3m2 or FP5 e2m2.</param>
    /// <returns>The quantized, packed weights.</returns>
    /// <exception cref="ArgumentException">Length mismatch, or a NaN/±Inf weight.</exception>
    public static FpxWeights Quantize(ReadOnlySpan<BFloat16> weights, int rows, int columns, FpxFormat format)
    {
        var f = new float[weights.Length];
        for (int i = 0; i < f.Length; i++) f[i] = (float)weights[i];
        return Quantize(f, rows, columns, format);
    }

    /// <summary>Quantizes a row-major fp16 matrix (each value widened exactly to fp32 first).</summary>
    /// <param name="weights"><c>rows·columns</c> values.</param>
    /// <param name="rows">Rows (m).</param>
    /// <param name="columns">Columns (k).</param>
    /// <param name="format">FP6 e3m2 or FP5 e2m2.</param>
    /// <returns>The quantized, packed weights.</returns>
    /// <exception cref="ArgumentException">Length mismatch, or a NaN/±Inf weight.</exception>
    public static FpxWeights Quantize(ReadOnlySpan<Half> weights, int rows, int columns, FpxFormat format)
    {
        var f = new float[weights.Length];
        for (int i = 0; i < f.Length; i++) f[i] = (float)weights[i];
        return Quantize(f, rows, columns, format);
    }

    /// <summary>Builds weights from logical codes (row-major, one per byte) and per-row scales, packing them.</summary>
    /// <param name="codes"><c>rows·columns</c> codes (values ≥ 2^bits are rejected).</param>
    /// <param name="scales"><c>rows</c> finite, non-negative scales.</param>
    /// <param name="rows">Rows.</param>
    /// <param name="columns">Columns.</param>
    /// <param name="format">The format.</param>
    /// <returns>The weights.</returns>
    /// <exception cref="ArgumentException">A length is wrong, a code is out of range, or a scale is not finite.</exception>
    public static FpxWeights FromCodes(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int rows, int columns, FpxFormat format)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        CheckFormat(format);
        ThrowHelper.ThrowIfLengthMismatch(nameof(codes), codes.Length, (long)rows * columns);
        ThrowHelper.ThrowIfLengthMismatch(nameof(scales), scales.Length, rows);
        int limit = FpxCodec.CodeCount(format);
        for (int i = 0; i < codes.Length; i++)
            if (codes[i] >= limit) ThrowHelper.Argument(nameof(codes), $"codes[{i}] = {codes[i]} is not a {FpxCodec.Bits(format)}-bit code.");
        for (int r = 0; r < rows; r++)
            if (!float.IsFinite(scales[r]) || scales[r] < 0) ThrowHelper.Argument(nameof(scales), $"scales[{r}] = {scales[r]} must be finite and ≥ 0.");
        int bits = FpxCodec.Bits(format);
        long blocks = (long)rows * (FpxPacking.PaddedColumns(columns) / FpxPacking.BlockCodes);
        var high = new byte[blocks * FpxPacking.HighBlockBytes(bits)];
        var low = new byte[blocks * FpxPacking.Lo4BlockBytes];
        FpxPacking.Pack(codes, rows, columns, bits, high, low);
        return new FpxWeights(format, rows, columns, high, low, scales.ToArray());
    }

    /// <summary>Wraps already-packed planes (used by the deserializer; lengths were validated).</summary>
    internal static FpxWeights FromPlanes(FpxFormat format, int rows, int columns, byte[] high, byte[] low, float[] scales) =>
        new(format, rows, columns, high, low, scales);

    /// <summary>Unpacks the logical codes.</summary>
    /// <returns><c>rows·columns</c> codes, row-major.</returns>
    public byte[] GetCodes()
    {
        var codes = new byte[(long)Rows * Columns];
        FpxPacking.Unpack(_high, _low, Rows, Columns, CodeBits, codes);
        return codes;
    }

    /// <summary>The code at (<paramref name="row"/>, <paramref name="column"/>).</summary>
    /// <param name="row">Row.</param>
    /// <param name="column">Column.</param>
    /// <returns>The code.</returns>
    public int CodeAt(int row, int column)
    {
        if ((uint)row >= (uint)Rows) throw new ArgumentOutOfRangeException(nameof(row), row, $"row {row} is outside [0, {Rows}).");
        return FpxPacking.CodeAt(_high, _low, row, column, Columns, CodeBits);
    }

    private static void CheckFormat(FpxFormat format)
    {
        if (format is not (FpxFormat.Fp6E3M2 or FpxFormat.Fp5E2M2))
            throw new NotSupportedException($"FpxFormat {format} is not supported; supported: Fp6E3M2, Fp5E2M2.");
    }
}
