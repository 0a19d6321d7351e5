using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Attention.Positional;
using Kernels.Cpu.Threading;
using V128 = System.Runtime.Intrinsics.Vector128;
using X86Avx2 = System.Runtime.Intrinsics.X86.Avx2;

namespace Kernels.Cpu.Attention;

/// <summary>Rotary position embedding on the CPU (vLLM's <c>rotary_embedding</c>, FlashInfer's <c>apply_rope_pos_ids</c>):
/// <c>x [tokens, heads, head_dim]</c> rotated pair by pair with a <see cref="RopeTable"/>'s fp32 cos/sin row of each
/// token's position.</summary>
/// <remarks>
/// <para>Every path computes, per pair with table entries (c, s): <c>x1' = fma(x1, c, −(x2·s))</c> and
/// <c>x2' = fma(x2, c, x1·s)</c> (one product rounded, then one fused multiply-add). Results are therefore identical across
/// the AVX-512, AVX2, Vector128 and scalar paths and thread counts, bit for bit (NaN payloads and signs aside). Against
/// the double-precision <see cref="RopeReference"/> the error per output is at most about
/// <c>2⁻²²·(|x1| + |x2|)</c>: the table entries are rounded to fp32 (≤ 2⁻²⁵ each), plus two fp32 roundings.</para>
/// <para>NeoX layout (pairs (i, i + rotary_dim/2)): the two contiguous halves are whole vectors, so a step is two products
/// and two FMAs with no shuffles. GPT-J layout (pairs (2i, 2i+1)): a vector of x meets its pair-swapped self
/// (<c>vpermilps</c> imm 0xB1) times the sines duplicated per pair with the even lanes negated, and the duplicated
/// cosines (<c>vpermps</c> from half a vector of the table row). A row shorter than a vector runs the scalar formula.
/// The last vector of a row overlaps the previous one when the length is not a multiple of the width: it is loaded before
/// any store, so in-place calls rewrite the overlap with the same values.</para>
/// <para>Tokens are split across <see cref="KernelOptions.MaxDegreeOfParallelism"/> threads from 128 Ki rotated floats
/// up; smaller calls run on the caller. Nothing is allocated.</para>
/// </remarks>
public static unsafe class RopeKernel
{
    /// <summary>Rotated floats (tokens × heads × rotary_dim) from which a call uses the worker pool.</summary>
    internal const long ParallelThreshold = 1 << 17;

    /// <summary>Applies RoPE out of place (or in place when <paramref name="output"/> is <paramref name="x"/>).</summary>
    /// <param name="table">The cos/sin cache; its head_dim, rotary_dim and pair layout apply.</param>
    /// <param name="positions">One position per token, in <c>[0, table.MaxPositions)</c>.</param>
    /// <param name="x"><c>tokens × heads × head_dim</c> floats (heads = x.Length / (tokens · head_dim)).</param>
    /// <param name="output">As long as <paramref name="x"/>; the same memory as <paramref name="x"/> (in place) or disjoint from it.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentNullException"><paramref name="table"/> is null.</exception>
    /// <exception cref="ArgumentException">The lengths disagree (the message names them) or output partially overlaps x.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A position is outside the table (checked before any write).</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void Apply(RopeTable table, ReadOnlySpan<int> positions, ReadOnlySpan<float> x, Span<float> output, KernelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(table);
        int heads = RopeArguments.Heads(positions.Length, table.HeadDim, x.Length, output.Length);
        if (!RopeArguments.IsSameMemory(x, output)) ThrowHelper.ThrowIfOverlapping(x, output, nameof(x), nameof(output)); // in place, or disjoint
        ThrowHelper.ThrowIfOverlapping(positions, output, nameof(positions), nameof(output));
        IsaPath isa = CpuIsa.Resolve(options);
        RopeArguments.CheckPositions(positions, table.MaxPositions);
        if (x.IsEmpty) return;
        fixed (float* px = x)
        fixed (float* po = output)
        fixed (int* pp = positions)
        {
            Launch(table, pp, px, po, positions.Length, heads, isa, options);
        }
    }

    /// <summary>Applies RoPE in place (FlashInfer's <c>apply_rope_inplace</c>).</summary>
    /// <param name="table">The cos/sin cache.</param>
    /// <param name="positions">One position per token, in <c>[0, table.MaxPositions)</c>.</param>
    /// <param name="x"><c>tokens × heads × head_dim</c> floats, rotated in place; untouched if an exception is thrown.</param>
    /// <param name="options">ISA and thread options; null for the defaults.</param>
    /// <exception cref="ArgumentNullException"><paramref name="table"/> is null.</exception>
    /// <exception cref="ArgumentException">The lengths disagree (the message names them) or positions overlap x.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A position is outside the table (checked before any write).</exception>
    /// <exception cref="NotSupportedException">The forced ISA path is unsupported here.</exception>
    public static void ApplyInPlace(RopeTable table, ReadOnlySpan<int> positions, Span<float> x, KernelOptions? options = null) =>
        Apply(table, positions, x, x, options);

    private static void Launch(RopeTable table, int* positions, float* x, float* output, int tokens, int heads, IsaPath isa, KernelOptions? options)
    {
        long work = (long)tokens * heads * table.RotaryDim;
        int threads = work < ParallelThreshold ? 1 : Math.Min((options ?? KernelOptions.Default).EffectiveParallelism, tokens);
        int chunks = threads <= 1 ? 1 : Math.Min(tokens, threads * 4); // a few chunks per thread balance uneven progress
        fixed (float* pt = table.Data)
        {
            var args = new RopeArgs
            {
                X = x, Out = output, Positions = positions, Table = pt,
                Tokens = tokens, Heads = heads, HeadDim = table.HeadDim, RotaryDim = table.RotaryDim,
                Interleaved = table.Interleaved, TokensPerChunk = (tokens + chunks - 1) / chunks, Isa = isa,
            };
            WorkerPool.Run((tokens + args.TokensPerChunk - 1) / args.TokensPerChunk, threads, ref args);
        }
    }

    /// <summary>The AVX-512 path over tokens <c>[tokenStart, tokenStart + tokenCount)</c>.</summary>
    /// <param name="a">Pointers and sizes.</param>
    /// <param name="tokenStart">First token.</param>
    /// <param name="tokenCount">Tokens.</param>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.NoInlining)] // its own inline budget: the row helpers inline here, not into Execute's switch
    internal static void Avx512(in RopeArgs a, int tokenStart, int tokenCount)
    {
        Debug.Assert(CpuIsa.IsSupported(IsaPath.Avx512));
        Tokens<Lanes512, Vector512<float>>(a, tokenStart, tokenCount);
    }

    /// <summary>The AVX2 + FMA path over tokens <c>[tokenStart, tokenStart + tokenCount)</c>.</summary>
    /// <param name="a">Pointers and sizes.</param>
    /// <param name="tokenStart">First token.</param>
    /// <param name="tokenCount">Tokens.</param>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.NoInlining)] // its own inline budget: the row helpers inline here, not into Execute's switch
    internal static void Avx2(in RopeArgs a, int tokenStart, int tokenCount)
    {
        Debug.Assert(CpuIsa.IsSupported(IsaPath.Avx2));
        Tokens<Lanes256, Vector256<float>>(a, tokenStart, tokenCount);
    }

    /// <summary>The Vector128 path (portable; fused multiply-add in hardware on x86 with FMA and on Arm) over tokens
    /// <c>[tokenStart, tokenStart + tokenCount)</c>.</summary>
    /// <param name="a">Pointers and sizes.</param>
    /// <param name="tokenStart">First token.</param>
    /// <param name="tokenCount">Tokens.</param>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.NoInlining)] // its own inline budget: the row helpers inline here, not into Execute's switch
    internal static void Vector128(in RopeArgs a, int tokenStart, int tokenCount)
    {
        Debug.Assert(CpuIsa.IsSupported(IsaPath.Vector128));
        Tokens<Lanes128, Vector128<float>>(a, tokenStart, tokenCount);
    }

    /// <summary>The scalar path over tokens <c>[tokenStart, tokenStart + tokenCount)</c>: the same formula, pair by pair.</summary>
    /// <param name="a">Pointers and sizes.</param>
    /// <param name="tokenStart">First token.</param>
    /// <param name="tokenCount">Tokens.</param>
    internal static void Scalar(in RopeArgs a, int tokenStart, int tokenCount)
    {
        int half = a.RotaryDim / 2;
        for (int t = tokenStart; t < tokenStart + tokenCount; t++)
        {
            float* cos = a.Table + (nint)a.Positions[t] * a.RotaryDim;
            for (int h = 0; h < a.Heads; h++)
            {
                nint b = ((nint)t * a.Heads + h) * a.HeadDim;
                ScalarRow(a.X + b, a.Out + b, cos, cos + half, half, a.Interleaved);
                PassThrough(a, a.X + b, a.Out + b);
            }
        }
    }

    /// <summary>One row of head_dim floats rotated in place, as <see cref="Apply"/> rotates it (the same formula and results on
    /// every path), for the attention kernels' in-kernel RoPE (<c>AttentionOptions.Rope</c>).</summary>
    /// <param name="x">The row.</param>
    /// <param name="cos">The table row of the position: rotary/2 cosines, then rotary/2 sines.</param>
    /// <param name="rotary">rotary_dim.</param>
    /// <param name="interleaved">GPT-J pairs.</param>
    /// <param name="isa">The caller's path (its width; the results do not depend on it).</param>
    internal static void RotateRow(float* x, float* cos, int rotary, bool interleaved, IsaPath isa) =>
        RotateRows(x, 0, 1, cos, rotary, interleaved, isa);

    /// <summary><paramref name="count"/> rows <paramref name="stride"/> floats apart rotated in place at consecutive positions:
    /// row n with the table row at <c>cos + n·rotary</c> (one call per tile of keys).</summary>
    /// <param name="x">The first row.</param>
    /// <param name="stride">Floats from one row to the next.</param>
    /// <param name="count">Rows.</param>
    /// <param name="cos">The first row's table row.</param>
    /// <param name="rotary">rotary_dim.</param>
    /// <param name="interleaved">GPT-J pairs.</param>
    /// <param name="isa">The caller's path.</param>
    internal static void RotateRows(float* x, int stride, int count, float* cos, int rotary, bool interleaved, IsaPath isa)
    {
        switch (isa)
        {
            case IsaPath.Avx512: RotateRows512(x, stride, count, cos, rotary, interleaved); break;
            case IsaPath.Avx2: RotateRows256(x, stride, count, cos, rotary, interleaved); break;
            case IsaPath.Vector128: RotateRows128(x, stride, count, cos, rotary, interleaved); break;
            default:
                for (int n = 0; n < count; n++) ScalarRow(x + n * stride, x + n * stride, cos + n * rotary, cos + n * rotary + rotary / 2, rotary / 2, interleaved);
                break;
        }
    }

    // One method per width, each with its own inline budget (as the token loops above).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RotateRows512(float* x, int stride, int count, float* cos, int rotary, bool interleaved)
    {
        for (int n = 0; n < count; n++) Row<Lanes512, Vector512<float>>(x + n * stride, cos + n * rotary, rotary, interleaved);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RotateRows256(float* x, int stride, int count, float* cos, int rotary, bool interleaved)
    {
        for (int n = 0; n < count; n++) Row<Lanes256, Vector256<float>>(x + n * stride, cos + n * rotary, rotary, interleaved);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RotateRows128(float* x, int stride, int count, float* cos, int rotary, bool interleaved)
    {
        for (int n = 0; n < count; n++) Row<Lanes128, Vector128<float>>(x + n * stride, cos + n * rotary, rotary, interleaved);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row<TL, TV>(float* x, float* cos, int rotary, bool interleaved) where TL : struct, IRopeLanes<TV> where TV : struct
    {
        int half = rotary / 2;
        float* sin = cos + half;
        if (interleaved ? rotary < TL.Count : half < TL.Count) ScalarRow(x, x, cos, sin, half, interleaved);
        else if (interleaved) InterleavedRow<TL, TV>(x, x, cos, sin, rotary);
        else NeoxRow<TL, TV>(x, x, cos, sin, half);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tokens<TL, TV>(in RopeArgs a, int tokenStart, int tokenCount) where TL : struct, IRopeLanes<TV> where TV : struct
    {
        int rotary = a.RotaryDim, half = rotary / 2;
        bool vector = a.Interleaved ? rotary >= TL.Count : half >= TL.Count;
        for (int t = tokenStart; t < tokenStart + tokenCount; t++)
        {
            float* cos = a.Table + (nint)a.Positions[t] * rotary, sin = cos + half;
            for (int h = 0; h < a.Heads; h++)
            {
                nint b = ((nint)t * a.Heads + h) * a.HeadDim;
                float* x = a.X + b, o = a.Out + b;
                if (!vector) ScalarRow(x, o, cos, sin, half, a.Interleaved);
                else if (a.Interleaved) InterleavedRow<TL, TV>(x, o, cos, sin, rotary);
                else NeoxRow<TL, TV>(x, o, cos, sin, half);
                PassThrough(a, x, o);
            }
        }
    }

    /// <summary>Copies dimensions ≥ rotary_dim when out of place (in place they are already there).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PassThrough(in RopeArgs a, float* x, float* o)
    {
        int rest = a.HeadDim - a.RotaryDim;
        if (rest != 0 && x != o) new ReadOnlySpan<float>(x + a.RotaryDim, rest).CopyTo(new Span<float>(o + a.RotaryDim, rest));
    }

    /// <summary>Pairs (i, i + half), or (2i, 2i + 1) when interleaved: <c>x1' = fma(x1, c, −(x2·s))</c>, <c>x2' = fma(x2, c, x1·s)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScalarRow(float* x, float* o, float* cos, float* sin, int half, bool interleaved)
    {
        for (int i = 0; i < half; i++)
        {
            int i1 = interleaved ? 2 * i : i, i2 = interleaved ? 2 * i + 1 : i + half;
            float x1 = x[i1], x2 = x[i2], c = cos[i], s = sin[i];
            o[i1] = MathF.FusedMultiplyAdd(x1, c, -(x2 * s));
            o[i2] = MathF.FusedMultiplyAdd(x2, c, x1 * s);
        }
    }

    /// <summary>NeoX pairs over contiguous halves; needs <c>half ≥ Count</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void NeoxRow<TL, TV>(float* x, float* o, float* cos, float* sin, int half) where TL : struct, IRopeLanes<TV> where TV : struct
    {
        int n = TL.Count, last = half - n;
        // The last vector overlaps the one before when half is not a multiple of Count: load it before any store, so an
        // in-place call rotates the overlap from the original values and stores the same results twice.
        TV lx1 = TL.Load(x + last), lx2 = TL.Load(x + half + last), lc = TL.Load(cos + last), ls = TL.Load(sin + last);
        for (int i = 0; i < last; i += n)
        {
            TV x1 = TL.Load(x + i), x2 = TL.Load(x + half + i), c = TL.Load(cos + i), s = TL.Load(sin + i);
            TL.Store(TL.MultiplySubtract(x1, c, TL.Multiply(x2, s)), o + i);
            TL.Store(TL.MultiplyAdd(x2, c, TL.Multiply(x1, s)), o + half + i);
        }
        TL.Store(TL.MultiplySubtract(lx1, lc, TL.Multiply(lx2, ls)), o + last);
        TL.Store(TL.MultiplyAdd(lx2, lc, TL.Multiply(lx1, ls)), o + half + last);
    }

    /// <summary>GPT-J pairs: <c>o = fma(x, [c0 c0 c1 c1 …], swap(x)·[−s0 s0 −s1 s1 …])</c>; needs <c>rotary ≥ Count</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InterleavedRow<TL, TV>(float* x, float* o, float* cos, float* sin, int rotary) where TL : struct, IRopeLanes<TV> where TV : struct
    {
        int n = TL.Count, last = rotary - n; // even: rotary and Count are, so every vector starts on a pair
        TV lx = TL.Load(x + last), lc = TL.LoadPairs(cos + last / 2), ls = TL.NegateEven(TL.LoadPairs(sin + last / 2));
        for (int i = 0; i < last; i += n)
        {
            TV v = TL.Load(x + i), c = TL.LoadPairs(cos + i / 2), s = TL.NegateEven(TL.LoadPairs(sin + i / 2));
            // Even lane 2k: fma(x[2k], c_k, x[2k+1]·(−s_k)) = fma(x1, c, −(x2·s)); odd lane: fma(x[2k+1], c_k, x[2k]·s_k).
            TL.Store(TL.MultiplyAdd(v, c, TL.Multiply(TL.SwapPairs(v), s)), o + i);
        }
        TL.Store(TL.MultiplyAdd(lx, lc, TL.Multiply(TL.SwapPairs(lx), ls)), o + last);
    }

    /// <summary>One vector width's operations, so the row bodies are written once (the JIT specialises per struct).</summary>
    private interface IRopeLanes<TV> where TV : struct
    {
        static abstract int Count { get; }
        static abstract TV Load(float* p);
        static abstract void Store(TV v, float* p);
        static abstract TV Multiply(TV a, TV b);

        /// <summary>a·b + c, one rounding.</summary>
        static abstract TV MultiplyAdd(TV a, TV b, TV c);

        /// <summary>a·b − c, one rounding.</summary>
        static abstract TV MultiplySubtract(TV a, TV b, TV c);

        /// <summary>Count/2 floats from p, each duplicated: [p0 p0 p1 p1 …].</summary>
        static abstract TV LoadPairs(float* p);

        /// <summary>[x1 x0 x3 x2 …].</summary>
        static abstract TV SwapPairs(TV x);

        /// <summary>Flips the sign of the even lanes (exact).</summary>
        static abstract TV NegateEven(TV x);
    }

    private readonly struct Lanes512 : IRopeLanes<Vector512<float>>
    {
        public static int Count => 16;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(float* p) => Vector512.Load(p);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(Vector512<float> v, float* p) => v.Store(p);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplyAdd(a, b, c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> MultiplySubtract(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplySubtract(a, b, c);

        // vpermps zmm: lanes 2k and 2k+1 take element k of the 8 loaded floats (the upper half of the source is unused).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> LoadPairs(float* p) =>
            Avx512F.PermuteVar16x32(Vector256.Load(p).ToVector512Unsafe(), Vector512.Create(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));

        // vpermilps zmm, imm 0xB1 = 0b10_11_00_01: lanes (1, 0, 3, 2) in every 128-bit block.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> SwapPairs(Vector512<float> x) => Avx512F.Permute4x32(x, 0xB1);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> NegateEven(Vector512<float> x) =>
            x ^ Vector512.Create(-0f, 0f, -0f, 0f, -0f, 0f, -0f, 0f, -0f, 0f, -0f, 0f, -0f, 0f, -0f, 0f);
    }

    private readonly struct Lanes256 : IRopeLanes<Vector256<float>>
    {
        public static int Count => 8;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(float* p) => Vector256.Load(p);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(Vector256<float> v, float* p) => v.Store(p);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplyAdd(a, b, c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> MultiplySubtract(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplySubtract(a, b, c);

        // vpermps ymm: lanes 2k and 2k+1 take element k of the 4 loaded floats.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> LoadPairs(float* p) =>
            X86Avx2.PermuteVar8x32(V128.Load(p).ToVector256Unsafe(), Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3));

        // vpermilps ymm, imm 0xB1: lanes (1, 0, 3, 2) in each 128-bit half.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> SwapPairs(Vector256<float> x) => Avx.Permute(x, 0xB1);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> NegateEven(Vector256<float> x) => x ^ Vector256.Create(-0f, 0f, -0f, 0f, -0f, 0f, -0f, 0f);
    }

    private readonly struct Lanes128 : IRopeLanes<Vector128<float>>
    {
        public static int Count => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Load(float* p) => V128.Load(p);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(Vector128<float> v, float* p) => v.Store(p);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;

        // Always fused (vfmadd on x86 with FMA, fmla on Arm): the same single rounding as the other paths.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) =>
            V128.FusedMultiplyAdd(a, b, c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> MultiplySubtract(Vector128<float> a, Vector128<float> b, Vector128<float> c) =>
            V128.FusedMultiplyAdd(a, b, -c);

        // An 8-byte load of two floats, then lanes (0, 0, 1, 1).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> LoadPairs(float* p) =>
            V128.Shuffle(V128.CreateScalarUnsafe(*(double*)p).AsSingle(),
                V128.Create(0, 0, 1, 1));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> SwapPairs(Vector128<float> x) =>
            V128.Shuffle(x, V128.Create(1, 0, 3, 2));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> NegateEven(Vector128<float> x) => x ^ V128.Create(-0f, 0f, -0f, 0f);
    }
}

/// <summary>Pointers and sizes of one RoPE call (the spans are pinned by the caller for its duration).</summary>
internal unsafe struct RopeArgs : IChunkKernel<RopeArgs>
{
    public float* X, Out, Table;
    public int* Positions;
    public int Tokens, Heads, HeadDim, RotaryDim, TokensPerChunk;
    public bool Interleaved;
    public IsaPath Isa;

    /// <summary>Runs chunk <paramref name="chunk"/>'s tokens on the chosen path.</summary>
    /// <param name="a">The call.</param>
    /// <param name="chunk">Chunk index.</param>
    public static void Execute(ref RopeArgs a, int chunk)
    {
        int t0 = chunk * a.TokensPerChunk, n = Math.Min(a.TokensPerChunk, a.Tokens - t0);
        switch (a.Isa)
        {
            case IsaPath.Avx512: RopeKernel.Avx512(a, t0, n); break;
            case IsaPath.Avx2: RopeKernel.Avx2(a, t0, n); break;
            case IsaPath.Vector128: RopeKernel.Vector128(a, t0, n); break;
            default: RopeKernel.Scalar(a, t0, n); break;
        }
    }
}
