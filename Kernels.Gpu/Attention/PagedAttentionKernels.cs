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

        int d = a.HeadDim, per = d / Warp.WarpSize;
        var qv = LocalMemory.Allocate<float>(8);
        var acc = LocalMemory.Allocate<float>(8);
        for (int j = 0; j < per; j++)
        {
            qv[j] = q[qRow * d + lane + 32 * j];
            acc[j] = 0;
        }
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
                float partial = 0;
                for (int j = 0; j < per; j++) partial += qv[j] * Element(k, scales, a.KScaleOffset, a.KZeroOffset, a, row, kvHead, lane + 32 * j);
                float dot = Warp.Shuffle(WarpSum(partial), 0);
                float x = a.SmScale * dot;
                float logit = a.SoftCap > 0 ? a.SoftCap * XMath.Tanh(x / a.SoftCap) : x;
                float mNew = XMath.Max(m, logit);
                float f = l > 0 ? XMath.Exp(m - mNew) : 0f;
                float pr = XMath.Exp(logit - mNew);
                l = l * f + pr;
                for (int j = 0; j < per; j++)
                    acc[j] = acc[j] * f + pr * Element(v, scales, a.VScaleOffset, a.VZeroOffset, a, row, kvHead, lane + 32 * j);
                m = mNew;
            }
        }
        float inv = l > 0 ? 1f / l : 0f;
        float outLse = l > 0 ? m + XMath.Log(l) : float.NegativeInfinity;
        if (slot >= 0)
        {
            long b = a.PartialOut + ((long)slot * a.QoHeads + head) * d;
            for (int j = 0; j < per; j++) work[b + lane + 32 * j] = acc[j] * inv;
            if (lane == 0) work[a.PartialLse + (long)slot * a.QoHeads + head] = outLse;
        }
        else
        {
            for (int j = 0; j < per; j++) output[qRow * d + lane + 32 * j] = acc[j] * inv;
            if (lane == 0 && a.WriteLse != 0) lse[qRow] = outLse;
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
                    long o = b + 4L * i;
                    uint bits = data[o] | ((uint)data[o + 1] << 8) | ((uint)data[o + 2] << 16) | ((uint)data[o + 3] << 24);
                    return Interop.IntAsFloat(bits);
                }
            case 1: // F16
                {
                    long o = b + 2L * i;
                    return HalfToFloat((uint)(data[o] | (data[o + 1] << 8)));
                }
            case 2: // BF16
                {
                    long o = b + 2L * i;
                    return Interop.IntAsFloat((uint)(data[o] | (data[o + 1] << 8)) << 16);
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
