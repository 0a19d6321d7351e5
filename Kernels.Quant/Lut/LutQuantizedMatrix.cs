namespace Kernels.Quant.Lut;

/// <summary>A LUT-GEMM weight matrix in its logical (unpacked, row-major) form: one code per weight plus per-group scale and offset.</summary>
/// <remarks>
/// <c>w[r, c] = Scales[r·G' + c/G]·(Codes[r·k + c] − Format.Center) + Offsets[r·G' + c/G]</c> with <c>G' = k / GroupSize</c>.
/// This is what the oracle (<see cref="Reference.LutReference"/>) reads; the kernels read the packed <see cref="LutWeights"/>
/// made by <see cref="BitPlanePacking.Pack"/>.
/// </remarks>
public sealed class LutQuantizedMatrix
{
    /// <summary>Creates a matrix from its parts (validated).</summary>
    /// <param name="format">The format.</param>
    /// <param name="m">Rows (output features).</param>
    /// <param name="k">Columns (reduction length); a multiple of the group size.</param>
    /// <param name="codes"><c>m·k</c> codes, each below <c>2^bits</c>.</param>
    /// <param name="scales"><c>m·k/G</c> group scales.</param>
    /// <param name="offsets"><c>m·k/G</c> group offsets.</param>
    /// <exception cref="ArgumentException">A size mismatch or a code out of range.</exception>
    public LutQuantizedMatrix(LutFormat format, int m, int k, byte[] codes, BFloat16[] scales, BFloat16[] offsets)
    {
        ArgumentNullException.ThrowIfNull(codes);
        ArgumentNullException.ThrowIfNull(scales);
        ArgumentNullException.ThrowIfNull(offsets);
        if (format.Bits == 0) throw new ArgumentException("format is default; create it with LutFormat's constructor.", nameof(format));
        ValidateShape(format, m, k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(codes), codes.Length, (long)m * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(scales), scales.Length, (long)m * (k / format.GroupSize));
        ThrowHelper.ThrowIfLengthMismatch(nameof(offsets), offsets.Length, (long)m * (k / format.GroupSize));
        int max = format.MaxCode;
        for (int i = 0; i < codes.Length; i++)
            if (codes[i] > max) ThrowHelper.Argument(nameof(codes), $"codes[{i}] = {codes[i]} exceeds {max} for {format.Bits}-bit weights.");
        Format = format;
        M = m;
        K = k;
        Codes = codes;
        Scales = scales;
        Offsets = offsets;
    }

    /// <summary>Checks <c>m ≥ 0</c>, <c>k ≥ 0</c> and <c>k % GroupSize == 0</c>.</summary>
    /// <param name="format">The format.</param>
    /// <param name="m">Rows.</param>
    /// <param name="k">Columns.</param>
    /// <exception cref="ArgumentException">k is not a multiple of the group size, or a size is negative.</exception>
    public static void ValidateShape(LutFormat format, int m, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (k % format.GroupSize != 0)
            ThrowHelper.Argument(nameof(k), $"k = {k} must be a multiple of the group size {format.GroupSize} (pad the reduction dimension with zero weights).");
    }

    /// <summary>The format.</summary>
    public LutFormat Format { get; }

    /// <summary>Rows.</summary>
    public int M { get; }

    /// <summary>Columns.</summary>
    public int K { get; }

    /// <summary>Groups per row, <c>k / GroupSize</c>.</summary>
    public int GroupsPerRow => K / Format.GroupSize;

    /// <summary><c>m·k</c> codes, row-major.</summary>
    public byte[] Codes { get; }

    /// <summary><c>m·GroupsPerRow</c> scales, row-major.</summary>
    public BFloat16[] Scales { get; }

    /// <summary><c>m·GroupsPerRow</c> offsets, row-major.</summary>
    public BFloat16[] Offsets { get; }
}
