using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Kernels.Quant.DFloat11;

namespace Kernels.Cpu.DFloat11;

public static unsafe partial class DFloat11Decoder
{
    /// <summary>Everything a block decode reads; pointers pinned by the API layer for the call.</summary>
    internal struct BlockStream
    {
        public byte* Bits;          // encoded stream + StreamPadding zero bytes
        public long BitCount;       // 8 · encoded bytes
        public byte* SignMantissa;
        public uint* Positions;     // nBlocks + 1
        public byte* Gaps;
        public int GapBytes;
        public int BlockCount;
        public uint* Multi;         // DFloat11DecodeTable.Multi
        public byte* Luts;
        public int LutBytes;
        public int LengthRow;
    }

    /// <summary>Bytes of exponent scratch one block needs: its most codes plus the 4-byte slack of the multi-code stores.</summary>
    internal const int BlockScratchBytes = DFloat11Format.BlockBits + 64;

    /// <summary>Loads 64 stream bits starting at <paramref name="bitPos"/>, MSB-first; at least 57 are valid.</summary>
    /// <remarks>Callers keep <c>bitPos ≤ BitCount</c>; the 16 padding bytes make the 8-byte load in bounds.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Window(byte* bits, long bitPos)
    {
        ulong raw = Unsafe.ReadUnaligned<ulong>(bits + (bitPos >> 3));
        // movbe on little-endian hosts; the branch is a JIT-time constant.
        return (BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(raw) : raw) << (int)(bitPos & 7);
    }

    /// <summary>Decodes block <paramref name="block"/>'s exponents into <paramref name="exps"/> (serial Huffman part).</summary>
    /// <returns>The number of exponents (the block's element count), or −1 when the block's codes run past the stream or
    /// do not end where the next block's first code starts (corrupt data).</returns>
    [SkipLocalsInit]
    internal static int DecodeBlockExponents(in BlockStream s, int block, byte* exps)
    {
        int count = BlockCount(s, block);
        long end = DecodeExponents(s, BlockStart(s, block), exps, count);
        return EndsWell(s, block, end) ? count : -1;
    }

    /// <summary>Decodes two blocks' exponents with their Huffman loops interleaved (two independent dependency chains keep
    /// the core busy while each waits on its table load), then finishes each alone.</summary>
    /// <returns>False when either block is corrupt (see <see cref="DecodeBlockExponents"/>).</returns>
    [SkipLocalsInit]
    internal static bool DecodeBlockPairExponents(in BlockStream s, int block, byte* expsA, byte* expsB, out int countA, out int countB)
    {
        countA = BlockCount(s, block);
        countB = BlockCount(s, block + 1);
        long posA = BlockStart(s, block), posB = BlockStart(s, block + 1);
        byte* bits = s.Bits;
        uint* multi = s.Multi;
        long limit = s.BitCount;
        const int Shift = 64 - DFloat11DecodeTable.PrimaryBits;
        const int PerRefill = 4 * DFloat11DecodeTable.MaxCodesPerEntry;
        // Output cursors; the fast loop runs while both blocks have at least 12 codes left (4 lookups × ≤ 3 codes).
        byte* oa = expsA, ob = expsB;
        byte* oaLast = expsA + countA - PerRefill, obLast = expsB + countB - PerRefill;
        uint eA, eB;
        while (oa <= oaLast && ob <= obLast)
        {
            if (posA > limit || posB > limit) return false;
            ulong wa = Window(bits, posA), wb = Window(bits, posB);
            // Four lookups per stream, interleaved: two independent load→shift→index chains. ≤ 48 of ≥ 57 bits used.
            eA = multi[wa >> Shift];
            eB = multi[wb >> Shift];
            if (eA == 0 | eB == 0) goto Slow;
            wa <<= (int)eA; // shlx uses the low 6 bits: the entry's bit count
            wb <<= (int)eB;
            Unsafe.WriteUnaligned(oa, eA >> 8);
            Unsafe.WriteUnaligned(ob, eB >> 8);
            oa += (eA >> 6) & 3;
            ob += (eB >> 6) & 3;
            posA += eA & 63;
            posB += eB & 63;
            eA = multi[wa >> Shift];
            eB = multi[wb >> Shift];
            if (eA == 0 | eB == 0) goto Slow;
            wa <<= (int)eA; // shlx uses the low 6 bits: the entry's bit count
            wb <<= (int)eB;
            Unsafe.WriteUnaligned(oa, eA >> 8);
            Unsafe.WriteUnaligned(ob, eB >> 8);
            oa += (eA >> 6) & 3;
            ob += (eB >> 6) & 3;
            posA += eA & 63;
            posB += eB & 63;
            eA = multi[wa >> Shift];
            eB = multi[wb >> Shift];
            if (eA == 0 | eB == 0) goto Slow;
            wa <<= (int)eA; // shlx uses the low 6 bits: the entry's bit count
            wb <<= (int)eB;
            Unsafe.WriteUnaligned(oa, eA >> 8);
            Unsafe.WriteUnaligned(ob, eB >> 8);
            oa += (eA >> 6) & 3;
            ob += (eB >> 6) & 3;
            posA += eA & 63;
            posB += eB & 63;
            eA = multi[wa >> Shift];
            eB = multi[wb >> Shift];
            if (eA == 0 | eB == 0) goto Slow;
            wa <<= (int)eA; // shlx uses the low 6 bits: the entry's bit count
            wb <<= (int)eB;
            Unsafe.WriteUnaligned(oa, eA >> 8);
            Unsafe.WriteUnaligned(ob, eB >> 8);
            oa += (eA >> 6) & 3;
            ob += (eB >> 6) & 3;
            posA += eA & 63;
            posB += eB & 63;
            continue;
        Slow:
            // A code longer than 12 bits or an escape in either stream (rare): one token via the LUTs, then refill both.
            if (eA == 0)
            {
                if (posA > limit) return false;
                *oa++ = (byte)SlowOne(s, Window(bits, posA), out int n);
                posA += n;
            }
            if (eB == 0)
            {
                if (posB > limit) return false;
                *ob++ = (byte)SlowOne(s, Window(bits, posB), out int n);
                posB += n;
            }
        }
        int pa = (int)(oa - expsA), pb = (int)(ob - expsB);
        long endA = DecodeExponents(s, posA, expsA + pa, countA - pa);
        long endB = DecodeExponents(s, posB, expsB + pb, countB - pb);
        return EndsWell(s, block, endA) && EndsWell(s, block + 1, endB);
    }

    private static int BlockCount(in BlockStream s, int block) => (int)(s.Positions[block + 1] - s.Positions[block]);

    private static long BlockStart(in BlockStream s, int block) =>
        (long)block * DFloat11Format.BlockBits + DFloat11Tensor.ReadGap(new ReadOnlySpan<byte>(s.Gaps, s.GapBytes), block * DFloat11Format.ThreadsPerBlock);

    // Integrity: the last code must end exactly where the next non-empty block's first code starts (or inside the stream).
    private static bool EndsWell(in BlockStream s, int block, long end)
    {
        if (end < 0) return false;
        bool nextHasCodes = block + 1 < s.BlockCount && s.Positions[block + 2] > s.Positions[block + 1];
        return nextHasCodes ? end == BlockStart(s, block + 1) : end <= s.BitCount;
    }

    /// <summary>Decodes <paramref name="count"/> exponents starting at <paramref name="bitPos"/>.</summary>
    /// <returns>The bit position after the last token, or −1 when decoding would read past the stream.</returns>
    /// <remarks>
    /// Hot loop: one 64-bit window per refill and up to four lookups in the 12-bit multi-code table (≤ 3 codes each,
    /// ≤ 48 bits, within the ≥ 57 valid bits), storing 4 bytes per lookup (the slack is overwritten by the next store).
    /// Codes longer than 12 bits, escapes and the last &lt; 12 codes go through the hierarchical LUTs one at a time.
    /// </remarks>
    [SkipLocalsInit]
    internal static long DecodeExponents(in BlockStream s, long bitPos, byte* exps, int count)
    {
        byte* bits = s.Bits;
        uint* multi = s.Multi;
        long limit = s.BitCount;
        int produced = 0;
        while (count - produced >= 4 * DFloat11DecodeTable.MaxCodesPerEntry)
        {
            if (bitPos > limit) return -1;
            ulong w = Window(bits, bitPos);
            int used = 0;
            uint e;
            for (int step = 0; step < 4; step++)
            {
                e = multi[w >> (64 - DFloat11DecodeTable.PrimaryBits)];
                if (e == 0) goto Slow;
                w <<= (int)e; // shlx uses the low 6 bits: the entry's bit count
                Unsafe.WriteUnaligned(exps + produced, e >> 8);
                produced += (int)(e >> 6) & 3;
                used += (int)e & 63;
            }
            bitPos += used;
            continue;
        Slow:
            bitPos += used;
            // The next code is long (> 12 bits) or an escape.
            if (bitPos > limit) return -1;
            exps[produced++] = (byte)SlowOne(s, Window(bits, bitPos), out int n);
            bitPos += n;
        }
        while (produced < count)
        {
            if (bitPos > limit) return -1;
            exps[produced++] = (byte)SlowOne(s, Window(bits, bitPos), out int n);
            bitPos += n;
        }
        return bitPos;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int SlowOne(in BlockStream s, ulong window, out int bits) =>
        DFloat11DecodeTable.DecodeOne(new ReadOnlySpan<byte>(s.Luts, s.LutBytes), s.LengthRow, window, out bits);

    /// <summary>Index of the block holding the code of element <paramref name="element"/> (last block b with
    /// <c>Positions[b] ≤ element &lt; Positions[b+1]</c>).</summary>
    internal static int FindBlock(in BlockStream s, long element)
    {
        int lo = 0, hi = s.BlockCount - 1;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) >> 1;
            if (s.Positions[mid] <= element) lo = mid;
            else hi = mid - 1;
        }
        return lo;
    }
}
