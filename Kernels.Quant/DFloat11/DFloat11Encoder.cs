namespace Kernels.Quant.DFloat11;

/// <summary>Compresses bf16 tensors losslessly into <see cref="DFloat11Tensor"/>s.</summary>
/// <remarks>
/// <para>Per tensor: histogram of the 8-bit exponents (exponents ≥ 239 counted as the escape symbol), a canonical Huffman
/// code limited to <see cref="DFloat11Format.EncoderMaxCodeLength"/> bits (tighter limits 16, 12, 10, 8 are tried in turn
/// if a pathological histogram would need more than DFloat11's 16 sub-tables; 8 bits always fits one table), then the
/// codes are written MSB-first (escape: code + 8 raw exponent bits) and the gaps and output positions are recorded
/// exactly as DFloat11's <c>encode</c> does. No EOF symbol is written; the last byte is zero-padded.</para>
/// <para>Deterministic: the same input gives the same bytes.</para>
/// </remarks>
public static class DFloat11Encoder
{
    /// <summary>Counts the Huffman symbols of a tensor (exponents, with 239–255 folded into the escape symbol).</summary>
    /// <param name="values">The values.</param>
    /// <returns>256 counts (entries ≥ 240 are zero).</returns>
    public static long[] SymbolHistogram(ReadOnlySpan<BFloat16> values)
    {
        var h = new long[256];
        foreach (var v in values) h[DFloat11Format.SymbolOf(DFloat11Format.Exponent(v.Bits))]++;
        return h;
    }

    /// <summary>Counts the raw 8-bit exponents of a tensor.</summary>
    /// <param name="values">The values.</param>
    /// <returns>256 counts.</returns>
    public static long[] ExponentHistogram(ReadOnlySpan<BFloat16> values)
    {
        var h = new long[256];
        foreach (var v in values) h[DFloat11Format.Exponent(v.Bits)]++;
        return h;
    }

    /// <summary>Shannon entropy of the exponent distribution in bits per element.</summary>
    /// <param name="exponentHistogram">256 counts.</param>
    /// <returns>−Σ p log₂ p.</returns>
    public static double Entropy(ReadOnlySpan<long> exponentHistogram)
    {
        double total = 0, h = 0;
        foreach (long c in exponentHistogram) total += c;
        if (total == 0) return 0;
        foreach (long c in exponentHistogram)
            if (c > 0) h -= c / total * Math.Log2(c / total);
        return h;
    }

    /// <summary>Compresses a bf16 tensor.</summary>
    /// <param name="values">The elements, row-major.</param>
    /// <param name="shape">The logical shape (element count must equal <paramref name="values"/>'s length); null = 1-D.</param>
    /// <returns>The compressed tensor.</returns>
    /// <exception cref="ArgumentException">The shape's element count differs from the values' length.</exception>
    public static DFloat11Tensor Encode(ReadOnlySpan<BFloat16> values, TensorShape? shape = null)
    {
        shape ??= new TensorShape(values.Length);
        ThrowHelper.ThrowIfLengthMismatch(nameof(values), values.Length, shape.ElementCount);
        long[] hist = SymbolHistogram(values);
        HuffmanCode code = null!;
        byte[] luts = null!;
        foreach (int limit in (ReadOnlySpan<int>)[DFloat11Format.EncoderMaxCodeLength, 16, 12, 10, 8])
        {
            code = HuffmanCode.FromFrequencies(hist, limit);
            try
            {
                luts = code.BuildLuts();
                break;
            }
            catch (InvalidOperationException) when (limit > 8)
            {
                // too many sub-tables: retry with a tighter length limit
            }
        }
        return Encode(values, shape, code, luts);
    }

    internal static DFloat11Tensor Encode(ReadOnlySpan<BFloat16> values, TensorShape shape, HuffmanCode code, byte[] luts)
    {
        int n = values.Length;
        ReadOnlySpan<byte> lens = code.Lengths;
        ReadOnlySpan<uint> codes = code.Codes;
        long totalBits = 0;
        foreach (var v in values)
        {
            int s = DFloat11Format.SymbolOf(DFloat11Format.Exponent(v.Bits));
            totalBits += lens[s] + (s == DFloat11Format.EscapeSymbol ? DFloat11Format.EscapeBits : 0);
        }
        long nBytesLong = (totalBits + 7) / 8;
        if (nBytesLong > int.MaxValue - DFloat11Format.StreamPadding) throw new ArgumentException($"tensor too large: {nBytesLong} stream bytes.", nameof(values));
        int nBytes = (int)nBytesLong;
        int nBlocks = DFloat11Format.BlockCount(nBytes);
        var encoded = new byte[nBytes + DFloat11Format.StreamPadding];
        var sm = new byte[n];
        var positions = new uint[nBlocks + 1];
        var gapValues = new byte[nBlocks * DFloat11Format.ThreadsPerBlock];
        int nextThread = 0, nextBlock = 0;
        long bitPos = 0;
        ulong acc = 0; // pending bits, right-aligned
        int accBits = 0;
        int outByte = 0;
        for (int i = 0; i < n; i++)
        {
            ushort bits = values[i].Bits;
            sm[i] = DFloat11Format.SignMantissa(bits);
            int exp = DFloat11Format.Exponent(bits);
            int s = DFloat11Format.SymbolOf(exp);
            // Record the first code starting in each new thread chunk / block (DFloat11 encode()).
            long chunk = bitPos >> 6;
            while (nextThread <= chunk)
            {
                gapValues[nextThread] = (byte)(nextThread == chunk ? bitPos & 63 : 0);
                nextThread++;
            }
            long block = bitPos / DFloat11Format.BlockBits;
            while (nextBlock <= block) positions[nextBlock++] = (uint)i;
            int len = lens[s];
            acc = (acc << len) | codes[s];
            accBits += len;
            if (s == DFloat11Format.EscapeSymbol)
            {
                acc = (acc << DFloat11Format.EscapeBits) | (uint)exp;
                accBits += DFloat11Format.EscapeBits;
                len += DFloat11Format.EscapeBits;
            }
            bitPos += len;
            while (accBits >= 8)
            {
                accBits -= 8;
                encoded[outByte++] = (byte)(acc >> accBits);
            }
            acc &= (1UL << accBits) - 1;
        }
        if (accBits > 0) encoded[outByte++] = (byte)(acc << (8 - accBits));
        while (nextBlock <= nBlocks) positions[nextBlock++] = (uint)n;
        // Blocks or threads with no code start (only possible in the stream's last 4 bytes) keep gap 0 and position n.
        var gaps = new byte[nBlocks * DFloat11Format.GapBytesPerBlock];
        for (int t = 0; t < gapValues.Length; t++)
        {
            int bit = t * DFloat11Format.GapBits;
            int v = gapValues[t] << 11 >> (bit & 7); // 5 bits placed at the top of a 16-bit big-endian window
            gaps[bit >> 3] |= (byte)(v >> 8);
            if ((bit >> 3) + 1 < gaps.Length) gaps[(bit >> 3) + 1] |= (byte)v;
        }
        return DFloat11Tensor.CreateTrusted(shape, luts, encoded, nBytes, sm, positions, gaps, code);
    }
}
