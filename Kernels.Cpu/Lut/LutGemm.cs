using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Threading;
using Kernels.Quant.Lut;

namespace Kernels.Cpu.Lut;

/// <summary>LUT-based mixed-precision GEMV/GEMM (T-MAC) over bit-plane packed 1–4-bit and ternary weights.</summary>
/// <remarks>
/// <para><b>Math.</b> With <c>q − c = Σ_i 2^(i−1)·σ_i</c> (<see cref="LutFormat"/>), one output is
/// <c>y[j, r] = Σ_g ( s[r,g] · ½·Σ_i 2^i·S_i[r,g] + o[r,g] · X_g )</c>, where <c>S_i = Σ_kg T_kg[idx(r, i, kg)]</c> sums table
/// lookups over the group's 4-groups and <c>X_g = Σ_{c∈g} x[j, c]</c>. Scale and offset are applied once per group per row,
/// after the integer group dot (MixPE).</para>
/// <para><b>Tables</b> (<see cref="LutTable"/>) are built once per activation vector, as the first chunks of the same
/// parallel loop that then runs the row tiles, and reused by every row. int8 mode stores 16 int8 per 4-group and <c>½·lutScale</c> per group; exact mode stores 16 fp32.</para>
/// <para><b>Inner loop</b> (int8, per 64 packed bytes = one plane of 8 columns of 64 rows): <c>vpshufb</c> low nibbles against
/// the broadcast table of 4-group 2p and high nibbles against 2p+1, <c>vpunpckl/hbw</c> to pair them, <c>vpmaddubsw</c> with
/// <c>2^i</c> to sum the pair and weight the plane into int16. Overflow: a lane gains at most <c>2·127·2^i</c> per plane, so
/// <c>254·(2^b − 1) ≤ 3810</c> per column pair; the int16 accumulators are widened to int32 (<c>vpslld/vpsrad</c>) every
/// 8 pairs (≤ 30,480 &lt; 32,767). The int32 group sum is exact, then
/// <c>y = fma(float(sum), s·½lutScale, y); y = fma(o, X_g, y)</c>.</para>
/// <para><b>Determinism.</b> In int8 mode the integer sums are exact and the per-group fp32 epilogue is the same sequence of
/// operations on every path, so AVX-512, AVX2, Vector128 and scalar give bit-identical results, for any thread count.
/// Exact mode has an AVX-512 path (<c>vpermps</c> on 16-float tables) and a scalar loop for every other ISA; both sum in
/// the same order, so exact mode is bit-identical across paths too.</para>
/// <para><b>Shapes.</b> k must be a multiple of the group size (validated); any m (rows are padded to 64 in the packed
/// weights); n ≥ 0. Activations must be finite (int8 tables cannot represent ±Inf/NaN).</para>
/// </remarks>
public static unsafe partial class LutGemm
{
    /// <summary>Computes <c>y = x · Wᵀ</c> with fp32 activations.</summary>
    /// <param name="weights">Packed weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten; must not overlap x.</param>
    /// <param name="n">Activation vectors (1 = GEMV).</param>
    /// <param name="lutOptions">Table mode; null for int8 tables.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A length mismatch (named) or overlapping buffers.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(LutWeights weights, ReadOnlySpan<float> x, Span<float> y, int n, LutGemmOptions? lutOptions = null, KernelOptions? options = null)
    {
        IsaPath isa = Validate(weights, x.Length, y.Length, n, options);
        ThrowHelper.ThrowIfOverlapping(x, y, nameof(x), nameof(y));
        if (weights.M == 0 || n == 0) return;
        Run(weights, x, y, n, lutOptions ?? LutGemmOptions.Default, options ?? KernelOptions.Default, isa);
    }

    /// <summary>Computes <c>y = x · Wᵀ</c> with bf16 activations (widened exactly to fp32 before the tables are built).</summary>
    /// <param name="weights">Packed weights <c>[m, k]</c>.</param>
    /// <param name="x"><c>n·k</c> activations.</param>
    /// <param name="y"><c>n·m</c> outputs, overwritten.</param>
    /// <param name="n">Activation vectors.</param>
    /// <param name="lutOptions">Table mode; null for int8 tables.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentException">A length mismatch (named) or overlapping buffers.</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Gemm(LutWeights weights, ReadOnlySpan<BFloat16> x, Span<float> y, int n, LutGemmOptions? lutOptions = null, KernelOptions? options = null)
    {
        IsaPath isa = Validate(weights, x.Length, y.Length, n, options);
        ThrowHelper.ThrowIfOverlapping(x, y, nameof(x), nameof(y));
        if (weights.M == 0 || n == 0) return;
        float[] xf = ArrayPool<float>.Shared.Rent(x.Length);
        try
        {
            for (int i = 0; i < x.Length; i++) xf[i] = (float)x[i];
            Run(weights, xf.AsSpan(0, x.Length), y, n, lutOptions ?? LutGemmOptions.Default, options ?? KernelOptions.Default, isa);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(xf);
        }
    }

    /// <summary>Test hook: <see cref="Gemm(LutWeights, ReadOnlySpan{float}, Span{float}, int, LutGemmOptions?, KernelOptions?)"/>
    /// with a smaller table budget, to exercise column batching.</summary>
    internal static void GemmWithTableBudget(LutWeights weights, ReadOnlySpan<float> x, Span<float> y, int n, LutGemmOptions lutOptions, long maxTableBytes)
    {
        IsaPath isa = Validate(weights, x.Length, y.Length, n, null);
        if (weights.M == 0 || n == 0) return;
        Run(weights, x, y, n, lutOptions, KernelOptions.Default, isa, maxTableBytes);
    }

    private static IsaPath Validate(LutWeights weights, int xLength, int yLength, int n, KernelOptions? options)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ThrowHelper.ThrowIfLengthMismatch("x", xLength, (long)n * weights.K);
        ThrowHelper.ThrowIfLengthMismatch("y", yLength, (long)n * weights.M);
        return CpuIsa.Resolve(options);
    }

    /// <summary>Upper bound on table scratch per call; larger n runs in column batches (each rereads the weights).</summary>
    private const long MaxTableBytes = 256L << 20;

    private static void Run(LutWeights w, ReadOnlySpan<float> x, Span<float> y, int n, LutGemmOptions lutOptions, KernelOptions options, IsaPath isa, long maxTableBytes = MaxTableBytes)
    {
        long bytesPerVector = lutOptions.TableMode == LutTableMode.Exact ? (long)w.K * 16 : (long)w.K * 4;
        int batch = (int)Math.Clamp(maxTableBytes / Math.Max(bytesPerVector, 1), 1, n);
        for (int j0 = 0; j0 < n; j0 += batch)
        {
            int nb = Math.Min(batch, n - j0);
            RunBatch(w, x.Slice(j0 * w.K, nb * w.K), y.Slice(j0 * w.M, nb * w.M), nb, lutOptions, options, isa);
        }
    }

    private static void RunBatch(LutWeights w, ReadOnlySpan<float> x, Span<float> y, int n, LutGemmOptions lutOptions, KernelOptions options, IsaPath isa)
    {
        int k = w.K, groups = w.GroupsPerRow;
        bool exact = lutOptions.TableMode == LutTableMode.Exact;
        long tableBytes = exact ? (long)n * k * 16 : (long)n * k * 4; // (k/4 four-groups) × 16 entries × (4 or 1) bytes
        int threads = (long)w.M * k * n < 65_536 ? 1 : options.EffectiveParallelism;
        byte[] tables = ArrayPool<byte>.Shared.Rent((int)Math.Max(tableBytes, 1));
        float[] groupScalars = ArrayPool<float>.Shared.Rent(Math.Max(2 * n * groups, 1));
        try
        {
            fixed (float* px = x)
            fixed (float* py = y)
            fixed (byte* pt = tables)
            fixed (float* pg = groupScalars)
            fixed (byte* pw = w.Planes)
            fixed (BFloat16* ps = w.Scales)
            fixed (BFloat16* po = w.Offsets)
            {
                var args = new LutArgs
                {
                    Planes = pw, Scales = (ushort*)ps, Offsets = (ushort*)po,
                    X = px, Y = py, Tables = pt, HalfLutScale = pg, GroupSum = pg + n * groups,
                    M = w.M, K = k, N = n, Bits = w.Format.Bits, GroupSize = w.Format.GroupSize, Groups = groups, Tiles = w.Tiles,
                    Exact = exact, Isa = isa,
                };
                // One parallel loop: first the table chunks (8 groups of one vector each, so 2 threads stay balanced at
                // n = 1), then the row tiles, which wait until every table is built.
                int perVector = (groups + TableGroupsPerChunk - 1) / TableGroupsPerChunk;
                var chunks = new FusedChunks { Args = args, TableChunks = n * perVector };
                WorkerPool.Run(chunks.TableChunks + w.Tiles, threads, ref chunks);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(groupScalars);
            ArrayPool<byte>.Shared.Return(tables);
        }
    }

    /// <summary>Pointers and sizes shared by the passes (everything pinned by <see cref="Run"/>).</summary>
    internal struct LutArgs
    {
        public byte* Planes;
        public ushort* Scales, Offsets;
        public float* X, Y;
        public byte* Tables;          // int8: [n][k/4][16] sbyte; exact: [n][k/4][16] float
        public float* HalfLutScale;   // [n][groups]: ½·lutScale (int8 mode)
        public float* GroupSum;       // [n][groups]: X_g
        public int M, K, N, Bits, GroupSize, Groups, Tiles;
        public bool Exact;
        public IsaPath Isa;
    }

    private const int TableGroupsPerChunk = 8;

    /// <summary>Chunks <c>[0, TableChunks)</c> build tables; the rest are row tiles. <see cref="WorkerPool"/> hands out chunks
    /// in increasing order, so every table chunk is claimed (and being built) before any tile chunk starts waiting on
    /// <see cref="Built"/>: the wait cannot deadlock, and it removes a second fork-join.</summary>
    private struct FusedChunks : IChunkKernel<FusedChunks>
    {
        public LutArgs Args;
        public int TableChunks;
        public int Built;

        public static void Execute(ref FusedChunks s, int chunk)
        {
            if (chunk < s.TableChunks)
            {
                int perVector = (s.Args.Groups + TableGroupsPerChunk - 1) / TableGroupsPerChunk;
                int j = chunk / perVector, g0 = chunk % perVector * TableGroupsPerChunk;
                LutTableBuilder.Build(ref s.Args, j, g0, Math.Min(s.Args.Groups, g0 + TableGroupsPerChunk));
                Interlocked.Increment(ref s.Built);
                return;
            }
            if (Volatile.Read(ref s.Built) != s.TableChunks)
            {
                var spin = new SpinWait();
                while (Volatile.Read(ref s.Built) != s.TableChunks) spin.SpinOnce(sleep1Threshold: -1);
            }
            RunTiles(ref s.Args, chunk - s.TableChunks, 1);
        }
    }

    /// <summary>Runs tiles <c>[tileStart, tileStart + tileCount)</c> on the args' ISA path.</summary>
    internal static void RunTiles(ref LutArgs a, int tileStart, int tileCount)
    {
        if (a.Exact)
        {
            if (a.Isa == IsaPath.Avx512) Avx512Exact(ref a, tileStart, tileCount);
            else ScalarExact(ref a, tileStart, tileCount);
            return;
        }
        switch (a.Isa)
        {
            case IsaPath.Avx512: Avx512(ref a, tileStart, tileCount); break;
            case IsaPath.Avx2: Avx2(ref a, tileStart, tileCount); break;
            case IsaPath.Vector128 when Ssse3.IsSupported: Vector128(ref a, tileStart, tileCount); break;
            default: Scalar(ref a, tileStart, tileCount); break;
        }
    }

    /// <summary>Stores the 64 tile outputs of vector j, only the rows below m.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTile(ref LutArgs a, int tile, int j, float* acc64)
    {
        int r0 = tile * 64, rows = Math.Min(64, a.M - r0);
        Buffer.MemoryCopy(acc64, a.Y + (long)j * a.M + r0, rows * 4, rows * 4);
    }

    /// <summary>bf16 bits → fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Bf16(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);
}
