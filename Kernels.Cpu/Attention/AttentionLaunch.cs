using System.Runtime.CompilerServices;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Threading;

namespace Kernels.Cpu.Attention;

/// <summary>Shared run-time checks and the launch of <see cref="PagedAttentionKernel"/> for a plan.</summary>
internal static unsafe class AttentionLaunch
{
    /// <summary>Largest head_dim the kernels' row scratch holds.</summary>
    internal const int MaxHeadDim = 256;

    /// <summary>Checks that the cache and buffers match the plan (<see cref="AttentionPlan.CheckRun"/>), that head_dim is
    /// supported, that no buffer overlaps another, and that the plan's split workspace is large enough.</summary>
    internal static void Check(AttentionPlan plan, ReadOnlySpan<float> q, PagedKvCache cache, Span<float> output, Span<float> lse)
    {
        ArgumentNullException.ThrowIfNull(plan);
        plan.CheckRun(cache, q.Length, output.Length, lse.IsEmpty ? -1 : lse.Length);
        var shape = plan.Shape;
        if (shape.HeadDim % 32 != 0 || shape.HeadDim > MaxHeadDim)
            throw new NotSupportedException($"CPU attention supports head_dim a multiple of 32 up to {MaxHeadDim} (64, 128, 256, …); got {shape.HeadDim}.");
        ThrowHelper.ThrowIfOverlapping(q, output, nameof(q), nameof(output));
        if (!lse.IsEmpty)
        {
            ThrowHelper.ThrowIfOverlapping(q, lse, nameof(q), nameof(lse));
            ThrowHelper.ThrowIfOverlapping<float, float>(output, lse, nameof(output), nameof(lse)); // both are written
        }
        if (plan.SplitWorkspace is { } w && w.Capacity < plan.WorkspaceFloats)
            throw new InvalidOperationException($"The workspace has {w.Capacity} floats; the plan needs {plan.WorkspaceFloats} (was it planned with another workspace size?).");
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs a few times per call: never worth tier-0 code
    internal static void Launch(AttentionPlan plan, ReadOnlySpan<float> q, PagedKvCache cache, Span<float> output, Span<float> lse,
        KernelOptions? options)
    {
        IsaPath isa = CpuIsa.Resolve(options);
        if (plan.WorkItemCount == 0) return;
        float[]? workspace = plan.SplitWorkspace?.Buffer;
        fixed (float* pq = q)
        fixed (float* po = output)
        fixed (float* pl = lse)
        fixed (float* pw = workspace)
        fixed (AttentionWorkItem* pi = plan.WorkItems)
        fixed (int* pids = plan.PageIds)
        fixed (int* ptok = plan.PageTokens)
        fixed (int* pkey = plan.PageKeyStart)
        fixed (float* pks = cache.KeyScaleArray)
        fixed (float* pvs = cache.ValueScaleArray)
        fixed (float* pkz = cache.KeyZeroArray)
        fixed (float* pvz = cache.ValueZeroArray)
        fixed (byte* pflags = cache.NonFinitePageArray)
        fixed (uint* pmw = (plan as PrefillPlan)?.CustomMask?.Words)
        fixed (int* pmr = (plan as PrefillPlan)?.CustomMask?.RowWord)
        fixed (int* pmlo = (plan as PrefillPlan)?.CustomMask?.RowLo)
        fixed (int* pmhi = (plan as PrefillPlan)?.CustomMask?.RowHi)
        fixed (float* palibi = plan.AlibiSlopes)
        fixed (int* prow = plan.RowPosition)
        fixed (float* prope = plan.Options.Rope?.Data)
        {
            byte* pk = cache.KeyPointer, pv = cache.ValuePointer; // throws once the cache is disposed
            var state = new PagedAttentionKernel.State
            {
                Q = pq, Out = po, Lse = lse.IsEmpty ? null : pl, Work = pw,
                K = pk, V = pv, KScale = pks, VScale = pvs, KZero = pkz, VZero = pvz,
                Items = pi, PageIds = pids, PageTokens = ptok, PageKeyStart = pkey, PageFlags = pflags,
                MaskWords = pmw, MaskRowWord = pmr, MaskRowLo = pmlo, MaskRowHi = pmhi, Alibi = palibi, RowPosition = prow,
                PageStride = cache.PageStride, TokenStride = cache.TokenStride, HeadStride = cache.HeadStride, RowBytes = cache.RowBytes,
                HeadDim = plan.Shape.HeadDim, QoHeads = plan.Shape.QoHeads, Group = plan.Shape.GroupSize, DType = cache.DType,
                PerHeadScale = cache.ScaleMode == KvScaleMode.PerHead, // int8 or fp8
                Causal = plan.Options.Causal, WindowLeft = plan.Options.WindowLeft, KeepEmpty = plan.KeepsEmptyStates,
                QuantizedQ = plan.Options.QuantizedQueryDot && cache.DType is DType.I8 or DType.I4,
                SmScale = plan.SmScale, SoftCap = plan.Options.LogitsSoftCap, Isa = isa,
                Rope = prope, RopeRotary = plan.Options.Rope?.RotaryDim ?? 0, RopeInterleaved = plan.Options.Rope?.Interleaved ?? false,
            };
            state.PartialOut = plan.PartialOutputOffset;
            state.PartialLse = plan.PartialLseOffset;
            long work = 0;
            foreach (var it in plan.WorkItems) work += (long)(it.PageEnd - it.PageBegin) * plan.PageSize * it.QueryRows;
            int threads = work * plan.Shape.HeadDim < 65_536 ? 1 : (options ?? KernelOptions.Default).EffectiveParallelism;
            WorkerPool.Run(plan.WorkItemCount, threads, ref state);
            GC.KeepAlive(cache); // its native pools must outlive the kernel

            if (plan.PartialSlots > 0 && plan.Split is { } split)
            {
                fixed (int* ss = split.Start)
                fixed (int* sc = split.Count)
                fixed (int* sst = split.Stride)
                {
                    var merge = new MergeState
                    {
                        Work = pw, Out = po, Lse = lse.IsEmpty ? null : pl, SplitStart = ss, SplitCount = sc, SplitStride = sst,
                        PartialOut = plan.PartialOutputOffset, PartialLse = plan.PartialLseOffset,
                        QoHeads = plan.Shape.QoHeads, HeadDim = plan.Shape.HeadDim, KeepEmpty = plan.KeepsEmptyStates,
                    };
                    int rows = plan.QueryRows * plan.Shape.QoHeads;
                    merge.Rows = rows;
                    WorkerPool.Run((rows + MergeRowsPerChunk - 1) / MergeRowsPerChunk, threads, ref merge);
                }
            }
        }
    }

    /// <summary>(sequence, head) rows per merge chunk: one 64-byte line of lse, so two threads never write the same line,
    /// and enough work per claim that the shared chunk counter is not the cost (one row per chunk took ≈ 80 µs more than
    /// the whole merge on one thread at 8 × 512 tokens, 32 heads, 2 chunks per sequence).</summary>
    private const int MergeRowsPerChunk = 16;

    /// <summary>Merges the split-KV partial states of each (query row, head) in chunk order, <see cref="MergeRowsPerChunk"/>
    /// rows per chunk (the slots of a row's chunks are <see cref="SplitKvLayout"/>'s start + c · stride).</summary>
    private struct MergeState : IChunkKernel<MergeState>
    {
        public float* Work, Out, Lse;
        public int* SplitStart, SplitCount, SplitStride;
        public long PartialOut, PartialLse;
        public int QoHeads, HeadDim, Rows;
        public bool KeepEmpty;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Execute(ref MergeState s, int chunk)
        {
            int end = Math.Min(s.Rows, (chunk + 1) * MergeRowsPerChunk);
            for (int row = chunk * MergeRowsPerChunk; row < end; row++) MergeRow(ref s, row);
        }

        private static void MergeRow(ref MergeState s, int chunk)
        {
            int b = chunk / s.QoHeads, h = chunk % s.QoHeads;
            int n = s.SplitCount[b];
            if (n <= 1) return;
            int d = s.HeadDim;
            var dst = new Span<float>(s.Out + (long)chunk * d, d);
            dst.Clear();
            float lse = float.NegativeInfinity;
            for (int c = 0; c < n; c++)
            {
                long slot = s.SplitStart[b] + (long)c * s.SplitStride[b];
                var part = new ReadOnlySpan<float>(s.Work + s.PartialOut + (slot * s.QoHeads + h) * d, d);
                AttentionState.MergeInPlace(dst, ref lse, part, s.Work[s.PartialLse + slot * s.QoHeads + h]);
            }
            if (float.IsNegativeInfinity(lse) && !s.KeepEmpty) dst.Clear(); // no key had weight: 0, as the oracle
            if (s.Lse != null) s.Lse[chunk] = lse;
        }
    }
}
