namespace Kernels.Quant.DFloat11.Reference;

/// <summary>The scalar oracle for DFloat11 decoding: a bit-by-bit canonical prefix-code decode of the whole stream.</summary>
/// <remarks>
/// Reads one bit at a time, growing a (length, code) pair until it equals a code of <see cref="DFloat11Tensor.Code"/>
/// (recovered from the LUTs), then appends the exponent (the symbol, or for the escape symbol the next 8 raw bits) and
/// rebuilds <c>(sm &amp; 0x80) &lt;&lt; 8 | exp &lt;&lt; 7 | (sm &amp; 0x7F)</c>. It decodes sequentially from bit 0 and
/// ignores gaps and output positions, so it is independent of the block machinery the fast decoders rely on.
/// Bit-exact by construction.
/// </remarks>
public static class DFloat11Reference
{
    /// <summary>Decodes the whole tensor.</summary>
    /// <param name="tensor">The compressed tensor.</param>
    /// <param name="destination">Exactly <see cref="DFloat11Tensor.ElementCount"/> elements, overwritten.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has the wrong length.</exception>
    /// <exception cref="InvalidDataException">The stream ends before every element was decoded, or holds a bit sequence that is no code.</exception>
    public static void Decode(DFloat11Tensor tensor, Span<BFloat16> destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, tensor.ElementCount);
        ReadOnlySpan<byte> lengths = tensor.Code.Lengths;
        ReadOnlySpan<uint> codes = tensor.Code.Codes;
        // (length, code) → symbol; at most 256 entries.
        var table = new Dictionary<(int, uint), int>();
        for (int s = 0; s < 256; s++)
            if (lengths[s] != 0) table[(lengths[s], codes[s])] = s;
        ReadOnlySpan<byte> stream = tensor.EncodedExponents;
        ReadOnlySpan<byte> sm = tensor.SignMantissa;
        long totalBits = (long)stream.Length * 8;
        long pos = 0;
        for (int i = 0; i < destination.Length; i++)
        {
            int len = 0;
            uint code = 0;
            int symbol;
            while (true)
            {
                if (pos >= totalBits) throw new InvalidDataException($"exponent stream ends at bit {pos} while decoding element {i} of {destination.Length}.");
                code = (code << 1) | Bit(stream, pos++);
                len++;
                if (table.TryGetValue((len, code), out symbol)) break;
                if (len >= DFloat11Format.MaxTokenBits) throw new InvalidDataException($"no code matches the 32 bits before bit {pos} (element {i}).");
            }
            int exponent = symbol;
            if (symbol == DFloat11Format.EscapeSymbol)
            {
                exponent = 0;
                for (int b = 0; b < DFloat11Format.EscapeBits; b++)
                {
                    if (pos >= totalBits) throw new InvalidDataException($"exponent stream ends at bit {pos} inside an escape (element {i}).");
                    exponent = (exponent << 1) | (int)Bit(stream, pos++);
                }
            }
            destination[i] = BFloat16.FromBits(DFloat11Format.Combine(sm[i], exponent));
        }
    }

    /// <summary>Decodes into a new array.</summary>
    /// <param name="tensor">The compressed tensor.</param>
    /// <returns>The bf16 values.</returns>
    /// <exception cref="InvalidDataException">See <see cref="Decode(DFloat11Tensor, Span{BFloat16})"/>.</exception>
    public static BFloat16[] Decode(DFloat11Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var a = new BFloat16[tensor.ElementCount];
        Decode(tensor, a);
        return a;
    }

    private static uint Bit(ReadOnlySpan<byte> stream, long pos) => (uint)(stream[(int)(pos >> 3)] >> (7 - (int)(pos & 7))) & 1;
}
