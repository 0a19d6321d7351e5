using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu.Attention;

/// <summary>The vector kernels of <see cref="PagedAttentionTiled{TTile}"/> at one width (<see cref="Tile512"/>: AVX-512,
/// <see cref="Tile256"/>: AVX2 + FMA). A tile is 16 tokens; logits and probabilities live in 16-float rows per query.</summary>
internal unsafe interface IAttentionTile
{
    /// <summary>True when the hardware this tile needs is present.</summary>
    static abstract bool IsSupported { get; }

    /// <summary>True when <see cref="Logits4Int{TL}"/> takes integer dot products (else quantized queries use the float path).</summary>
    static abstract bool SupportsIntDot { get; }

    /// <summary>rows[t] = first + t·tokenBytes for live tokens [tl, th), else the zero row.</summary>
    static abstract void SetRows(byte** rows, byte* first, long tokenBytes, byte* zeroRow, int tl, int th);

    /// <summary>Rows [tl, th) widened to fp32 once, exactly as <typeparamref name="TL"/> reads them (value / factor, int4 codes
    /// minus their zero), <c>2·half</c> floats each at <c>dst + t·2·half</c>: for items whose many queries would otherwise
    /// widen every row once per block of four.</summary>
    static abstract void WidenRows<TL>(byte** rows, int* zero, int tl, int th, int half, float* dst) where TL : unmanaged, IKvRow;

    /// <summary>Raw dot products of four queries (rows of q, stride d) with the tile's rows, into four 16-float rows at dst
    /// (lanes outside [tl, th) may hold anything: the softmax masks them).</summary>
    static abstract void Logits4<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow;

    /// <summary>One query's raw dot products with the tile's rows.</summary>
    static abstract void Logits1<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf)
        where TL : unmanaged, IKvRow;

    /// <summary>True when <see cref="Logits4Neox{TL}"/> and <see cref="Logits1Neox{TL}"/> rotate K inside the logit blocks
    /// (else in-kernel RoPE widens and rotates the rows first).</summary>
    static abstract bool RotatesInLogits { get; }

    /// <summary><see cref="Logits4{TL}"/> with each K chunk pair rotated by NeoX pairs over the whole row, token t by the table
    /// row at <c>cos + t·d</c> (tokens outside [tl, th) by row tl's), bit-identical to widening and rotating first.</summary>
    static abstract void Logits4Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow;

    /// <summary><see cref="Logits1{TL}"/> with the rotation of <see cref="Logits4Neox{TL}"/>.</summary>
    static abstract void Logits1Neox<TL>(float* q, byte** rows, int* zero, int tl, int th, int d, int half, float* dst, PagePrefetch pf, float* cos)
        where TL : unmanaged, IKvRow;

    /// <summary><see cref="Logits4{TL}"/> in the integer domain for int8 queries (queries i … i + 3 of the item).</summary>
    static abstract void Logits4Int<TL>(ref TileItem c, int i, byte** rows, int* zero, int tl, int th, int d, int half, PagePrefetch pf)
        where TL : unmanaged, IKvRow;

    /// <summary>Online softmax of one query over a tile: logits (× kmul unless null) masked to lanes [lo, hi) whose bit is set
    /// in <paramref name="keep"/> (bit t: lane t; <c>0xFFFF</c> without a custom mask), running max m and sum l, the
    /// accumulator rescaled when m grows; p becomes the probabilities × vmul.</summary>
    static abstract void Softmax(float* p, float* kmul, float* vmul, int lo, int hi, uint keep, ref float m, ref float l, float* acc, int d);

    /// <summary><see cref="Softmax"/> for four queries that share the mask: rows p … p + 3·16, running maxima and sums
    /// m[0..4) and l[0..4), accumulators acc[0..4).</summary>
    static abstract void Softmax4(float* p, float* kmul, float* vmul, int lo, int hi, uint keep, float* m, float* l, float** acc, int d);

    /// <summary>acc_j += Σ_t p_j[t]·v_t for four queries over tokens [tl, th); prefetches through pf on the first pass.</summary>
    static abstract void Accumulate4<TL>(float** acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow;

    /// <summary>acc += Σ_t p[t]·v_t for one query.</summary>
    static abstract void Accumulate1<TL>(float* acc, float* p, byte** rows, int* zero, int tl, int th, int half, ref PagePrefetch pf)
        where TL : unmanaged, IKvRow;

    /// <summary>acc *= f over n floats.</summary>
    static abstract void Scale(float* acc, float f, int n);

    /// <summary><see cref="Kernels.Attention.Reference.QueryQuantization.Quantize"/> of one query row, bit-identical, also
    /// writing the codes as int16, their sum and <c>code·s</c>; returns the scale.</summary>
    static abstract float QuantizeQuery(float* q, int d, sbyte* codes, short* codes16, float* dequantized, out int sum);

    /// <summary>One per-token array (a scale or a zero point) of a whole 16-token tile for the item's <paramref name="heads"/>
    /// kv heads, into 16-lane rows per head: <c>dst[kk·16 + t] = src[t·tokenStride + kk·headStride] × mul</c> for live tokens
    /// [tl, th) and 0 for the others (as int32 when <paramref name="toInt"/>, truncated as a cast does). All 16 tokens of
    /// every head must be readable. Returns false, writing nothing, when this width has no vector path for the layout;
    /// the caller then reads the values one by one.</summary>
    static abstract bool TileScales(float* src, long tokenStride, long headStride, int heads, float mul, int tl, int th, void* dst, bool toInt);
}

/// <summary>The per-work-item state the tile passes share (pointers into the thread's scratch).</summary>
internal unsafe ref struct TileItem
{
    public float* Qs, P, M, L, KMul, VMul, ZeroRow, QScale;
    public sbyte* QCodes;
    public short* Q16;
    public int* QSum;
    public bool IntDot;
    public int* KZero, VZero;
    public float** Acc;
    public float* KWide, VWide, Qt, LaneLogits;
    public bool Widen, WidenV, QueryLanes; // K rows widened to fp32 scratch per tile (prefill-type items, RoPE outside the logits); V rows too (not for RoPE alone)
    public int QueriesPadded;
    public int* LaneLo, LaneHi;
    public int* Lo, Hi;
    public uint** MaskRow; // custom mask: per query row of the item, its bits (key j: bit j % 32 of word j / 32); null without one
    public byte** MaskedRows; // custom mask: a tile's row pointers with the excluded keys' rows replaced by the zero row
    public int QueryRows, KvHeads, GroupHeads, PerRow, Queries, KvHead, MinLo, MaxHi;
    public float* Alibi;                   // ALiBi slopes per query head, or null
    public int Group, GroupHead;           // query heads per kv head, the item's first group head
    public int* QueryPos;                  // per row of the item, the query's key position (masks and ALiBi count from it)
    public float* Rope;                    // in-kernel RoPE: cos/sin rows [position][RopeRotary], or null
    public int RopeRotary;
    public bool RopeInterleaved;
    public bool RopeInLogits;              // RoPE applied to K chunks inside the logit blocks (Tile512/Tile256, NeoX, decode-type items)
    public IsaPath Isa;                    // this kernel's path (RoPE rows rotate at its width)
}

/// <summary>Prefetches rows of a page that a later tile will read (<c>prefetcht0</c>, every 64-byte line; every other
/// line, or into L2 only, measured slower), a few rows at a time between the compute so the misses overlap with it
/// instead of queueing up in one burst. A default instance does nothing.</summary>
internal readonly unsafe struct PagePrefetch(byte* first, long tokenBytes, int rowBytes)
{
    private readonly byte* _first = first;

    /// <summary>Prefetches rows [t0, t0 + n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Rows(int t0, int n)
    {
        if (!Sse.IsSupported || _first == null) return; // no prefetch hint on Arm64 (the Vector128 path runs there)
        for (int t = t0; t < t0 + n; t++)
        {
            byte* r = _first + t * tokenBytes, end = r + rowBytes;
            for (; r + 256 <= end; r += 256) // four lines per step: an fp16 row of head_dim 128 is one step, no loop counter per line
            {
                Sse.Prefetch0(r);
                Sse.Prefetch0(r + 64);
                Sse.Prefetch0(r + 128);
                Sse.Prefetch0(r + 192);
            }
            for (; r < end; r += 64) Sse.Prefetch0(r);
        }
    }
}
