using System.Globalization;

namespace Kernels.Quant.DFloat11;

/// <summary>A prefix code over the 256 byte symbols: per symbol a length (0 = unused) and an MSB-first code.</summary>
/// <remarks>
/// <para>Built from a histogram as a length-limited canonical Huffman code (<see cref="FromFrequencies"/>), or recovered from
/// DFloat11's hierarchical lookup tables (<see cref="FromLuts"/>), which validates them. <see cref="BuildLuts"/> writes the
/// tables in DFloat11's exact layout (LeanModels/DFloat11 <c>get_luts</c>): rows of 256 bytes, row 0 the root, then one row
/// per code prefix of 8, 16 or 24 bits sorted by length, and a last row holding the code length per symbol.
/// A table entry is a symbol (&lt; 240), or a pointer <c>256 − row</c> (240–255) to the table for the prefix extended by
/// that byte. A symbol of length ℓ in a table of prefix depth 8q covers the <c>2^(8q+8−ℓ)</c> consecutive bytes starting at
/// its remaining bits, left-justified.</para>
/// </remarks>
public sealed class HuffmanCode
{
    private readonly byte[] _lengths;
    private readonly uint[] _codes;

    private HuffmanCode(byte[] lengths, uint[] codes)
    {
        _lengths = lengths;
        _codes = codes;
    }

    /// <summary>Code length per symbol (0 when the symbol has no code).</summary>
    public ReadOnlySpan<byte> Lengths => _lengths;

    /// <summary>The code per symbol, right-aligned: its <c>Lengths[s]</c> low bits, sent MSB first.</summary>
    public ReadOnlySpan<uint> Codes => _codes;

    /// <summary>The longest code length.</summary>
    public int MaxLength
    {
        get
        {
            int m = 0;
            foreach (byte l in _lengths) m = Math.Max(m, l);
            return m;
        }
    }

    /// <summary>Builds a length-limited canonical Huffman code from symbol counts.</summary>
    /// <param name="frequencies">256 counts (symbols ≥ 240 must be zero: they cannot be coded in DFloat11's tables).</param>
    /// <param name="maxLength">The longest allowed code, 8–32.</param>
    /// <returns>The code. A histogram with fewer than two used symbols gets a dummy second symbol so the code is complete.</returns>
    /// <remarks>Lengths come from a Huffman tree; codes longer than <paramref name="maxLength"/> are shortened with the
    /// JPEG (ITU T.81 Annex K.3) count adjustment, and lengths are handed out to symbols in decreasing frequency order.
    /// Codes are canonical: ordered by (length, symbol), each the previous plus one, shifted to its length.</remarks>
    /// <exception cref="ArgumentException">Wrong length, a count for a symbol ≥ 240, or <paramref name="maxLength"/> outside 8–32.</exception>
    public static HuffmanCode FromFrequencies(ReadOnlySpan<long> frequencies, int maxLength = DFloat11Format.EncoderMaxCodeLength)
    {
        ThrowHelper.ThrowIfLengthMismatch(nameof(frequencies), frequencies.Length, 256);
        if (maxLength is < 8 or > DFloat11Format.MaxTokenBits)
            ThrowHelper.Argument(nameof(maxLength), $"maxLength must be 8..32; got {maxLength}.");
        var freq = new long[256];
        int used = 0;
        for (int s = 0; s < 256; s++)
        {
            if (frequencies[s] < 0) ThrowHelper.Argument(nameof(frequencies), $"frequency of symbol {s} is negative.");
            if (frequencies[s] > 0 && s >= DFloat11Format.FirstPointer)
                ThrowHelper.Argument(nameof(frequencies), $"symbol {s} ≥ 240 cannot be coded (LUT values 240–255 are pointers).");
            freq[s] = frequencies[s];
            if (freq[s] > 0) used++;
        }
        // A single-symbol (or empty) histogram: add dummies so the code is a complete 1-bit code.
        for (int s = 0; used < 2; s++)
        {
            if (freq[s] == 0)
            {
                freq[s] = 1;
                used++;
            }
        }
        return FromLengths(LimitedLengths(freq, maxLength));
    }

    /// <summary>Builds the canonical code for given lengths.</summary>
    /// <param name="lengths">256 lengths, 0 = unused, else 1–32.</param>
    /// <returns>The canonical code.</returns>
    /// <exception cref="ArgumentException">A length above 32, or lengths violating the Kraft inequality.</exception>
    public static HuffmanCode FromLengths(ReadOnlySpan<byte> lengths)
    {
        ThrowHelper.ThrowIfLengthMismatch(nameof(lengths), lengths.Length, 256);
        var lens = lengths.ToArray();
        var codes = new uint[256];
        ulong code = 0;
        int prevLen = 0;
        for (int len = 1; len <= DFloat11Format.MaxTokenBits; len++)
        {
            for (int s = 0; s < 256; s++)
            {
                if (lens[s] != len) continue;
                code <<= len - prevLen;
                prevLen = len;
                if (code >= 1UL << len) ThrowHelper.Argument(nameof(lengths), "code lengths violate the Kraft inequality.");
                codes[s] = (uint)code;
                code++;
            }
        }
        foreach (byte l in lens)
            if (l > DFloat11Format.MaxTokenBits) ThrowHelper.Argument(nameof(lengths), $"code length {l} exceeds 32.");
        return new HuffmanCode(lens, codes);
    }

    /// <summary>Writes DFloat11's hierarchical LUTs for this code.</summary>
    /// <returns><c>(P + 1) · 256</c> bytes: P decode tables, then the code-length row.</returns>
    /// <exception cref="InvalidOperationException">The code needs more than 16 sub-tables or uses a symbol ≥ 240.</exception>
    public byte[] BuildLuts()
    {
        // Prefixes: '' and, for every code, each whole-byte prefix shorter than the code. Sorted by length (stable).
        var prefixes = new List<(int Bits, uint Value)> { (0, 0) };
        var index = new Dictionary<(int, uint), int> { [(0, 0u)] = 0 };
        for (int depth = 8; depth < DFloat11Format.MaxTokenBits; depth += 8)
        {
            for (int s = 0; s < 256; s++)
            {
                int l = _lengths[s];
                if (l <= depth) continue;
                var key = (depth, _codes[s] >> (l - depth));
                if (index.TryAdd(key, prefixes.Count)) prefixes.Add(key);
            }
        }
        int p = prefixes.Count;
        if (p > DFloat11Format.MaxLutRows - 1)
            throw new InvalidOperationException($"the code needs {p - 1} sub-tables; DFloat11's LUT format allows 16.");
        var luts = new byte[(p + 1) * 256];
        var assigned = new bool[p * 256];
        for (int t = 0; t < p; t++)
        {
            var (depth, prefix) = prefixes[t];
            Span<byte> row = luts.AsSpan(t * 256, 256);
            for (int s = 0; s < 256; s++)
            {
                int l = _lengths[s];
                if (l <= depth || (depth > 0 && _codes[s] >> (l - depth) != prefix)) continue;
                if (s >= DFloat11Format.FirstPointer) throw new InvalidOperationException($"symbol {s} ≥ 240 cannot be placed in a LUT.");
                if (l <= depth + 8)
                {
                    int start = (int)((_codes[s] << (depth + 8 - l)) & 0xFF);
                    row.Slice(start, 1 << (depth + 8 - l)).Fill((byte)s);
                    assigned.AsSpan(t * 256 + start, 1 << (depth + 8 - l)).Fill(true);
                }
                else
                {
                    int b = (int)((_codes[s] >> (l - depth - 8)) & 0xFF);
                    row[b] = (byte)(256 - index[(depth + 8, _codes[s] >> (l - depth - 8))]);
                    assigned[t * 256 + b] = true;
                }
            }
        }
        // Unused code space (incomplete codes only) inherits the previous entry, as DFloat11's get_luts does.
        for (int t = 0; t < p; t++)
            for (int i = 1; i < 256; i++)
                if (!assigned[t * 256 + i]) luts[t * 256 + i] = luts[t * 256 + i - 1];
        _lengths.CopyTo(luts.AsSpan(p * 256, 256));
        return luts;
    }

    /// <summary>Recovers and validates the code a set of DFloat11 LUTs decodes.</summary>
    /// <param name="luts"><c>(P + 1) · 256</c> bytes in DFloat11's layout.</param>
    /// <returns>The code (symbols reachable from the root table).</returns>
    /// <remarks>Entries repeating the previous symbol past its run are accepted as fill over unused code space (DFloat11 fills
    /// its EOF code's range that way); such bits decode as that symbol in the LUT decoders and as no code in the reference.</remarks>
    /// <exception cref="InvalidDataException">The tables are not a prefix-code decoder: a pointer to a missing or
    /// earlier table, a depth beyond 32 bits, a symbol whose length does not match its table, a misaligned or broken symbol
    /// run, or two different codes for one symbol. The message names the row and byte.</exception>
    public static HuffmanCode FromLuts(ReadOnlySpan<byte> luts)
    {
        if (luts.Length % 256 != 0 || luts.Length < 512 || luts.Length > DFloat11Format.MaxLutRows * 256)
            throw new InvalidDataException($"LUTs are {luts.Length} bytes; expected (P + 1)·256 with 1 ≤ P ≤ 17.");
        int p = luts.Length / 256 - 1;
        ReadOnlySpan<byte> lens = luts.Slice(p * 256, 256);
        var depth = new int[p];
        var prefix = new uint[p];
        var reached = new bool[p];
        reached[0] = true;
        var lengths = new byte[256];
        var codes = new uint[256];
        for (int t = 0; t < p; t++)
        {
            if (!reached[t]) continue;
            int d = depth[t];
            ReadOnlySpan<byte> row = luts.Slice(t * 256, 256);
            int i = 0, previous = -1;
            while (i < 256)
            {
                int v = row[i];
                if (v == previous)
                {
                    // Fill-forward over unused code space (DFloat11 fills its EOF code's bytes with the previous symbol).
                    i++;
                    continue;
                }
                previous = v;
                if (v >= DFloat11Format.FirstPointer)
                {
                    int target = 256 - v;
                    if (target <= t || target >= p || d + 8 >= DFloat11Format.MaxTokenBits || reached[target])
                        throw new InvalidDataException($"LUT row {t} byte {i}: pointer {v} to row {target} is invalid (rows {t + 1}..{p - 1}, depth < 32 bits, each row reached once).");
                    reached[target] = true;
                    depth[target] = d + 8;
                    prefix[target] = (prefix[t] << 8) | (uint)i;
                    i++;
                    continue;
                }
                int l = lens[v];
                if (l <= d || l > d + 8)
                    throw new InvalidDataException($"LUT row {t} byte {i}: symbol {v} has length {l}, outside ({d}, {d + 8}] for this row.");
                int span = 1 << (d + 8 - l);
                if (i % span != 0)
                    throw new InvalidDataException($"LUT row {t} byte {i}: symbol {v} (length {l}) run is misaligned.");
                for (int j = 1; j < span; j++)
                    if (row[i + j] != v) throw new InvalidDataException($"LUT row {t} byte {i + j}: expected symbol {v} to fill its run of {span}.");
                uint code = (prefix[t] << (l - d)) | (uint)(i >> (d + 8 - l));
                if (lengths[v] != 0)
                    throw new InvalidDataException($"LUT row {t} byte {i}: symbol {v} appears twice.");
                lengths[v] = (byte)l;
                codes[v] = code;
                i += span;
            }
        }
        for (int t = 0; t < p; t++)
            if (!reached[t]) throw new InvalidDataException($"LUT row {t} is not reachable from the root.");
        if (lengths[DFloat11Format.EscapeSymbol] + DFloat11Format.EscapeBits > DFloat11Format.MaxTokenBits)
            throw new InvalidDataException($"escape symbol length {lengths[DFloat11Format.EscapeSymbol]} + 8 raw bits exceeds 32.");
        for (int s = 0; s < 256; s++)
            if (lengths[s] == 0 && lens[s] != 0)
                throw new InvalidDataException($"LUT length row gives symbol {s} length {lens[s]} but no table decodes it.");
        // Fill-forward may only cover unused code space of one code of the longest length (DFloat11's EOF, always one
        // of the two deepest leaves), or none. A wrong entry in the length row (a code made longer than its LUT run)
        // leaves a larger hole, which the table walk would silently decode as that symbol while the code rejects it.
        ulong kraft = 0;
        int maxLength = 0;
        for (int s = 0; s < 256; s++)
        {
            if (lengths[s] == 0) continue;
            kraft += 1UL << (DFloat11Format.MaxTokenBits - lengths[s]);
            maxLength = Math.Max(maxLength, lengths[s]);
        }
        ulong unused = (1UL << DFloat11Format.MaxTokenBits) - kraft;
        if (unused != 0 && unused != 1UL << (DFloat11Format.MaxTokenBits - maxLength))
            throw new InvalidDataException($"LUT length row (offset {p * 256}) leaves {unused}/2^32 of the code space unused; at most one code of the longest length ({maxLength} bits) may be unused.");
        return new HuffmanCode(lengths, codes);
    }

    /// <summary>Average code length in bits for a histogram (escape bits not included).</summary>
    /// <param name="frequencies">256 counts.</param>
    /// <returns>Σ count·length / Σ count, or 0 for an empty histogram.</returns>
    public double AverageLength(ReadOnlySpan<long> frequencies)
    {
        double bits = 0, total = 0;
        for (int s = 0; s < 256; s++)
        {
            bits += (double)frequencies[s] * _lengths[s];
            total += frequencies[s];
        }
        return total == 0 ? 0 : bits / total;
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        var parts = new List<string>();
        for (int s = 0; s < 256; s++)
        {
            if (_lengths[s] == 0) continue;
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{s}:{Convert.ToString(_codes[s], 2).PadLeft(_lengths[s], '0')}"));
        }
        return string.Join(' ', parts);
    }

    private static byte[] LimitedLengths(long[] freq, int maxLength)
    {
        // Huffman tree over the used symbols (ties broken by node id for determinism).
        var queue = new PriorityQueue<int, (long, int)>();
        int nodes = 256;
        var parent = new int[512];
        for (int s = 0; s < 256; s++)
            if (freq[s] > 0) queue.Enqueue(s, (freq[s], s));
        var weight = new long[512];
        Array.Copy(freq, weight, 256);
        while (queue.Count > 1)
        {
            queue.TryDequeue(out int a, out var pa);
            queue.TryDequeue(out int b, out var pb);
            int n = nodes++;
            weight[n] = pa.Item1 + pb.Item1;
            parent[a] = n;
            parent[b] = n;
            queue.Enqueue(n, (weight[n], n));
        }
        int root = nodes - 1;
        var depthOf = new int[256];
        var bits = new int[257];
        for (int s = 0; s < 256; s++)
        {
            if (freq[s] == 0) continue;
            int d = 0;
            for (int x = s; x != root; x = parent[x]) d++;
            depthOf[s] = d;
            bits[d]++;
        }
        // JPEG Annex K.3: move pairs of over-long leaves up, splitting a shorter leaf.
        for (int i = 256; i > maxLength; i--)
        {
            while (bits[i] > 0)
            {
                int j = i - 2;
                while (bits[j] == 0) j--;
                bits[i] -= 2;
                bits[i - 1]++;
                bits[j + 1] += 2;
                bits[j]--;
            }
        }
        // Hand the lengths out, shortest first, to symbols by decreasing frequency (ties: smaller symbol).
        var order = Enumerable.Range(0, 256).Where(s => freq[s] > 0).OrderByDescending(s => freq[s]).ThenBy(s => s).ToArray();
        var lengths = new byte[256];
        int k = 0;
        for (int len = 1; len <= maxLength; len++)
            for (int c = 0; c < bits[len]; c++) lengths[order[k++]] = (byte)len;
        return lengths;
    }
}
