using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

// ILGPU emits launchers in a dynamic assembly named ILGPURuntime; it must see the internal argument struct below.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("ILGPURuntime")]

namespace Kernels.Gpu.Attention;

/// <summary>Geometry and options of one attention launch (offsets into the packed metadata and scale views).</summary>
internal struct AttentionLaunchArgs
{
    public long PageStride, PartialOut, PartialLse;
    public int TokenStride, HeadStride, RowBytes, HeadDim, QoHeads, Group, DType, PerHeadScale, Causal, WindowLeft, WriteLse;
    public float SmScale, SoftCap;
    // Offsets in the int metadata view.
    public int ItemsOffset, PageIdsOffset, PageTokensOffset, PageKeyOffset, QueriesOffset, QueryCount, SplitOffset, Batch;
    // Offsets in the float scale view.
    public int KScaleOffset, VScaleOffset, KZeroOffset, VZeroOffset;
}

/// <summary>ILGPU paged attention: one warp per query (query row × head) streams its work item's pages with online softmax.</summary>
/// <remarks>
/// Lanes own <c>head_dim/32</c> dimensions each (d = lane + 32·j), the dot product is a shuffle reduction, and the running
/// max/sum/accumulator live in registers, so a query reads each K/V element once. Work items come from the same plans as the
/// CPU (<c>DecodePlanner</c>, <c>PrefillPlanner</c>): split-KV partials go to the workspace and a second kernel merges them in
/// chunk order. Elements are decoded from bytes exactly like <c>PagedKvCache.ReadKey</c> (fp16 by integer ops: ILGPU has no
/// fp16 conversion on every accelerator). Straightforward and correct; not tuned (no shared-memory K/V reuse across a GQA group).
/// </remarks>
internal static class PagedAttentionKernels
{
    public const int WarpsPerGroup = 4;
    public const int ItemInts = 12; // QueryRow, QueryRows, MaskQuery, MaskQoLen, MaskKvLen, KvHead, KvHeads, GroupHead, GroupHeads, PageBegin, PageEnd, PartialSlot

    public static void Attend(ArrayView<float> q, ArrayView<float> output, ArrayView<float> lse, ArrayView<float> work,
        ArrayView<byte> k, ArrayView<byte> v, ArrayView<float> scales, ArrayView<int> meta, AttentionLaunchArgs a)
    {
        int query = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        if (query >= a.QueryCount) return;
        int lane = Warp.LaneIdx;
        int itemIndex = meta[a.QueriesOffset + 2 * query], local = meta[a.QueriesOffset + 2 * query + 1];
        int ib = a.ItemsOffset + itemIndex * ItemInts;
        int queryRow = meta[ib], maskQuery = meta[ib + 2], maskQoLen = meta[ib + 3], maskKvLen = meta[ib + 4];
        int kvHead0 = meta[ib + 5], kvHeads = meta[ib + 6], groupHead = meta[ib + 7], groupHeads = meta[ib + 8];
        int pageBegin = meta[ib + 9], pageEnd = meta[ib + 10], slot = meta[ib + 11];
        int perRow = kvHeads * groupHeads;
        int r = local / perRow, rem = local % perRow;
        int kvHead = kvHead0 + rem / groupHeads;
        int head = kvHead * a.Group + groupHead + rem % groupHeads;
        long qRow = (long)(queryRow + r) * a.QoHeads + head;

        // Bottom-right causal / window key range (AttentionMask.KeyRange).
        long diag = (long)maskKvLen - maskQoLen + maskQuery + r;
        long hiL = a.Causal != 0 ? XMath.Min((long)maskKvLen, diag + 1) : maskKvLen;
        long loL = a.WindowLeft >= 0 ? XMath.Max(0L, diag - a.WindowLeft) : 0;
        int hi = (int)XMath.Max(hiL, 0L), lo = (int)XMath.Min(loL, (long)maskKvLen);

        // Registers, not local memory: head_dim ≤ 256 gives each lane at most 8 elements (lane + 32·j), unrolled by hand
        // because a dynamically indexed local array lives in (slow) local memory.
        int d = a.HeadDim, per = d / Warp.WarpSize;
        long qb = qRow * d + lane;
        float q0 = q[qb], q1 = per > 1 ? q[qb + 32] : 0, q2 = per > 2 ? q[qb + 64] : 0, q3 = per > 3 ? q[qb + 96] : 0;
        float q4 = per > 4 ? q[qb + 128] : 0, q5 = per > 5 ? q[qb + 160] : 0, q6 = per > 6 ? q[qb + 192] : 0, q7 = per > 7 ? q[qb + 224] : 0;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        float m = float.NegativeInfinity, l = 0;
        for (int p = pageBegin; p < pageEnd; p++)
        {
            int tokens = meta[a.PageTokensOffset + p], key0 = meta[a.PageKeyOffset + p];
            if (key0 >= hi || key0 + tokens <= lo) continue;
            long pageRow = meta[a.PageIdsOffset + p] * a.PageStride + (long)kvHead * a.HeadStride;
            for (int t = 0; t < tokens; t++)
            {
                int key = key0 + t;
                if (key < lo || key >= hi) continue;
                long row = pageRow + (long)t * a.TokenStride;
                int ks = a.KScaleOffset, kz = a.KZeroOffset;
                float partial = q0 * Element(k, scales, ks, kz, a, row, kvHead, lane);
                if (per > 1) partial += q1 * Element(k, scales, ks, kz, a, row, kvHead, lane + 32);
                if (per > 2) partial += q2 * Element(k, scales, ks, kz, a, row, kvHead, lane + 64);
                if (per > 3) partial += q3 * Element(k, scales, ks, kz, a, row, kvHead, lane + 96);
                if (per > 4) partial += q4 * Element(k, scales, ks, kz, a, row, kvHead, lane + 128);
                if (per > 5) partial += q5 * Element(k, scales, ks, kz, a, row, kvHead, lane + 160);
                if (per > 6) partial += q6 * Element(k, scales, ks, kz, a, row, kvHead, lane + 192);
                if (per > 7) partial += q7 * Element(k, scales, ks, kz, a, row, kvHead, lane + 224);
                float dot = Warp.Shuffle(WarpSum(partial), 0);
                float x = a.SmScale * dot;
                float logit = a.SoftCap > 0 ? a.SoftCap * XMath.Tanh(x / a.SoftCap) : x;
                float mNew = XMath.Max(m, logit);
                float f = l > 0 ? XMath.Exp(m - mNew) : 0f;
                float pr = XMath.Exp(logit - mNew);
                l = l * f + pr;
                int vs = a.VScaleOffset, vz = a.VZeroOffset;
                a0 = a0 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane);
                if (per > 1) a1 = a1 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane + 32);
                if (per > 2) a2 = a2 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane + 64);
                if (per > 3) a3 = a3 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane + 96);
                if (per > 4) a4 = a4 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane + 128);
                if (per > 5) a5 = a5 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane + 160);
                if (per > 6) a6 = a6 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane + 192);
                if (per > 7) a7 = a7 * f + pr * Element(v, scales, vs, vz, a, row, kvHead, lane + 224);
                m = mNew;
            }
        }
        float inv = l > 0 ? 1f / l : 0f;
        float outLse = l > 0 ? m + XMath.Log(l) : float.NegativeInfinity;
        bool partialSlot = slot >= 0;
        long ob = partialSlot ? a.PartialOut + ((long)slot * a.QoHeads + head) * d + lane : qRow * d + lane;
        var dst = partialSlot ? work : output;
        dst[ob] = a0 * inv;
        if (per > 1) dst[ob + 32] = a1 * inv;
        if (per > 2) dst[ob + 64] = a2 * inv;
        if (per > 3) dst[ob + 96] = a3 * inv;
        if (per > 4) dst[ob + 128] = a4 * inv;
        if (per > 5) dst[ob + 160] = a5 * inv;
        if (per > 6) dst[ob + 192] = a6 * inv;
        if (per > 7) dst[ob + 224] = a7 * inv;
        if (lane == 0)
        {
            if (partialSlot) work[a.PartialLse + (long)slot * a.QoHeads + head] = outLse;
            else if (a.WriteLse != 0) lse[qRow] = outLse;
        }
    }

    /// <summary>The int8 query quantization of <c>AttentionOptions.QuantizedQueryDot</c>, dequantized: row
    /// <paramref name="row"/> (head_dim <paramref name="d"/>) of <paramref name="q"/> becomes <c>code·s</c> in
    /// <paramref name="dst"/>, bit for bit as <c>QueryQuantization.Dequantized</c> computes it (<c>s = max|q|/127</c>,
    /// <c>code = clamp(round_half_even(q/s), −127, 127)</c>; a row with NaN or ±Inf becomes NaN, an all-zero row +0). The
    /// attention kernel then takes its dot products with these values, as the CPU paths without integer dot products do.
    /// One thread per row: a decode step has a few thousand rows of ≤ 256 elements.</summary>
    public static void DequantizeQueries(Index1D row, ArrayView<float> q, ArrayView<float> dst, int d)
    {
        long b = (long)(int)row * d;
        float amax = 0;
        int bad = 0;
        for (int i = 0; i < d; i++)
        {
            float a = XMath.Abs(q[b + i]);
            if (!(a <= float.MaxValue)) bad = 1; // NaN or ±Inf: the scale is NaN (a max.f32 reduction would drop a NaN)
            else if (a > amax) amax = a;
        }
        if (bad != 0 || amax == 0)
        {
            float fill = bad != 0 ? float.NaN : 0f; // codes 0 times a NaN scale, or 0 times 0
            for (int i = 0; i < d; i++) dst[b + i] = fill;
            return;
        }
        float s = amax / 127f;
        for (int i = 0; i < d; i++)
        {
            float c = XMath.RoundToEven(q[b + i] / s);
            c = XMath.Clamp(c, -127f, 127f);
            dst[b + i] = (int)c * s; // through int: a code of −0 is 0, as the sbyte code is
        }
    }

    /// <summary>Merges split-KV partial states of (sequence, head) in chunk order (AttentionState.MergeInPlace). One thread each.</summary>
    public static void Merge(Index1D index, ArrayView<float> output, ArrayView<float> lse, ArrayView<float> work, ArrayView<int> meta, AttentionLaunchArgs a)
    {
        int b = index / a.QoHeads, h = index % a.QoHeads;
        int start = meta[a.SplitOffset + 2 * b], n = meta[a.SplitOffset + 2 * b + 1];
        if (n <= 1) return;
        int d = a.HeadDim;
        long o = (long)(int)index * d;
        float s = float.NegativeInfinity;
        for (int c = 0; c < n; c++)
        {
            long slot = start + c;
            float so = work[a.PartialLse + slot * a.QoHeads + h];
            long src = a.PartialOut + (slot * a.QoHeads + h) * d;
            if (so == float.NegativeInfinity) continue;
            if (s == float.NegativeInfinity)
            {
                for (int i = 0; i < d; i++) output[o + i] = work[src + i];
                s = so;
                continue;
            }
            float mx = XMath.Max(s, so);
            float wa = XMath.Exp(s - mx), wb = XMath.Exp(so - mx);
            float inv = 1f / (wa + wb);
            float ca = wa * inv, cb = wb * inv;
            for (int i = 0; i < d; i++) output[o + i] = output[o + i] * ca + work[src + i] * cb;
            s = mx + XMath.Log(wa + wb);
        }
        if (s == float.NegativeInfinity)
            for (int i = 0; i < d; i++) output[o + i] = 0;
        if (a.WriteLse != 0) lse[index] = s;
    }

    /// <summary>Element i of row <paramref name="row"/>, dequantized exactly as <c>PagedKvCache.ReadKey</c>.</summary>
    private static float Element(ArrayView<byte> data, ArrayView<float> scales, int scaleOffset, int zeroOffset, AttentionLaunchArgs a, long row, int kvHead, int i)
    {
        long b = row * a.RowBytes;
        switch (a.DType)
        {
            case 0: // F32
                {
                    // Rows start at multiples of RowBytes = 4·head_dim, so a 4-byte view is aligned: one load, not four.
                    return Interop.IntAsFloat(data.Cast<uint>()[(b >> 2) + i]);
                }
            case 1: // F16
                {
                    return HalfToFloat(data.Cast<ushort>()[(b >> 1) + i]);
                }
            case 2: // BF16
                {
                    return Interop.IntAsFloat((uint)data.Cast<ushort>()[(b >> 1) + i] << 16);
                }
            case 3: // I8
                {
                    float s = a.PerHeadScale != 0 ? scales[scaleOffset + kvHead] : scales[scaleOffset + row];
                    return (sbyte)data[b + i] * s;
                }
            default: // I4: byte j holds element j (low nibble) and j + d/2 (high nibble)
                {
                    int half = a.HeadDim / 2;
                    int qv = i < half ? data[b + i] & 0xF : data[b + i - half] >> 4;
                    return (qv - scales[zeroOffset + row]) * scales[scaleOffset + row];
                }
        }
    }

    /// <summary>fp16 bits → fp32: magnitude shifted into place times 2¹¹² (exact for normals and subnormals), Inf/NaN exponent forced.</summary>
    private static float HalfToFloat(uint h)
    {
        float f = Interop.IntAsFloat((h & 0x7FFF) << 13) * 5.192297e33f; // 2^112
        uint bits = Interop.FloatAsInt(f);
        if ((h & 0x7C00) == 0x7C00) bits |= 0x7F800000;
        return Interop.IntAsFloat(bits | ((h & 0x8000) << 16));
    }

    private static float WarpSum(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) v += Warp.ShuffleDown(v, offset);
        return v;
    }
}
