namespace Kernels.Quant.Fpx;

/// <summary>Bit-level pre-packing of 5- and 6-bit codes into a high-bit plane and a 4-bit plane (shared by FP6, FP5 and INT6).</summary>
/// <remarks>
/// <para>Each row of <c>k</c> codes is padded with zero codes to <c>kPad = ⌈k/64⌉·64</c> and cut into 64-code blocks.
/// Block <c>b</c> of row <c>r</c> has index <c>B = r·kPad/64 + b</c>; its bytes sit at <c>B·32</c> in the 4-bit plane,
/// <c>B·16</c> in the 2-bit plane (6-bit codes) or <c>B·8</c> in the 1-bit plane (5-bit codes). Inside a block, code <c>i</c>
/// (column <c>64b + i</c>) is split into its low 4 bits and its top 2 (or 1) bits:</para>
/// <code>
/// 4-bit plane, 32 bytes:  byte j (0..31) = lo4(code j) | lo4(code j+32) &lt;&lt; 4
/// 2-bit plane, 16 bytes:  byte j (0..15) = hi2(code j) | hi2(code j+16) &lt;&lt; 2 | hi2(code j+32) &lt;&lt; 4 | hi2(code j+48) &lt;&lt; 6
/// 1-bit plane,  8 bytes:  byte j (0..7)  = Σ_t hi1(code 8t+j) &lt;&lt; t          (t = 0..7)
///
///  codes   0 ..31  32 ..63            codes 0..15 16..31 32..47 48..63
///  4-bit [ lo nib | hi nib ] ×32      2-bit [b1b0 | b3b2 | b5b4 | b7b6] ×16
/// </code>
/// <para>Why this order: a 512-bit register that holds the 4-bit plane in both 256-bit halves needs one variable shift
/// (0 in the low half, 4 in the high half) to put code <c>p</c>'s low bits in byte <c>p</c>; the 2-bit plane broadcast to the
/// four 128-bit lanes needs one shift by <c>2·lane</c>; the 1-bit plane broadcast to every qword needs one word shift by
/// <c>7 − p/8</c>. So a SIMD lane always reads whole bytes and code <c>p</c> ends in byte <c>p</c> (columns stay in order).
/// The AVX2 and 128-bit paths read the same bytes with half or quarter the width. This differs from FP6-LLM's
/// <c>weight_matrix_prepacking</c>, which orders values by <c>mma.m16n8k16</c> A-fragment and interleaves bits inside
/// 32-bit words for the GPU's register-level unpack; our GPU kernel decodes this CPU order directly.</para>
/// </remarks>
public static class FpxPacking
{
    /// <summary>Codes per block.</summary>
    public const int BlockCodes = 64;

    /// <summary>Bytes of the 4-bit plane per block.</summary>
    public const int Lo4BlockBytes = 32;

    /// <summary>Pads a column count to whole blocks.</summary>
    /// <param name="columns">Columns.</param>
    /// <returns><c>⌈columns/64⌉·64</c>.</returns>
    public static int PaddedColumns(int columns) => (int)(((long)columns + BlockCodes - 1) / BlockCodes * BlockCodes);

    /// <summary>Bytes of the high plane per block: 16 for 6-bit codes, 8 for 5-bit codes.</summary>
    /// <param name="codeBits">5 or 6.</param>
    /// <returns>Bytes per block.</returns>
    public static int HighBlockBytes(int codeBits) => codeBits == 6 ? 16 : 8;

    /// <summary>Packs row-major codes (one per byte, <c>rows·columns</c>) into the two planes.</summary>
    /// <param name="codes">Codes; only the low <paramref name="codeBits"/> bits are used.</param>
    /// <param name="rows">Rows.</param>
    /// <param name="columns">Columns.</param>
    /// <param name="codeBits">5 or 6.</param>
    /// <param name="high">High plane, <c>rows·kPad/64·HighBlockBytes</c> bytes, overwritten.</param>
    /// <param name="low">4-bit plane, <c>rows·kPad/2</c> bytes, overwritten.</param>
    /// <param name="padCode">Code written into the padding columns (0 for FP6/FP5, 32 for INT6's offset code).</param>
    /// <exception cref="ArgumentException">A buffer length is wrong or <paramref name="codeBits"/> is not 5 or 6.</exception>
    public static void Pack(ReadOnlySpan<byte> codes, int rows, int columns, int codeBits, Span<byte> high, Span<byte> low, byte padCode = 0)
    {
        Validate(rows, columns, codeBits, high.Length, low.Length);
        ThrowHelper.ThrowIfLengthMismatch(nameof(codes), codes.Length, (long)rows * columns);
        int limit = 1 << codeBits;
        if (padCode >= limit) ThrowHelper.Argument(nameof(padCode), $"padCode = {padCode} is not a {codeBits}-bit code.");
        for (int i = 0; i < codes.Length; i++)
            if (codes[i] >= limit) ThrowHelper.Argument(nameof(codes), $"codes[{i}] = {codes[i]} is not a {codeBits}-bit code.");
        int kPad = PaddedColumns(columns), blocks = kPad / BlockCodes, hb = HighBlockBytes(codeBits);
        high.Clear();
        low.Clear();
        for (int r = 0; r < rows; r++)
        {
            for (int b = 0; b < blocks; b++)
            {
                long blk = (long)r * blocks + b;
                Span<byte> lo = low.Slice((int)(blk * Lo4BlockBytes), Lo4BlockBytes);
                Span<byte> hi = high.Slice((int)(blk * hb), hb);
                for (int i = 0; i < BlockCodes; i++)
                {
                    int c = b * BlockCodes + i;
                    int code = c < columns ? codes[r * columns + c] : padCode;
                    lo[i & 31] |= (byte)((code & 15) << (4 * (i >> 5)));
                    if (codeBits == 6) hi[i & 15] |= (byte)(((code >> 4) & 3) << (2 * (i >> 4)));
                    else hi[i & 7] |= (byte)(((code >> 4) & 1) << (i >> 3));
                }
            }
        }
    }

    /// <summary>Unpacks the planes into row-major codes (the inverse of <see cref="Pack"/>; padding is dropped).</summary>
    /// <param name="high">High plane.</param>
    /// <param name="low">4-bit plane.</param>
    /// <param name="rows">Rows.</param>
    /// <param name="columns">Columns.</param>
    /// <param name="codeBits">5 or 6.</param>
    /// <param name="codes">Destination, <c>rows·columns</c> bytes.</param>
    /// <exception cref="ArgumentException">A buffer length is wrong.</exception>
    public static void Unpack(ReadOnlySpan<byte> high, ReadOnlySpan<byte> low, int rows, int columns, int codeBits, Span<byte> codes)
    {
        Validate(rows, columns, codeBits, high.Length, low.Length);
        ThrowHelper.ThrowIfLengthMismatch(nameof(codes), codes.Length, (long)rows * columns);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                codes[r * columns + c] = (byte)CodeAtUnchecked(high, low, r, c, columns, codeBits);
    }

    /// <summary>Reads the code at (<paramref name="row"/>, <paramref name="column"/>) from the planes.</summary>
    /// <param name="high">High plane.</param>
    /// <param name="low">4-bit plane.</param>
    /// <param name="row">Row.</param>
    /// <param name="column">Column.</param>
    /// <param name="columns">Logical column count of the matrix.</param>
    /// <param name="codeBits">5 or 6.</param>
    /// <returns>The code.</returns>
    public static int CodeAt(ReadOnlySpan<byte> high, ReadOnlySpan<byte> low, int row, int column, int columns, int codeBits)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        if ((uint)column >= (uint)columns)
            throw new ArgumentOutOfRangeException(nameof(column), column, $"column {column} is outside [0, {columns}).");
        if (codeBits is not (5 or 6)) ThrowHelper.Argument(nameof(codeBits), $"codeBits must be 5 or 6; got {codeBits}.");
        if (columns > MaxColumns) throw new ArgumentOutOfRangeException(nameof(columns), columns, $"columns = {columns} exceeds {MaxColumns}.");
        long rowsHeld = low.Length / ((long)PaddedColumns(columns) / BlockCodes * Lo4BlockBytes);
        if (row >= rowsHeld || (long)(row + 1) * (PaddedColumns(columns) / BlockCodes) * HighBlockBytes(codeBits) > high.Length)
            throw new ArgumentOutOfRangeException(nameof(row), row, $"row {row} is outside the {rowsHeld} rows that low ({low.Length} bytes) and high ({high.Length} bytes) hold for {columns} columns.");
        return CodeAtUnchecked(high, low, row, column, columns, codeBits);
    }

    private static int CodeAtUnchecked(ReadOnlySpan<byte> high, ReadOnlySpan<byte> low, int row, int column, int columns, int codeBits)
    {
        int blocks = PaddedColumns(columns) / BlockCodes;
        long blk = (long)row * blocks + column / BlockCodes;
        int i = column % BlockCodes;
        int lo = (low[(int)(blk * Lo4BlockBytes) + (i & 31)] >> (4 * (i >> 5))) & 15;
        int hi = codeBits == 6
            ? (high[(int)(blk * 16) + (i & 15)] >> (2 * (i >> 4))) & 3
            : (high[(int)(blk * 8) + (i & 7)] >> (i >> 3)) & 1;
        return lo | hi << 4;
    }

    /// <summary>The most columns a packed matrix may have (so that <see cref="PaddedColumns"/> fits in an int).</summary>
    public const int MaxColumns = int.MaxValue / BlockCodes * BlockCodes;

    private static void Validate(int rows, int columns, int codeBits, int highLength, int lowLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(columns, MaxColumns);
        if (codeBits is not (5 or 6)) ThrowHelper.Argument(nameof(codeBits), $"codeBits must be 5 or 6; got {codeBits}.");
        long blocks = (long)rows * (PaddedColumns(columns) / BlockCodes);
        ThrowHelper.ThrowIfLengthMismatch("high", highLength, blocks * HighBlockBytes(codeBits));
        ThrowHelper.ThrowIfLengthMismatch("low", lowLength, blocks * Lo4BlockBytes);
    }
}
