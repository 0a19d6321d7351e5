namespace Kernels.Quant.DFloat11;

/// <summary>The constants of the DFloat11 layout (LeanModels/DFloat11 v0.5 kernel configuration).</summary>
/// <remarks>
/// <para>A bf16 value <c>s eeeeeeee mmmmmmm</c> is split into a raw sign/mantissa byte <c>(s &lt;&lt; 7) | mmmmmmm</c> and the
/// 8-bit exponent, which is Huffman coded MSB-first into one bitstream. The bitstream is cut into threads of
/// <see cref="BytesPerThread"/> bytes and blocks of <see cref="ThreadsPerBlock"/> threads (<see cref="BlockBytes"/> bytes).
/// Thread t decodes the codes whose first bit lies in its bytes, starting at a 5-bit <c>gap</c>; block b's first code is
/// element <c>output_positions[b]</c>. Everything decodes independently per block.</para>
/// <para>Escape (our extension, see docs/dfloat11.md): DFloat11's LUT values 240–255 are table pointers, so a symbol must be
/// &lt; 240. Exponents 0–238 are their own symbol; exponents 239–255 (|x| ≥ 2¹¹², ±Inf, NaN) are coded as the symbol
/// <see cref="EscapeSymbol"/> followed by the 8 raw exponent bits. Streams without escapes are exactly DFloat11's.</para>
/// </remarks>
public static class DFloat11Format
{
    /// <summary>Encoded bytes owned by one decoder thread.</summary>
    public const int BytesPerThread = 8;

    /// <summary>Threads per decoder block.</summary>
    public const int ThreadsPerBlock = 512;

    /// <summary>Encoded bytes per block: 4096.</summary>
    public const int BlockBytes = BytesPerThread * ThreadsPerBlock;

    /// <summary>Encoded bits per block: 32768, also the most codes that can start in one block.</summary>
    public const int BlockBits = BlockBytes * 8;

    /// <summary>Bits per packed gap entry.</summary>
    public const int GapBits = 5;

    /// <summary>Bytes of packed gaps per block: 512 · 5 / 8 = 320.</summary>
    public const int GapBytesPerBlock = ThreadsPerBlock * GapBits / 8;

    /// <summary>The longest token (code plus escape bits) any decoder accepts, as in DFloat11.</summary>
    public const int MaxTokenBits = 32;

    /// <summary>The longest Huffman code our encoder emits (leaves room for the 8 escape bits within 32).</summary>
    public const int EncoderMaxCodeLength = 24;

    /// <summary>Symbols ≥ this value in a LUT are pointers to sub-tables (<c>256 − value</c>).</summary>
    public const int FirstPointer = 240;

    /// <summary>The escape symbol: its code is followed by 8 raw exponent bits. Exponents ≥ 239 always use it.</summary>
    public const int EscapeSymbol = 239;

    /// <summary>Raw bits after the escape code.</summary>
    public const int EscapeBits = 8;

    /// <summary>The most LUT rows: the root, 16 sub-tables (pointers 240–255) and the code-length row.</summary>
    public const int MaxLutRows = 18;

    /// <summary>Extra zero bytes kept after the encoded stream so a decoder may load 8 bytes at any byte offset ≤ its length.</summary>
    public const int StreamPadding = 16;

    /// <summary>The exponent field of a bf16 bit pattern.</summary>
    /// <param name="bits">bf16 bits.</param>
    /// <returns><c>(bits &gt;&gt; 7) &amp; 0xFF</c>.</returns>
    public static int Exponent(ushort bits) => (bits >> 7) & 0xFF;

    /// <summary>The sign/mantissa byte of a bf16 bit pattern.</summary>
    /// <param name="bits">bf16 bits.</param>
    /// <returns><c>(bits &gt;&gt; 8 &amp; 0x80) | (bits &amp; 0x7F)</c>.</returns>
    public static byte SignMantissa(ushort bits) => (byte)(((bits >> 8) & 0x80) | (bits & 0x7F));

    /// <summary>Reassembles a bf16 bit pattern.</summary>
    /// <param name="signMantissa">The sign/mantissa byte.</param>
    /// <param name="exponent">The 8-bit exponent.</param>
    /// <returns><c>(sm &amp; 0x80) &lt;&lt; 8 | exp &lt;&lt; 7 | (sm &amp; 0x7F)</c>.</returns>
    public static ushort Combine(byte signMantissa, int exponent) =>
        (ushort)(((signMantissa & 0x80) << 8) | ((exponent & 0xFF) << 7) | (signMantissa & 0x7F));

    /// <summary>The Huffman symbol an exponent is coded with.</summary>
    /// <param name="exponent">The 8-bit exponent.</param>
    /// <returns>The exponent itself below 239, else <see cref="EscapeSymbol"/>.</returns>
    public static int SymbolOf(int exponent) => exponent < EscapeSymbol ? exponent : EscapeSymbol;

    /// <summary>Number of blocks for an encoded stream of <paramref name="encodedBytes"/> bytes.</summary>
    /// <param name="encodedBytes">Stream length.</param>
    /// <returns><c>ceil(encodedBytes / 4096)</c>.</returns>
    public static int BlockCount(long encodedBytes) => (int)((encodedBytes + BlockBytes - 1) / BlockBytes);
}
