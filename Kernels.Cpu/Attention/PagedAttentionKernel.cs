using System.Runtime.CompilerServices;
using Kernels.Attention.Masks;
using Kernels.Attention.Planning;
using Kernels.Cpu.Threading;

namespace Kernels.Cpu.Attention;

/// <summary>
/// The one attention kernel behind paged decode, paged prefill and block-sparse attention: a work item's queries (the
/// query heads of one kv head, for one or more query rows) stream that kv head's pages once, with online softmax.
/// </summary>
/// <remarks>
/// <para>Per page, in tiles of up to 16 tokens: each K row is widened to fp32 once and dotted with every query of the item
/// (GQA: one load per group, which keeps decode bandwidth-bound), logits are masked to each query's causal/window key
/// range, the running maximum is raised once per tile (rescaling the accumulator only when it grows), the tile's
/// probabilities are exponentiated as one vector, and each V row is widened once and accumulated into every query.
/// Pages outside every query's key range are skipped without reading them, which is also how block-sparse masks skip
/// excluded blocks. A split-KV item stores its normalised partial state and log-sum-exp in the workspace.</para>
/// <para>Accumulation order: dot products in <c>2·Count</c>-lane partial sums (FMA) then a lane reduction; the output sums
/// tiles in key order. Results are deterministic for a given ISA path and plan (the split is in the plan), and differ across
/// ISA paths by rounding only.</para>
/// </remarks>
internal static unsafe class PagedAttentionKernel
{
    /// <summary>Tokens per tile (one 512-bit vector of logits per query).</summary>
    internal const int Tile = 16;

    internal struct State : IChunkKernel<State>
    {
        public float* Q, Out, Lse, Work;
        public byte* K, V;
        public float* KScale, VScale, KZero, VZero;
        public AttentionWorkItem* Items;
        public int* PageIds, PageTokens, PageKeyStart;
        public long PageStride, PartialOut, PartialLse;
        public int TokenStride, HeadStride, RowBytes, HeadDim, QoHeads;
        public DType DType;
        public bool PerHeadScale, Causal;
        public int WindowLeft;
        public float SmScale, SoftCap;
        public IsaPath Isa;

        public static void Execute(ref State s, int chunk)
        {
            switch (s.Isa)
            {
                case IsaPath.Avx512: Avx512(ref s, chunk); break;
                case IsaPath.Avx2: Avx2(ref s, chunk); break;
                case IsaPath.Vector128: Vector128(ref s, chunk); break;
                default: Scalar(ref s, chunk); break;
            }
        }
    }

    /// <summary>The AVX-512 path for work item <paramref name="item"/>.</summary>
    [SkipLocalsInit]
    internal static void Avx512(ref State s, int item) => Run<Attention512>(ref s, item);

    /// <summary>The AVX2 path.</summary>
    [SkipLocalsInit]
    internal static void Avx2(ref State s, int item) => Run<Attention256>(ref s, item);

    /// <summary>The Vector128 path.</summary>
    [SkipLocalsInit]
    internal static void Vector128(ref State s, int item) => Run<Attention128>(ref s, item);

    /// <summary>The scalar path.</summary>
    [SkipLocalsInit]
    internal static void Scalar(ref State s, int item) => Run<AttentionScalar>(ref s, item);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Run<TV>(ref State s, int index) where TV : struct, IAttentionSimd<TV>
    {
        AttentionWorkItem it = s.Items[index];
        int d = s.HeadDim, nq = it.QueryRows * it.Heads;
        float* logits = stackalloc float[AttentionPlan.MaxQueriesPerItem * Tile]; // 1 KB: [query][tile token]
        float* row = stackalloc float[256];                                        // 1 KB: one widened K or V row
        float* m = stackalloc float[AttentionPlan.MaxQueriesPerItem];
        float* l = stackalloc float[AttentionPlan.MaxQueriesPerItem];
        int* lo = stackalloc int[AttentionPlan.MaxQueriesPerItem];
        int* hi = stackalloc int[AttentionPlan.MaxQueriesPerItem];
        float** qp = stackalloc float*[AttentionPlan.MaxQueriesPerItem];
        float** acc = stackalloc float*[AttentionPlan.MaxQueriesPerItem];

        int minLo = int.MaxValue, maxHi = int.MinValue;
        for (int r = 0; r < it.QueryRows; r++)
        {
            var (klo, khi) = AttentionMask.KeyRange(it.MaskQuery + r, it.MaskQoLen, it.MaskKvLen, s.Causal, s.WindowLeft);
            for (int h = 0; h < it.Heads; h++)
            {
                int i = r * it.Heads + h;
                long qRow = (long)(it.QueryRow + r) * s.QoHeads + it.Head + h;
                qp[i] = s.Q + qRow * d;
                acc[i] = it.PartialSlot < 0
                    ? s.Out + qRow * d
                    : s.Work + s.PartialOut + ((long)it.PartialSlot * s.QoHeads + it.Head + h) * d;
                new Span<float>(acc[i], d).Clear();
                m[i] = float.NegativeInfinity;
                l[i] = 0;
                lo[i] = klo;
                hi[i] = khi;
            }
            if (klo < khi)
            {
                minLo = Math.Min(minLo, klo);
                maxHi = Math.Max(maxHi, khi);
            }
        }

        long headOffset = (long)it.KvHead * s.HeadStride;
        for (int p = it.PageBegin; p < it.PageEnd; p++)
        {
            int tokens = s.PageTokens[p], key0 = s.PageKeyStart[p];
            if (key0 >= maxHi || key0 + tokens <= minLo) continue; // wholly masked: never touched
            long pageRow = s.PageIds[p] * s.PageStride + headOffset;
            for (int t0 = 0; t0 < tokens; t0 += Tile)
            {
                int tn = Math.Min(Tile, tokens - t0);
                int k0 = key0 + t0;
                if (k0 >= maxHi || k0 + tn <= minLo) continue;

                // 1. logits[i, t] for every query, −∞ where masked.
                for (int i = 0; i < nq; i++) new Span<float>(logits + i * Tile, Tile).Fill(float.NegativeInfinity);
                for (int t = 0; t < tn; t++)
                {
                    int key = k0 + t;
                    if (key < minLo || key >= maxHi) continue;
                    long r = pageRow + (long)(t0 + t) * s.TokenStride;
                    float* k = Widen<TV>(ref s, s.K, s.KScale, s.KZero, r, it.KvHead, row);
                    for (int i = 0; i < nq; i++)
                    {
                        if (key < lo[i] || key >= hi[i]) continue;
                        float x = s.SmScale * TV.Dot(qp[i], k, d);
                        logits[i * Tile + t] = s.SoftCap > 0 ? s.SoftCap * MathF.Tanh(x / s.SoftCap) : x;
                    }
                }

                // 2. online softmax per query: raise the max once per tile, then p = e^(logit − max).
                for (int i = 0; i < nq; i++)
                {
                    float* li = logits + i * Tile;
                    float tmax = float.NegativeInfinity;
                    for (int t = 0; t < tn; t++) tmax = MathF.Max(tmax, li[t]);
                    if (float.IsNegativeInfinity(tmax))
                    {
                        new Span<float>(li, Tile).Clear();
                        continue;
                    }
                    if (tmax > m[i])
                    {
                        if (l[i] > 0)
                        {
                            float f = MathF.Exp(m[i] - tmax);
                            TV.Scale(acc[i], f, d);
                            l[i] *= f;
                        }
                        m[i] = tmax;
                    }
                    l[i] += TV.ExpShift16(li, m[i]);
                }

                // 3. acc[i] += Σ_t p[i, t]·v_t, each V row widened once.
                for (int t = 0; t < tn; t++)
                {
                    int key = k0 + t;
                    if (key < minLo || key >= maxHi) continue;
                    long r = pageRow + (long)(t0 + t) * s.TokenStride;
                    float* v = Widen<TV>(ref s, s.V, s.VScale, s.VZero, r, it.KvHead, row);
                    for (int i = 0; i < nq; i++)
                    {
                        float pr = logits[i * Tile + t];
                        if (pr != 0) TV.Axpy(acc[i], pr, v, d);
                    }
                }
            }
        }

        for (int r = 0; r < it.QueryRows; r++)
            for (int h = 0; h < it.Heads; h++)
            {
                int i = r * it.Heads + h;
                float lse;
                if (l[i] > 0)
                {
                    TV.Scale(acc[i], 1f / l[i], d);
                    lse = m[i] + MathF.Log(l[i]);
                }
                else
                {
                    new Span<float>(acc[i], d).Clear();
                    lse = float.NegativeInfinity;
                }
                if (it.PartialSlot >= 0) s.Work[s.PartialLse + (long)it.PartialSlot * s.QoHeads + it.Head + h] = lse;
                else if (s.Lse != null) s.Lse[(long)(it.QueryRow + r) * s.QoHeads + it.Head + h] = lse;
            }
    }

    /// <summary>Returns row <paramref name="r"/> as fp32: the row itself for fp32 caches, else widened into <paramref name="scratch"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Widen<TV>(ref State s, byte* data, float* scale, float* zero, long r, int kvHead, float* scratch)
        where TV : struct, IAttentionSimd<TV>
    {
        byte* src = data + r * s.RowBytes;
        switch (s.DType)
        {
            case DType.F32: return (float*)src;
            case DType.F16: TV.WidenF16((ushort*)src, scratch, s.HeadDim); break;
            case DType.BF16: TV.WidenBf16((ushort*)src, scratch, s.HeadDim); break;
            case DType.I8: TV.WidenI8((sbyte*)src, s.PerHeadScale ? scale[kvHead] : scale[r], scratch, s.HeadDim); break;
            default: TV.WidenI4(src, scale[r], zero[r], scratch, s.HeadDim); break;
        }
        return scratch;
    }
}
