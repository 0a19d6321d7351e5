namespace Kernels.Quant.Lut;

/// <summary>A LUT-GEMM weight matrix packed into bit-planes in the order the kernels read it (see <see cref="BitPlanePacking"/>).</summary>
/// <remarks>
/// Three arrays: <see cref="Planes"/> (the 4-bit lookup indices, <c>b</c> bits per weight), <see cref="Scales"/> and
/// <see cref="Offsets"/> (bf16 per row and group, in tile order). Rows are padded to a multiple of <see cref="TileRows"/>
/// with zero weights. Immutable after construction; share one instance across threads and backends.
/// </remarks>
public sealed class LutWeights
{
    /// <summary>Rows per tile: one byte lane per row in a 512-bit vector.</summary>
    public const int TileRows = 64;

    /// <summary>Creates packed weights from their arrays (validated; used by the packer and the deserializer).</summary>
    /// <param name="format">The format.</param>
    /// <param name="m">Rows.</param>
    /// <param name="k">Columns, a multiple of the group size.</param>
    /// <param name="planes">Packed planes, <see cref="PlaneBytes"/> bytes.</param>
    /// <param name="scales">Tile-ordered scales, <see cref="ScaleCount"/> values.</param>
    /// <param name="offsets">Tile-ordered offsets, <see cref="ScaleCount"/> values.</param>
    /// <exception cref="ArgumentException">A length mismatch (the message names it).</exception>
    public LutWeights(LutFormat format, int m, int k, byte[] planes, BFloat16[] scales, BFloat16[] offsets)
    {
        ArgumentNullException.ThrowIfNull(planes);
        ArgumentNullException.ThrowIfNull(scales);
        ArgumentNullException.ThrowIfNull(offsets);
        if (format.Bits == 0) throw new ArgumentException("format is default; create it with LutFormat's constructor.", nameof(format));
        LutQuantizedMatrix.ValidateShape(format, m, k);
        Format = format;
        M = m;
        K = k;
        ThrowHelper.ThrowIfLengthMismatch(nameof(planes), planes.Length, PlaneBytesFor(format, m, k));
        ThrowHelper.ThrowIfLengthMismatch(nameof(scales), scales.Length, ScaleCountFor(format, m, k));
        ThrowHelper.ThrowIfLengthMismatch(nameof(offsets), offsets.Length, ScaleCountFor(format, m, k));
        Planes = planes;
        Scales = scales;
        Offsets = offsets;
    }

    /// <summary>The format.</summary>
    public LutFormat Format { get; }

    /// <summary>Rows (output features).</summary>
    public int M { get; }

    /// <summary>Columns (reduction length).</summary>
    public int K { get; }

    /// <summary>Row tiles, <c>ceil(M / 64)</c>.</summary>
    public int Tiles => (int)(((long)M + TileRows - 1) / TileRows);

    /// <summary>Groups per row.</summary>
    public int GroupsPerRow => K / Format.GroupSize;

    /// <summary>Packed lookup indices (layout in <see cref="BitPlanePacking"/>).</summary>
    public byte[] Planes { get; }

    /// <summary>Scales, <c>[tile][group][64 rows]</c>.</summary>
    public BFloat16[] Scales { get; }

    /// <summary>Offsets, <c>[tile][group][64 rows]</c>.</summary>
    public BFloat16[] Offsets { get; }

    /// <summary>Bytes of <see cref="Planes"/>.</summary>
    public long PlaneBytes => Planes.LongLength;

    /// <summary>Number of scales (and of offsets).</summary>
    public long ScaleCount => Scales.LongLength;

    /// <summary>Total bytes a kernel streams per GEMV: planes plus scales and offsets.</summary>
    public long TotalBytes => PlaneBytes + 4 * ScaleCount;

    /// <summary>Plane bytes for a shape: <c>tiles·64·k·b/8</c>.</summary>
    /// <param name="format">Format.</param>
    /// <param name="m">Rows.</param>
    /// <param name="k">Columns.</param>
    /// <returns>The byte count.</returns>
    public static long PlaneBytesFor(LutFormat format, int m, int k) => PaddedRows(format, m, k) * k / 8 * format.Bits;

    /// <summary>Scale count for a shape: <c>tiles·64·k/G</c>.</summary>
    /// <param name="format">Format.</param>
    /// <param name="m">Rows.</param>
    /// <param name="k">Columns.</param>
    /// <returns>The count.</returns>
    public static long ScaleCountFor(LutFormat format, int m, int k) => PaddedRows(format, m, k) * (k / format.GroupSize);

    // Rows rounded up to whole tiles, in long arithmetic (m + 63 overflows int for m near int.MaxValue).
    private static long PaddedRows(LutFormat format, int m, int k)
    {
        if (format.Bits == 0) throw new ArgumentException("format is default; create it with LutFormat's constructor.", nameof(format));
        LutQuantizedMatrix.ValidateShape(format, m, k);
        return ((long)m + TileRows - 1) / TileRows * TileRows;
    }
}
