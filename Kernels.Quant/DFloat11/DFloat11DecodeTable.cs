using System.Runtime.CompilerServices;

namespace Kernels.Quant.DFloat11;

/// <summary>Lookup tables derived once from a tensor's (validated) LUTs for the fast CPU decoder.</summary>
/// <remarks>
/// <para><see cref="Multi"/> is indexed by the next <see cref="PrimaryBits"/> bits of the stream and decodes up to three
/// whole codes at once (16 KiB, L1-resident):</para>
/// <code>
/// bits  0..5   total bits consumed by those codes (first, so a 64-bit shift can use the entry as its count: shlx masks to 6 bits)
/// bits  6..7   count of whole codes in the 12 bits
/// bits  8..31  symbols s0 | s1 &lt;&lt; 8 | s2 &lt;&lt; 16 (unused bytes 0)
/// 0            the first code is longer than 12 bits or an escape: slow path
/// </code>
/// <para>The slow path walks DFloat11's hierarchical LUTs (<see cref="DecodeOne"/>). Both give the same answer as
/// <see cref="Reference.DFloat11Reference"/> because <see cref="HuffmanCode.FromLuts"/> only accepts LUTs that form a
/// prefix-code decoder.</para>
/// </remarks>
public sealed class DFloat11DecodeTable
{
    /// <summary>Bits indexing <see cref="Multi"/>.</summary>
    public const int PrimaryBits = 12;

    /// <summary>Most codes one <see cref="Multi"/> entry decodes.</summary>
    public const int MaxCodesPerEntry = 3;

    private readonly uint[] _multi;
    private readonly byte[] _luts;

    internal DFloat11DecodeTable(byte[] luts)
    {
        _luts = luts;
        LengthRow = luts.Length - 256;
        _multi = new uint[1 << PrimaryBits];
        for (int v = 0; v < _multi.Length; v++)
        {
            ulong w = (ulong)v << (64 - PrimaryBits);
            int consumed = 0, count = 0;
            uint syms = 0;
            while (count < MaxCodesPerEntry)
            {
                int s = Lookup(luts, w << consumed);
                int len = luts[LengthRow + s];
                if (s == DFloat11Format.EscapeSymbol || consumed + len > PrimaryBits) break;
                syms |= (uint)s << (8 * count);
                consumed += len;
                count++;
            }
            _multi[v] = count == 0 ? 0 : (uint)consumed | (uint)count << 6 | syms << 8;
        }
    }

    /// <summary>The multi-code primary table (see remarks).</summary>
    public ReadOnlySpan<uint> Multi => _multi;

    /// <summary>DFloat11's LUTs (tables then the length row).</summary>
    public ReadOnlySpan<byte> Luts => _luts;

    /// <summary>Byte offset of the code-length row in <see cref="Luts"/>.</summary>
    public int LengthRow { get; }

    /// <summary>Decodes one token from a 64-bit MSB-first window holding at least 32 valid bits.</summary>
    /// <param name="luts">The LUTs.</param>
    /// <param name="lengthRow">Offset of the length row.</param>
    /// <param name="window">Stream bits, next bit in bit 63.</param>
    /// <param name="bits">Bits consumed (code plus 8 for an escape).</param>
    /// <returns>The exponent.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int DecodeOne(ReadOnlySpan<byte> luts, int lengthRow, ulong window, out int bits)
    {
        int s = Lookup(luts, window);
        int len = luts[lengthRow + s];
        if (s == DFloat11Format.EscapeSymbol)
        {
            bits = len + DFloat11Format.EscapeBits;
            return (int)(window << len >> 56);
        }
        bits = len;
        return s;
    }

    /// <summary>The symbol DFloat11's LUTs give for a window (at most four table levels).</summary>
    /// <param name="luts">The LUTs.</param>
    /// <param name="window">Stream bits, next bit in bit 63.</param>
    /// <returns>The symbol.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Lookup(ReadOnlySpan<byte> luts, ulong window)
    {
        int d = luts[(int)(window >> 56)];
        for (int shift = 48; d >= DFloat11Format.FirstPointer && shift >= 32; shift -= 8)
            d = luts[(256 - d) * 256 + (int)((window >> shift) & 0xFF)];
        return d;
    }
}
