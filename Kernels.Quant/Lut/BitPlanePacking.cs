namespace Kernels.Quant.Lut;

/// <summary>Packs a <see cref="LutQuantizedMatrix"/> into the bit-plane layout the LUT kernels read, and back.</summary>
/// <remarks>
/// <para><b>Lookup index.</b> For plane <c>i</c> (bit <c>i</c> of the code) and 4-group <c>kg</c> (columns <c>4kg … 4kg+3</c>) of
/// row <c>r</c>: <c>idx(r, i, kg) = Σ_{j&lt;4} bit_i(q[r, 4kg + j]) &lt;&lt; j</c> (first column → bit 0). It selects entry
/// <c>T[idx] = Σ_j (bit_j(idx) ? +x_j : −x_j)</c> of the activation table of that 4-group.</para>
/// <para><b>Byte stream</b> (outer → inner):</para>
/// <code>
/// [tile t: 64 rows][group g: G columns][pair p: 8 columns = 4-groups 2p, 2p+1][plane i: 0..b-1][position 0..63]
/// byte = idx(row, i, kg = g·G/4 + 2p)  |  idx(row, i, kg + 1) &lt;&lt; 4        row = 64t + RowOfPosition(position)
/// </code>
/// <para>One 64-byte vector therefore holds one plane of one column pair for 64 rows: a 512-bit <c>vpshufb</c> of the low
/// nibbles against the broadcast table of 4-group <c>kg</c>, and of the high nibbles against that of <c>kg + 1</c>, gives 128
/// lookups. The kernel then interleaves the two results per 128-bit lane (<c>vpunpcklbw</c>/<c>vpunpckhbw</c>) and sums the
/// pairs with <c>vpmaddubsw</c> (weighted by <c>2^i</c>), which widens to int16; later <c>vpslld/vpsrad</c> split even and odd
/// int16 lanes into int32. <see cref="RowOfPosition"/> is the permutation that makes those four int32 accumulators hold rows
/// 0–15, 16–31, 32–47 and 48–63 in order, so scales and outputs stay contiguous. Narrower vectors (AVX2, SSE) read the same
/// bytes 32 or 16 at a time and get the same rows, because every step works within a 128-bit lane.</para>
/// <para><b>Scales/offsets</b>: <c>[tile][group][row 0..63]</c> in natural row order. Padding rows (beyond m) have code 0,
/// scale 0 and offset 0.</para>
/// </remarks>
public static class BitPlanePacking
{
    /// <summary>The row (0–63, within its tile) stored at byte position <paramref name="position"/> of a 64-byte vector.</summary>
    /// <param name="position">Byte position 0–63: lane <c>L = position/16</c>, slot <c>s = position%16</c>.</param>
    /// <returns><c>32·(s ≥ 8) + 16·(s odd) + 4·L + (s mod 8)/2</c>.</returns>
    public static int RowOfPosition(int position)
    {
        int lane = position >> 4, slot = position & 15;
        int h = slot & 7;
        return (slot >> 3) * 32 + (h & 1) * 16 + lane * 4 + (h >> 1);
    }

    /// <summary>Index of the byte holding (tile, group, pair, plane, position) in <see cref="LutWeights.Planes"/>.</summary>
    /// <param name="format">Format.</param>
    /// <param name="k">Columns.</param>
    /// <param name="tile">Row tile.</param>
    /// <param name="group">Group along k.</param>
    /// <param name="pair">Column pair (8 columns) within the group.</param>
    /// <param name="plane">Bit-plane.</param>
    /// <param name="position">Byte position 0–63.</param>
    /// <returns>The byte index.</returns>
    public static long ByteIndex(LutFormat format, int k, int tile, int group, int pair, int plane, int position)
    {
        if (format.Bits == 0) throw new ArgumentException("format is default; create it with LutFormat's constructor.", nameof(format));
        int groups = k / format.GroupSize, pairs = format.GroupSize / 8;
        return ((((long)tile * groups + group) * pairs + pair) * format.Bits + plane) * 64 + position;
    }

    /// <summary>Packs the logical matrix into bit-planes.</summary>
    /// <param name="matrix">The quantized matrix.</param>
    /// <returns>The packed weights.</returns>
    public static LutWeights Pack(LutQuantizedMatrix matrix)
    {
        ArgumentNullException.ThrowIfNull(matrix);
        var f = matrix.Format;
        int m = matrix.M, k = matrix.K, b = f.Bits, gs = f.GroupSize, groups = k / gs, pairs = gs / 8;
        int tiles = (m + LutWeights.TileRows - 1) / LutWeights.TileRows;
        var planes = new byte[LutWeights.PlaneBytesFor(f, m, k)];
        var scales = new BFloat16[LutWeights.ScaleCountFor(f, m, k)];
        var offsets = new BFloat16[scales.Length];
        Span<int> rowOf = stackalloc int[64];
        for (int p = 0; p < 64; p++) rowOf[p] = RowOfPosition(p);
        byte[] codes = matrix.Codes;
        long o = 0;
        for (int t = 0; t < tiles; t++)
            for (int g = 0; g < groups; g++)
            {
                for (int rr = 0; rr < 64; rr++)
                {
                    int r = t * 64 + rr;
                    if (r >= m) continue;
                    long s = ((long)t * groups + g) * 64 + rr;
                    scales[s] = matrix.Scales[(long)r * groups + g];
                    offsets[s] = matrix.Offsets[(long)r * groups + g];
                }
                for (int p = 0; p < pairs; p++)
                    for (int i = 0; i < b; i++)
                        for (int pos = 0; pos < 64; pos++, o++)
                        {
                            int r = t * 64 + rowOf[pos];
                            if (r >= m) continue; // padding rows: code 0
                            long c0 = (long)r * k + g * gs + p * 8;
                            int lo = 0, hi = 0;
                            for (int j = 0; j < 4; j++)
                            {
                                lo |= ((codes[c0 + j] >> i) & 1) << j;
                                hi |= ((codes[c0 + 4 + j] >> i) & 1) << j;
                            }
                            planes[o] = (byte)(lo | (hi << 4));
                        }
            }
        return new LutWeights(f, m, k, planes, scales, offsets);
    }

    /// <summary>Reads the codes of one row from the packed planes (for spot checks on large matrices).</summary>
    /// <param name="weights">Packed weights.</param>
    /// <param name="row">Row, <c>0 ≤ row &lt; m</c>.</param>
    /// <param name="codes">Destination, <c>k</c> codes.</param>
    /// <exception cref="ArgumentOutOfRangeException">row is out of range.</exception>
    /// <exception cref="ArgumentException">codes has the wrong length.</exception>
    public static void UnpackRow(LutWeights weights, int row, Span<byte> codes)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, weights.M);
        ThrowHelper.ThrowIfLengthMismatch(nameof(codes), codes.Length, weights.K);
        var f = weights.Format;
        int t = row / 64, pos = 0;
        while (RowOfPosition(pos) != row % 64) pos++;
        codes.Clear();
        for (int g = 0; g < weights.GroupsPerRow; g++)
            for (int p = 0; p < f.GroupSize / 8; p++)
                for (int i = 0; i < f.Bits; i++)
                {
                    int v = weights.Planes[ByteIndex(f, weights.K, t, g, p, i, pos)];
                    for (int j = 0; j < 8; j++) codes[g * f.GroupSize + p * 8 + j] |= (byte)(((v >> j) & 1) << i);
                }
    }

    /// <summary>Unpacks bit-planes back into the logical matrix (the inverse of <see cref="Pack"/>).</summary>
    /// <param name="weights">Packed weights.</param>
    /// <returns>The logical matrix.</returns>
    public static LutQuantizedMatrix Unpack(LutWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        var f = weights.Format;
        int m = weights.M, k = weights.K, b = f.Bits, gs = f.GroupSize, groups = k / gs, pairs = gs / 8;
        var codes = new byte[(long)m * k];
        var scales = new BFloat16[(long)m * groups];
        var offsets = new BFloat16[scales.Length];
        long o = 0;
        for (int t = 0; t < weights.Tiles; t++)
            for (int g = 0; g < groups; g++)
            {
                for (int rr = 0; rr < 64 && t * 64 + rr < m; rr++)
                {
                    long s = ((long)t * groups + g) * 64 + rr;
                    scales[(long)(t * 64 + rr) * groups + g] = weights.Scales[s];
                    offsets[(long)(t * 64 + rr) * groups + g] = weights.Offsets[s];
                }
                for (int p = 0; p < pairs; p++)
                    for (int i = 0; i < b; i++)
                        for (int pos = 0; pos < 64; pos++, o++)
                        {
                            int r = t * 64 + RowOfPosition(pos);
                            if (r >= m) continue;
                            long c0 = (long)r * k + g * gs + p * 8;
                            int v = weights.Planes[o];
                            for (int j = 0; j < 8; j++) codes[c0 + j] |= (byte)(((v >> j) & 1) << i);
                        }
            }
        return new LutQuantizedMatrix(f, m, k, codes, scales, offsets);
    }
}
