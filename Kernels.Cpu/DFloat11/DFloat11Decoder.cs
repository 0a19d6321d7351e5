using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kernels.Cpu.Dense;
using Kernels.Cpu.Threading;
using Kernels.Quant.DFloat11;

namespace Kernels.Cpu.DFloat11;

/// <summary>Fast CPU DFloat11 decompression into caller-supplied bf16 buffers, and the fused decompress-then-GEMV.</summary>
/// <remarks>
/// <para>Each DFloat11 block (4096 stream bytes) decodes independently from <c>output_positions[b]</c> and the gap of its
/// first thread. A worker decodes whole blocks: the serial Huffman part writes the block's exponents into an L1-resident
/// byte scratch using a 12-bit table that yields up to three codes per lookup (<see cref="DFloat11DecodeTable"/>), then a
/// SIMD pass (AVX-512 / AVX2 / Vector128 / scalar, chosen by <see cref="CpuIsa.Resolve"/>) merges exponents with the raw
/// sign/mantissa bytes into bf16. Blocks are spread over <see cref="KernelOptions.MaxDegreeOfParallelism"/> threads.</para>
/// <para>Output is bit-identical to <see cref="Quant.DFloat11.Reference.DFloat11Reference"/> on every ISA path and thread
/// count. Corrupt streams never cause out-of-bounds access: every window load is bounded by the stream length (plus its
/// zero padding), and a block whose codes do not end where the next block's first code starts is reported as
/// <see cref="InvalidDataException"/>. Flipped bits that keep the block structure intact decode to some other values.</para>
/// <para>Scratch: two 32.8 KB exponent buffers (and for the GEMV one weight tile) per worker thread, allocated once per thread.</para>
/// </remarks>
public static unsafe partial class DFloat11Decoder
{
    [ThreadStatic] private static byte[]? t_exps;
    [ThreadStatic] private static ushort[]? t_tile;

    /// <summary>Bytes of decoded bf16 weight tile the fused GEMV aims for (fits L2 next to the activations).</summary>
    internal const int GemvTileBytes = 96 * 1024;

    /// <summary>Decompresses a whole tensor into <paramref name="destination"/>.</summary>
    /// <param name="tensor">The compressed tensor.</param>
    /// <param name="destination">Exactly <see cref="DFloat11Tensor.ElementCount"/> elements, overwritten (e.g. a reused per-layer buffer).</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has the wrong length.</exception>
    /// <exception cref="InvalidDataException">The stream does not line up with the block metadata (names the block).</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Decompress(DFloat11Tensor tensor, Span<BFloat16> destination, KernelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, tensor.ElementCount);
        DecompressRange(tensor, 0, destination, options);
    }

    /// <summary>Decompresses elements <c>[start, start + destination.Length)</c> of a tensor (e.g. some rows).</summary>
    /// <param name="tensor">The compressed tensor.</param>
    /// <param name="start">First element.</param>
    /// <param name="destination">Receives the elements.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the tensor.</exception>
    /// <exception cref="InvalidDataException">The stream does not line up with the block metadata (names the block).</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void DecompressRange(DFloat11Tensor tensor, long start, Span<BFloat16> destination, KernelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        if (start + destination.Length > tensor.ElementCount)
            throw new ArgumentOutOfRangeException(nameof(destination), $"elements [{start}, {start + destination.Length}) exceed the tensor's {tensor.ElementCount}.");
        IsaPath isa = CpuIsa.Resolve(options);
        if (destination.IsEmpty) return;
        DFloat11DecodeTable table = tensor.DecodeTable;
        fixed (byte* bits = tensor.PaddedEncodedExponents)
        fixed (byte* sm = tensor.SignMantissa)
        fixed (uint* pos = tensor.OutputPositions)
        fixed (byte* gaps = tensor.Gaps)
        fixed (uint* multi = table.Multi)
        fixed (byte* luts = table.Luts)
        fixed (BFloat16* dst = destination)
        {
            var state = new DecodeChunks
            {
                S = MakeStream(tensor, table, bits, sm, pos, gaps, multi, luts),
                Dst = (ushort*)dst, Lo = start, Hi = start + destination.Length, Isa = isa, FailedBlock = int.MaxValue,
            };
            state.FirstBlock = FindBlock(state.S, start);
            int lastBlock = FindBlock(state.S, state.Hi - 1);
            int blocks = lastBlock - state.FirstBlock + 1;
            int threads = (options ?? KernelOptions.Default).EffectiveParallelism;
            int chunks = Math.Min(blocks, Math.Max(1, threads) * 8);
            state.BlocksPerChunk = (blocks + chunks - 1) / chunks;
            state.LastBlock = lastBlock;
            WorkerPool.Run((blocks + state.BlocksPerChunk - 1) / state.BlocksPerChunk, threads, ref state);
            if (state.FailedBlock != int.MaxValue) ThrowCorrupt(state.FailedBlock, tensor);
        }
    }

    /// <summary>Fused decompress + GEMM: <c>y = x · Wᵀ</c> where W is the <c>[m, k]</c> compressed tensor, without materialising W.</summary>
    /// <param name="weights">Compressed weights with <c>m·k</c> elements, row-major.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="m">Output features.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="n">Activation vectors (1 = GEMV).</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <remarks>
    /// Each worker takes a range of rows, decodes the blocks that cover it into a tile of rows (about 96 KB of bf16, so it stays
    /// in L2) and runs the dense bf16 kernel (<see cref="DenseGemm"/>, same ISA path) on that tile before decoding the next.
    /// The result equals <c>DenseGemm.Gemm(Decompress(W), x)</c> up to the dense kernel's documented summation-order rounding
    /// (the weights are bit-exact).
    /// </remarks>
    /// <exception cref="ArgumentException">Wrong buffer lengths, or the tensor does not hold m·k elements.</exception>
    /// <exception cref="InvalidDataException">The stream does not line up with the block metadata.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(DFloat11Tensor weights, ReadOnlySpan<float> x, Span<float> y, int m, int k, int n, KernelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ThrowHelper.ThrowIfLengthMismatch(nameof(weights), weights.ElementCount, (long)m * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(x), x.Length, (long)n * k);
        ThrowHelper.ThrowIfLengthMismatch(nameof(y), y.Length, (long)n * m);
        ThrowHelper.ThrowIfOverlapping(x, y, nameof(x), nameof(y));
        IsaPath isa = CpuIsa.Resolve(options);
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            y.Clear();
            return;
        }
        DFloat11DecodeTable table = weights.DecodeTable;
        int tileRows = Math.Max(4, GemvTileBytes / (2 * k) & ~3);
        int threads = (options ?? KernelOptions.Default).EffectiveParallelism;
        // Chunks of whole tiles; each chunk re-decodes at most one partial block at its start.
        int tiles = (m + tileRows - 1) / tileRows;
        int chunks = Math.Min(tiles, Math.Max(1, threads) * 4);
        int tilesPerChunk = (tiles + chunks - 1) / chunks;
        fixed (byte* bits = weights.PaddedEncodedExponents)
        fixed (byte* sm = weights.SignMantissa)
        fixed (uint* pos = weights.OutputPositions)
        fixed (byte* gaps = weights.Gaps)
        fixed (uint* multi = table.Multi)
        fixed (byte* luts = table.Luts)
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var state = new GemvChunks
            {
                S = MakeStream(weights, table, bits, sm, pos, gaps, multi, luts),
                X = px, Y = py, M = m, K = k, N = n, Isa = isa, TileRows = tileRows, RowsPerChunk = tilesPerChunk * tileRows,
                FailedBlock = int.MaxValue,
            };
            WorkerPool.Run((m + state.RowsPerChunk - 1) / state.RowsPerChunk, threads, ref state);
            if (state.FailedBlock != int.MaxValue) ThrowCorrupt(state.FailedBlock, weights);
        }
    }

    private static BlockStream MakeStream(DFloat11Tensor t, DFloat11DecodeTable table, byte* bits, byte* sm, uint* pos, byte* gaps, uint* multi, byte* luts) => new()
    {
        Bits = bits, BitCount = 8L * t.EncodedByteCount, SignMantissa = sm, Positions = pos, Gaps = gaps, GapBytes = t.Gaps.Length,
        BlockCount = t.BlockCount, Multi = multi, Luts = luts, LutBytes = table.Luts.Length, LengthRow = table.LengthRow,
    };

    private static void ThrowCorrupt(int block, DFloat11Tensor t) =>
        throw new InvalidDataException($"DFloat11 block {block} of {t.BlockCount} is corrupt: its codes run past the {t.EncodedByteCount}-byte stream or do not end at the next block's first code (bit {(block + 1L) * DFloat11Format.BlockBits} + gap).");

    private static byte* ExpScratch()
    {
        t_exps ??= GC.AllocateUninitializedArray<byte>(2 * BlockScratchBytes, pinned: true);
        return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(t_exps));
    }

    private static ushort* TileScratch(long elements)
    {
        if (t_tile is null || t_tile.Length < elements) t_tile = GC.AllocateUninitializedArray<ushort>((int)elements, pinned: true);
        return (ushort*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(t_tile));
    }

    private static void ReportFailure(ref int failed, int block)
    {
        int seen;
        while (block < (seen = Volatile.Read(ref failed)) && Interlocked.CompareExchange(ref failed, block, seen) != seen)
        {
        }
    }

    private struct DecodeChunks : IChunkKernel<DecodeChunks>
    {
        public BlockStream S;
        public ushort* Dst;      // element Lo lands at Dst[0]
        public long Lo, Hi;
        public int FirstBlock, LastBlock, BlocksPerChunk;
        public IsaPath Isa;
        public int FailedBlock;

        public static void Execute(ref DecodeChunks c, int chunk)
        {
            byte* expsA = ExpScratch(), expsB = expsA + BlockScratchBytes;
            int b0 = c.FirstBlock + chunk * c.BlocksPerChunk;
            int b1 = Math.Min(c.LastBlock + 1, b0 + c.BlocksPerChunk);
            for (int b = b0; b < b1; b += 2)
            {
                int countA, countB = 0;
                bool ok = b + 1 < b1
                    ? DecodeBlockPairExponents(c.S, b, expsA, expsB, out countA, out countB)
                    : (countA = DecodeBlockExponents(c.S, b, expsA)) >= 0;
                if (!ok)
                {
                    ReportFailure(ref c.FailedBlock, b);
                    return;
                }
                Emit(ref c, b, expsA, countA);
                if (b + 1 < b1) Emit(ref c, b + 1, expsB, countB);
            }
        }

        private static void Emit(ref DecodeChunks c, int b, byte* exps, int count)
        {
            long e0 = c.S.Positions[b];
            long p = Math.Max(e0, c.Lo), q = Math.Min(e0 + count, c.Hi);
            if (q > p) Merge(c.Isa, exps + (p - e0), c.S.SignMantissa + p, c.Dst + (p - c.Lo), (int)(q - p));
        }
    }

    private struct Tile
    {
        public ushort* Data;
        public long Lo, Hi, Start, End;
    }

    private struct GemvChunks : IChunkKernel<GemvChunks>
    {
        public BlockStream S;
        public float* X, Y;
        public int M, K, N, TileRows, RowsPerChunk;
        public IsaPath Isa;
        public int FailedBlock;

        public static void Execute(ref GemvChunks c, int chunk)
        {
            byte* expsA = ExpScratch(), expsB = expsA + BlockScratchBytes;
            int r0 = chunk * c.RowsPerChunk, r1 = Math.Min(c.M, r0 + c.RowsPerChunk);
            long k = c.K;
            var tile = new Tile
            {
                Data = TileScratch(c.TileRows * k), Lo = r0 * k, Hi = r1 * k, Start = r0 * k, End = Math.Min(r1 * k, (r0 + (long)c.TileRows) * k),
            };
            for (int b = FindBlock(c.S, tile.Lo); b < c.S.BlockCount && c.S.Positions[b] < tile.Hi; b += 2)
            {
                bool pair = b + 1 < c.S.BlockCount && c.S.Positions[b + 1] < tile.Hi;
                int countA, countB = 0;
                bool ok = pair
                    ? DecodeBlockPairExponents(c.S, b, expsA, expsB, out countA, out countB)
                    : (countA = DecodeBlockExponents(c.S, b, expsA)) >= 0;
                if (!ok)
                {
                    ReportFailure(ref c.FailedBlock, b);
                    return;
                }
                Consume(ref c, ref tile, c.S.Positions[b], expsA, countA);
                if (pair) Consume(ref c, ref tile, c.S.Positions[b + 1], expsB, countB);
            }
        }

        // Merges a decoded block's elements that fall in [Lo, Hi) into the tile; runs the dense kernel on each full tile.
        private static void Consume(ref GemvChunks c, ref Tile t, long e0, byte* exps, int count)
        {
            long k = c.K;
            long p = Math.Max(e0, t.Lo), q = Math.Min(e0 + count, t.Hi);
            while (p < q)
            {
                long take = Math.Min(q, t.End) - p;
                Merge(c.Isa, exps + (p - e0), c.S.SignMantissa + p, t.Data + (p - t.Start), (int)take);
                p += take;
                if (p == t.End)
                {
                    int row0 = (int)(t.Start / k), rows = (int)((t.End - t.Start) / k);
                    TileGemm(c.Isa, (BFloat16*)t.Data, c.X, c.Y + row0, c.M, c.K, c.N, rows);
                    t.Start = t.End;
                    t.End = Math.Min(t.Hi, t.Start + c.TileRows * k);
                }
            }
        }

        // y[j·m + row0 + r] for r < rows: the dense kernel on the tile (its rows 0..rows-1), y pre-offset by row0.
        private static void TileGemm(IsaPath isa, BFloat16* w, float* x, float* y, int m, int k, int n, int rows)
        {
            switch (isa)
            {
                case IsaPath.Avx512: DenseGemm.Avx512(w, x, y, m, k, n, 0, rows); break;
                case IsaPath.Avx2: DenseGemm.Avx2(w, x, y, m, k, n, 0, rows); break;
                case IsaPath.Vector128: DenseGemm.Vector128(w, x, y, m, k, n, 0, rows); break;
                default: DenseGemm.Scalar(w, x, y, m, k, n, 0, rows); break;
            }
        }
    }
}
