using System.Buffers.Binary;

namespace Kernels.Quant.DFloat11;

/// <summary>One DFloat11-compressed bf16 tensor: LUTs, exponent bitstream, raw sign/mantissa bytes and the block metadata.</summary>
/// <remarks>
/// <para>Layout (DFloat11 v0.5, see <see cref="DFloat11Format"/>):</para>
/// <code>
/// Luts            byte[(P+1)·256]  P decode tables + code-length row (HuffmanCode.BuildLuts)
/// EncodedExponents byte[nBytes]    exponent codes, MSB-first, final byte zero-padded (no EOF symbol)
/// SignMantissa    byte[n]          (bits &gt;&gt; 8 &amp; 0x80) | (bits &amp; 0x7F), element order
/// OutputPositions uint[nBlocks+1]  first element whose code starts in block b; last = n
/// Gaps            byte[320·nBlocks] per thread the bit offset (0–31) of its first code, 5 bits, MSB-first
/// nBlocks = ceil(nBytes / 4096)
/// </code>
/// <para>Construction validates every size and the LUTs and copies the arrays, so decoders may trust the structure. The bits
/// themselves are not trusted: decoders bound every read and report a stream that does not line up with the block metadata
/// as <see cref="InvalidDataException"/>.</para>
/// <para>Immutable and safe to share across threads (the derived <see cref="DecodeTable"/> is built lazily; a race only
/// builds it twice).</para>
/// </remarks>
public sealed class DFloat11Tensor
{
    private readonly byte[] _luts;
    private readonly byte[] _encoded; // nBytes + StreamPadding zero bytes
    private readonly byte[] _signMantissa;
    private readonly uint[] _outputPositions;
    private readonly byte[] _gaps;
    private DFloat11DecodeTable? _table;

    private DFloat11Tensor(TensorShape shape, byte[] luts, byte[] encodedPadded, int encodedBytes, byte[] signMantissa, uint[] outputPositions, byte[] gaps, HuffmanCode code)
    {
        Shape = shape;
        _luts = luts;
        _encoded = encodedPadded;
        EncodedByteCount = encodedBytes;
        _signMantissa = signMantissa;
        _outputPositions = outputPositions;
        _gaps = gaps;
        Code = code;
    }

    /// <summary>The tensor's logical shape (row-major).</summary>
    public TensorShape Shape { get; }

    /// <summary>Number of bf16 elements.</summary>
    public int ElementCount => _signMantissa.Length;

    /// <summary>The hierarchical LUTs, <c>(P + 1)·256</c> bytes.</summary>
    public ReadOnlySpan<byte> Luts => _luts;

    /// <summary>The exponent bitstream.</summary>
    public ReadOnlySpan<byte> EncodedExponents => _encoded.AsSpan(0, EncodedByteCount);

    /// <summary>The exponent bitstream followed by <see cref="DFloat11Format.StreamPadding"/> zero bytes (for decoders).</summary>
    public ReadOnlySpan<byte> PaddedEncodedExponents => _encoded;

    /// <summary>Length of the exponent bitstream in bytes.</summary>
    public int EncodedByteCount { get; }

    /// <summary>The raw sign/mantissa bytes, one per element.</summary>
    public ReadOnlySpan<byte> SignMantissa => _signMantissa;

    /// <summary>Per block, the first element decoded by it; the last entry is <see cref="ElementCount"/>.</summary>
    public ReadOnlySpan<uint> OutputPositions => _outputPositions;

    /// <summary>The packed 5-bit gaps, 320 bytes per block.</summary>
    public ReadOnlySpan<byte> Gaps => _gaps;

    /// <summary>Number of decoder blocks.</summary>
    public int BlockCount => _outputPositions.Length - 1;

    /// <summary>The Huffman code the LUTs decode.</summary>
    public HuffmanCode Code { get; }

    /// <summary>Whether any exponent uses the escape (so DFloat11's own CUDA kernel could not decode this tensor).</summary>
    public bool UsesEscape => Code.Lengths[DFloat11Format.EscapeSymbol] != 0;

    /// <summary>Total stored bytes: LUTs + stream + sign/mantissa + 4·|output positions| + gaps.</summary>
    public long CompressedBytes => (long)_luts.Length + EncodedByteCount + _signMantissa.Length + 4L * _outputPositions.Length + _gaps.Length;

    /// <summary>Compressed size as a fraction of the bf16 size (2 bytes per element); 0 for an empty tensor.</summary>
    public double CompressionRatio => ElementCount == 0 ? 0 : CompressedBytes / (2.0 * ElementCount);

    /// <summary>The decoder's derived lookup tables (built once, on first use).</summary>
    public DFloat11DecodeTable DecodeTable => _table ??= new DFloat11DecodeTable(_luts);

    /// <summary>Bit offset (0–31) of the first code of decoder thread <paramref name="thread"/>.</summary>
    /// <param name="thread">Global thread index, &lt; 512·<see cref="BlockCount"/>.</param>
    /// <returns>The gap.</returns>
    public int Gap(int thread) => ReadGap(_gaps, thread);

    /// <summary>Reads packed 5-bit gap <paramref name="thread"/> (DFloat11: big-endian 16-bit window, MSB-first).</summary>
    /// <param name="gaps">Packed gaps.</param>
    /// <param name="thread">Entry index.</param>
    /// <returns>The gap, 0–31.</returns>
    public static int ReadGap(ReadOnlySpan<byte> gaps, int thread)
    {
        int bit = thread * DFloat11Format.GapBits;
        int b = bit >> 3;
        int v = gaps[b] << 8 | (b + 1 < gaps.Length ? gaps[b + 1] : 0);
        return (v >> (11 - (bit & 7))) & 31;
    }

    /// <summary>Validates the parts and builds a tensor (copying every array).</summary>
    /// <param name="shape">Logical shape; its element count is n.</param>
    /// <param name="luts">The LUTs.</param>
    /// <param name="encodedExponents">The bitstream.</param>
    /// <param name="signMantissa">n sign/mantissa bytes.</param>
    /// <param name="outputPositions">nBlocks + 1 positions.</param>
    /// <param name="gaps">320·nBlocks packed gap bytes.</param>
    /// <returns>The tensor.</returns>
    /// <exception cref="InvalidDataException">Any size, the LUTs or the positions are inconsistent (the message names which).</exception>
    public static DFloat11Tensor Create(TensorShape shape, ReadOnlySpan<byte> luts, ReadOnlySpan<byte> encodedExponents,
        ReadOnlySpan<byte> signMantissa, ReadOnlySpan<uint> outputPositions, ReadOnlySpan<byte> gaps)
    {
        ArgumentNullException.ThrowIfNull(shape);
        HuffmanCode code = HuffmanCode.FromLuts(luts);
        long n = shape.ElementCount;
        if (n > int.MaxValue) throw new InvalidDataException($"shape {shape} has {n} elements; at most {int.MaxValue} supported.");
        if (signMantissa.Length != n)
            throw new InvalidDataException($"sign/mantissa has {signMantissa.Length} bytes; shape {shape} needs {n}.");
        int nBytes = encodedExponents.Length;
        int nBlocks = DFloat11Format.BlockCount(nBytes);
        if (n > 0 && nBytes == 0) throw new InvalidDataException($"{n} elements but an empty exponent stream.");
        if ((long)nBytes * 8 > ((long)n + 2) * DFloat11Format.MaxTokenBits)
            throw new InvalidDataException($"exponent stream of {nBytes} bytes is longer than {n} codes (plus an EOF) of ≤ 32 bits.");
        if (outputPositions.Length != nBlocks + 1)
            throw new InvalidDataException($"output positions have {outputPositions.Length} entries; {nBytes} stream bytes make {nBlocks} blocks, so {nBlocks + 1} are required.");
        if ((long)gaps.Length != (long)nBlocks * DFloat11Format.GapBytesPerBlock)
            throw new InvalidDataException($"gaps have {gaps.Length} bytes; {nBlocks} blocks need {nBlocks * DFloat11Format.GapBytesPerBlock}.");
        if (outputPositions[0] != 0) throw new InvalidDataException($"output position 0 is {outputPositions[0]}; must be 0.");
        if (outputPositions[nBlocks] != n) throw new InvalidDataException($"last output position is {outputPositions[nBlocks]}; must equal the element count {n}.");
        for (int b = 0; b < nBlocks; b++)
        {
            long count = (long)outputPositions[b + 1] - outputPositions[b];
            if (count < 0 || count > DFloat11Format.BlockBits)
                throw new InvalidDataException($"block {b} claims {count} elements (output positions {outputPositions[b]}..{outputPositions[b + 1]}); 0..{DFloat11Format.BlockBits} possible.");
        }
        var padded = new byte[nBytes + DFloat11Format.StreamPadding];
        encodedExponents.CopyTo(padded);
        return new DFloat11Tensor(shape, luts.ToArray(), padded, nBytes, signMantissa.ToArray(), outputPositions.ToArray(), gaps.ToArray(), code);
    }

    internal static DFloat11Tensor CreateTrusted(TensorShape shape, byte[] luts, byte[] encodedPadded, int encodedBytes, byte[] signMantissa, uint[] outputPositions, byte[] gaps, HuffmanCode code)
        => new(shape, luts, encodedPadded, encodedBytes, signMantissa, outputPositions, gaps, code);

    /// <summary>Bit position where block <paramref name="block"/>'s first code starts.</summary>
    /// <param name="block">Block index.</param>
    /// <returns><c>block·32768 + gap(512·block)</c>.</returns>
    public long BlockStartBit(int block) => (long)block * DFloat11Format.BlockBits + Gap(block * DFloat11Format.ThreadsPerBlock);

    /// <summary>Reads the output positions from their little-endian byte form (DFloat11 stores a uint8 view).</summary>
    /// <param name="bytes">4·count bytes.</param>
    /// <returns>The positions.</returns>
    /// <exception cref="InvalidDataException">The length is not a multiple of 4.</exception>
    public static uint[] PositionsFromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length % 4 != 0) throw new InvalidDataException($"output positions are {bytes.Length} bytes; not a multiple of 4.");
        var p = new uint[bytes.Length / 4];
        for (int i = 0; i < p.Length; i++) p[i] = BinaryPrimitives.ReadUInt32LittleEndian(bytes.Slice(4 * i));
        return p;
    }
}
