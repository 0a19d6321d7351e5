using ILGPU;
using ILGPU.Runtime;
using Kernels.Quant.DFloat11;

namespace Kernels.Gpu.DFloat11;

/// <summary>ILGPU DFloat11 decoder: DFloat11's two-phase kernel (arXiv 2504.11651, <c>decode.cu</c>), one group per block.</summary>
/// <remarks>
/// <para>Group = 512 threads = one DFloat11 block of 4096 stream bytes. Thread t loads its 8 bytes plus 4 look-ahead bytes,
/// starts at its 5-bit gap and (1) counts the tokens whose first bit lies in its 64 bits; (2) a Blelloch exclusive scan of
/// the counts in shared memory, seeded with <c>output_positions[block]</c>, gives each thread its first output index;
/// (3) it decodes again and writes <c>(sm &amp; 0x80) &lt;&lt; 8 | exp &lt;&lt; 7 | (sm &amp; 0x7F)</c>. LUTs live in shared
/// memory. Escape tokens (symbol 239 + 8 raw exponent bits) are handled in both passes.</para>
/// <para>As in decode.cu, outputs are staged in (dynamic) shared memory and copied out coalesced when the largest block
/// holds at most <see cref="MaxStagedElements"/> elements (typical weights: ~12.6 K); denser streams write straight to
/// global memory. Every write is clipped to <c>[output_positions[b], min(output_positions[b+1], n))</c> and every load to
/// the stream length, so corrupt streams write only inside their own block's range. The host validates the LUTs and
/// sizes (<see cref="DFloat11Tensor.Create"/>) before upload.</para>
/// </remarks>
internal static class DFloat11Kernels
{
    public const int GroupSize = DFloat11Format.ThreadsPerBlock;
    public const int MaxLutBytes = DFloat11Format.MaxLutRows * 256;

    /// <summary>Largest block (in elements) staged in shared memory: 40 KB of bf16, leaving room for LUTs and the scan
    /// within the 48 KB a group may use without opting in.</summary>
    public const int MaxStagedElements = 20 * 1024;

    public static void Decode(
        ArrayView<byte> luts, ArrayView<byte> codes, ArrayView<byte> signMantissa, ArrayView<uint> positions,
        ArrayView<byte> gaps, ArrayView<ushort> output, int lutBytes, int nBytes, int n, int staged)
    {
        var sharedLuts = SharedMemory.Allocate<byte>(MaxLutBytes);
        // Staging buffer (dynamic shared memory, sized by the host to the largest block's element count when staged != 0).
        var stage = SharedMemory.GetDynamic<ushort>();
        var acc = SharedMemory.Allocate<uint>(GroupSize + 1);
        int tid = Group.IdxX;
        int block = Grid.IdxX;
        for (int i = tid; i < lutBytes; i += GroupSize) sharedLuts[i] = luts[i];

        long thread = (long)block * GroupSize + tid;
        long first = thread * DFloat11Format.BytesPerThread;
        ulong w0 = 0;
        for (int i = 0; i < 8; i++) w0 = (w0 << 8) | Load(codes, first + i, nBytes);
        uint tail = 0;
        for (int i = 8; i < 12; i++) tail = (tail << 8) | Load(codes, first + i, nBytes);
        long gapBit = thread * DFloat11Format.GapBits;
        int gapWindow = (int)((Load(gaps, gapBit >> 3, (int)gaps.Length) << 8) | Load(gaps, (gapBit >> 3) + 1, (int)gaps.Length));
        int gap = (gapWindow >> (11 - (int)(gapBit & 7))) & 31;
        Group.Barrier();

        int lengthRow = lutBytes - 256;
        // Phase 1: count tokens starting in this thread's 64 bits.
        uint count = 0;
        ulong w = w0 << gap;
        int free = gap;
        while (free < 32)
        {
            int len = TokenLength(sharedLuts, lengthRow, w);
            w <<= len;
            free += len;
            count++;
        }
        w |= (ulong)tail << (free - 32);
        free -= 32;
        while (free < 32)
        {
            int len = TokenLength(sharedLuts, lengthRow, w);
            w <<= len;
            free += len;
            count++;
        }

        // Phase 2: Blelloch exclusive scan (decode.cu), thread 0 seeded with the block's first output index.
        uint blockStart = positions[block];
        uint blockEnd = positions[block + 1];
        acc[tid] = tid == 0 ? blockStart + count : count;
        Group.Barrier();
        for (int d = 2; d <= GroupSize; d <<= 1)
        {
            if (((tid + 1) & (d - 1)) == 0) acc[tid] += acc[tid - (d >> 1)];
            Group.Barrier();
        }
        if (tid == 0) acc[GroupSize - 1] = 0;
        Group.Barrier();
        for (int d = GroupSize; d >= 2; d >>= 1)
        {
            if (((tid + 1) & (d - 1)) == 0)
            {
                uint left = acc[tid - (d >> 1)];
                acc[tid - (d >> 1)] = acc[tid];
                acc[tid] += left;
            }
            Group.Barrier();
        }
        uint start = tid == 0 ? blockStart : acc[tid];

        // Phase 3: decode again and write, clipped to this block's range and n. Staged: into shared memory at
        // idx − blockStart, then one coalesced copy (decode.cu); otherwise straight to global memory.
        long end = Math.Min((long)start + count, Math.Min((long)blockEnd, (long)n));
        long idx = start;
        w = w0 << gap;
        free = gap;
        while (free < 32 && idx < end)
        {
            int exp = DecodeToken(sharedLuts, lengthRow, w, out int len);
            Store(output, stage, staged, idx, blockStart, Combine(signMantissa[idx], exp));
            idx++;
            w <<= len;
            free += len;
        }
        if (free >= 32)
        {
            w |= (ulong)tail << (free - 32);
            free -= 32;
        }
        while (idx < end && free < 32)
        {
            int exp = DecodeToken(sharedLuts, lengthRow, w, out int len);
            Store(output, stage, staged, idx, blockStart, Combine(signMantissa[idx], exp));
            idx++;
            w <<= len;
            free += len;
        }
        if (staged != 0)
        {
            Group.Barrier();
            long blockCount = Math.Min((long)blockEnd, (long)n) - blockStart;
            for (long i = tid; i < blockCount; i += GroupSize) output[blockStart + i] = stage[i];
        }
    }

    private static void Store(ArrayView<ushort> output, ArrayView<ushort> stage, int staged, long idx, uint blockStart, ushort value)
    {
        if (idx < blockStart) return;
        if (staged != 0) stage[idx - blockStart] = value;
        else output[idx] = value;
    }

    private static uint Load(ArrayView<byte> data, long index, int length) => index < length ? data[index] : 0u;

    private static ushort Combine(byte sm, int exp) => (ushort)(((sm & 0x80) << 8) | ((exp & 0xFF) << 7) | (sm & 0x7F));

    private static int Symbol(ArrayView<byte> luts, ulong w)
    {
        int d = luts[(int)(w >> 56)];
        if (d >= DFloat11Format.FirstPointer)
        {
            d = luts[(256 - d) * 256 + (int)((w >> 48) & 0xFF)];
            if (d >= DFloat11Format.FirstPointer)
            {
                d = luts[(256 - d) * 256 + (int)((w >> 40) & 0xFF)];
                if (d >= DFloat11Format.FirstPointer) d = luts[(256 - d) * 256 + (int)((w >> 32) & 0xFF)];
            }
        }
        return d;
    }

    private static int TokenLength(ArrayView<byte> luts, int lengthRow, ulong w)
    {
        int s = Symbol(luts, w);
        int len = Math.Max(1, (int)luts[lengthRow + s]);
        return s == DFloat11Format.EscapeSymbol ? len + DFloat11Format.EscapeBits : len;
    }

    private static int DecodeToken(ArrayView<byte> luts, int lengthRow, ulong w, out int bits)
    {
        int s = Symbol(luts, w);
        int len = Math.Max(1, (int)luts[lengthRow + s]);
        if (s == DFloat11Format.EscapeSymbol)
        {
            bits = len + DFloat11Format.EscapeBits;
            return (int)((w << len) >> 56);
        }
        bits = len;
        return s;
    }
}

/// <summary>Loads the DFloat11 decode kernel (and the dense bf16 GEMV kernel for the decompress-then-GEMM path) once;
/// owns the reusable bf16 scratch that path decompresses into.</summary>
internal sealed class DFloat11Launcher : IDisposable
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>,
        ArrayView<byte>, ArrayView<ushort>, int, int, int, int> _decode;
    private readonly Dense.DenseGemmLauncher _dense;
    private MemoryBuffer1D<ushort, Stride1D.Dense>? _scratch;

    public DFloat11Launcher(Accelerator accelerator)
    {
        if (accelerator.MaxNumThreadsPerGroup < DFloat11Kernels.GroupSize)
            throw new NotSupportedException($"DFloat11 decoding needs 512-thread groups; {accelerator.Name} allows {accelerator.MaxNumThreadsPerGroup}.");
        _accelerator = accelerator;
        _decode = accelerator.LoadKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<uint>, ArrayView<byte>,
            ArrayView<ushort>, int, int, int, int>(DFloat11Kernels.Decode);
        _dense = new Dense.DenseGemmLauncher(accelerator);
    }

    /// <summary>Whether launches stage outputs in shared memory when the blocks are small enough (tests turn it off to
    /// cover the direct-write path).</summary>
    internal bool AllowStaging { get; set; } = true;

    public void Launch(AcceleratorStream stream, GpuDFloat11Weights w, ArrayView<ushort> output)
    {
        if (w.BlockCount == 0) return;
        bool staged = AllowStaging && w.MaxBlockElements <= DFloat11Kernels.MaxStagedElements;
        var shared = SharedMemoryConfig.RequestDynamic<ushort>(staged ? Math.Max(1, w.MaxBlockElements) : 1);
        _decode(stream, new KernelConfig(new Index1D(w.BlockCount), new Index1D(DFloat11Kernels.GroupSize), shared),
            w.Luts.View, w.Codes.View, w.SignMantissa.View, w.Positions.View, w.Gaps.View, output,
            w.LutBytes, w.EncodedBytes, w.ElementCount, staged ? 1 : 0);
    }

    /// <summary>Decompresses into the scratch (grown to the largest weight seen), then runs the dense bf16 kernel.</summary>
    public void LaunchGemm(AcceleratorStream stream, GpuDFloat11Weights w, ArrayView<float> x, ArrayView<float> y, int m, int k, int n)
    {
        if (_scratch is null || _scratch.Length < w.ElementCount)
        {
            _scratch?.Dispose();
            // Rounded up to whole 8-byte words: the dense kernels read the weights in 4- and 8-byte units.
            _scratch = _accelerator.Allocate1D<ushort>((Math.Max(1, w.ElementCount) + 7) / 8 * 8);
        }
        var view = _scratch.View.SubView(0, Math.Max(1, w.ElementCount));
        Launch(stream, w, view);
        _dense.LaunchRaw(stream, ((ArrayView<ushort>)_scratch.View).Cast<byte>(), bf16: true, x, y, m, k, n);
    }

    public void Dispose() => _scratch?.Dispose();
}
