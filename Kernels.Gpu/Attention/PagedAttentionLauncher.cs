using ILGPU;
using ILGPU.Runtime;
using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;

namespace Kernels.Gpu.Attention;

/// <summary>A device copy of a <see cref="PagedKvCache"/>: K and V bytes, and scales/zeros packed in one float buffer.</summary>
internal sealed unsafe class GpuKvCache : DeviceKvCache
{
    private readonly MemoryBuffer1D<byte, Stride1D.Dense> _k, _v;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _scales;
    private readonly AcceleratorStream _stream;

    public GpuKvCache(Accelerator accelerator, AcceleratorStream stream, PagedKvCache source) : base(source)
    {
        Accelerator = accelerator;
        _stream = stream;
        // Pools may exceed 2 GB: the kernels index K/V with 64-bit byte offsets (row · RowBytes as long), so a page past 2³¹
        // bytes is read correctly (PagedAttentionGpuTests.Decode_PoolBeyond2GB_ReadsThePagePast2GB).
        _k = accelerator.Allocate1D<byte>(source.PoolBytes);
        _v = accelerator.Allocate1D<byte>(source.PoolBytes);
        KScaleOffset = 0;
        VScaleOffset = source.KeyScales.Length;
        KZeroOffset = VScaleOffset + source.ValueScales.Length;
        VZeroOffset = KZeroOffset + source.KeyZeros.Length;
        _scales = accelerator.Allocate1D<float>(Math.Max(1, VZeroOffset + source.ValueZeros.Length));
        Update();
    }

    /// <summary>The accelerator holding the pools (a cache is only usable by the backend that uploaded it).</summary>
    public Accelerator Accelerator { get; }

    public int KScaleOffset { get; }
    public int VScaleOffset { get; }
    public int KZeroOffset { get; }
    public int VZeroOffset { get; }
    public ArrayView<byte> K => _k.View;
    public ArrayView<byte> V => _v.View;
    public ArrayView<float> Scales => _scales.View;

    /// <summary>Copies the given host pages (K/V bytes, and the rows' scales and zero points where the format keeps them per
    /// row) to the device.</summary>
    public override void Update(ReadOnlySpan<int> pages)
    {
        ThrowIfUnusable();
        CheckPages(pages);
        var c = Source;
        long rows = c.PageStride, bytes = rows * c.RowBytes;
        _stream.Synchronize();
        foreach (int p in pages)
        {
            _k.View.SubView(p * bytes, bytes).CopyFromCPU(_stream, ref *(c.KeyPointer + p * bytes), bytes);
            _v.View.SubView(p * bytes, bytes).CopyFromCPU(_stream, ref *(c.ValuePointer + p * bytes), bytes);
            foreach (var (offset, host) in RowArrays())
                _scales.View.SubView(offset + p * rows, rows).CopyFromCPU(_stream, new ReadOnlySpan<float>(host, (int)(p * rows), (int)rows));
        }
        _stream.Synchronize();
        GC.KeepAlive(c);
    }

    /// <summary>Copies page <paramref name="source"/> onto page <paramref name="destination"/> on the device: K and V bytes,
    /// and the rows' scales and zero points where the format keeps them per row.</summary>
    public void CopyPage(AcceleratorStream stream, int source, int destination)
    {
        ThrowIfUnusable();
        if (source == destination) return;
        var c = Source;
        long rows = c.PageStride, bytes = rows * c.RowBytes;
        _k.View.SubView(source * bytes, bytes).CopyTo(stream, _k.View.SubView(destination * bytes, bytes));
        _v.View.SubView(source * bytes, bytes).CopyTo(stream, _v.View.SubView(destination * bytes, bytes));
        var sc = _scales.View;
        foreach (var (offset, _) in RowArrays())
            sc.SubView(offset + source * rows, rows).CopyTo(stream, sc.SubView(offset + destination * rows, rows));
    }

    /// <summary>Swap-in: the host pool's pages (K/V bytes, and the rows' scales and zero points where the format keeps them
    /// per row) into the device pages, one synchronization for the lot.</summary>
    protected override void CopyFromHost(PagedKvCache host, ReadOnlySpan<PageCopy> copies) => CopyHostPages(host, copies, toDevice: true);

    /// <summary>Swap-out: the device pages into the host pool's pages, then the host pages' non-finite flags.</summary>
    protected override void CopyToHost(PagedKvCache host, ReadOnlySpan<PageCopy> copies) => CopyHostPages(host, copies, toDevice: false);

    /// <summary>Copies checked pages between the device pools and <paramref name="host"/>: host page → device page when
    /// <paramref name="toDevice"/>, else device page → host page (then the host pages' non-finite flags).</summary>
    private void CopyHostPages(PagedKvCache host, ReadOnlySpan<PageCopy> copies, bool toDevice)
    {
        ThrowIfUnusable();
        var c = Source;
        long rows = c.PageStride, bytes = rows * c.RowBytes;
        var arrays = RowArrays(host);
        _stream.Synchronize();
        foreach (var p in copies)
        {
            long device = toDevice ? p.Destination : p.Source, hostPage = toDevice ? p.Source : p.Destination;
            var k = _k.View.SubView(device * bytes, bytes);
            var v = _v.View.SubView(device * bytes, bytes);
            if (toDevice)
            {
                k.CopyFromCPU(_stream, ref *(host.KeyPointer + hostPage * bytes), bytes);
                v.CopyFromCPU(_stream, ref *(host.ValuePointer + hostPage * bytes), bytes);
            }
            else
            {
                k.CopyToCPU(_stream, ref *(host.KeyPointer + hostPage * bytes), bytes);
                v.CopyToCPU(_stream, ref *(host.ValuePointer + hostPage * bytes), bytes);
            }
            foreach (var (offset, array) in arrays)
            {
                var view = _scales.View.SubView(offset + device * rows, rows);
                var span = new Span<float>(array, (int)(hostPage * rows), (int)rows);
                if (toDevice) view.CopyFromCPU(_stream, span);
                else view.CopyToCPU(_stream, span);
            }
        }
        _stream.Synchronize();
        if (!toDevice) host.RefreshNonFiniteFlags(copies);
        GC.KeepAlive(host);
    }

    /// <summary>The host arrays kept per row (K/V scales of int8 per-token and int4, K/V zero points of int4) with their
    /// offsets in the packed device buffer; per-head scales are not per row and never change.</summary>
    private (long Offset, float[] Host)[] RowArrays() => RowArrays(Source);

    /// <summary><see cref="RowArrays()"/> of <paramref name="c"/>, a pool in this cache's format.</summary>
    private (long Offset, float[] Host)[] RowArrays(PagedKvCache c)
    {
        if (!c.HasRowScales) return [];
        return c.DType == DType.I4
            ? [(KScaleOffset, c.KeyScaleArray), (VScaleOffset, c.ValueScaleArray), (KZeroOffset, c.KeyZeroArray), (VZeroOffset, c.ValueZeroArray)]
            : [(KScaleOffset, c.KeyScaleArray), (VScaleOffset, c.ValueScaleArray)];
    }

    /// <summary>Copies the device pools, scales and zero points back into the host cache and recomputes its non-finite page
    /// flags (the CPU kernels' Inf/NaN-aware widening depends on them).</summary>
    public override void Download()
    {
        ThrowIfUnusable();
        _stream.Synchronize();
        _k.View.CopyToCPU(_stream, ref *Source.KeyPointer, Source.PoolBytes);
        _v.View.CopyToCPU(_stream, ref *Source.ValuePointer, Source.PoolBytes);
        var all = new float[VZeroOffset + Source.ValueZeros.Length];
        if (all.Length > 0) _scales.View.SubView(0, all.Length).CopyToCPU(_stream, all);
        _stream.Synchronize();
        all.AsSpan(KScaleOffset, Source.KeyScaleArray.Length).CopyTo(Source.KeyScaleArray);
        all.AsSpan(VScaleOffset, Source.ValueScaleArray.Length).CopyTo(Source.ValueScaleArray);
        all.AsSpan(KZeroOffset, Source.KeyZeroArray.Length).CopyTo(Source.KeyZeroArray);
        all.AsSpan(VZeroOffset, Source.ValueZeroArray.Length).CopyTo(Source.ValueZeroArray);
        Source.RefreshNonFiniteFlags();
        GC.KeepAlive(Source);
    }

    public override void Update()
    {
        ThrowIfUnusable();
        _stream.Synchronize();
        _k.View.CopyFromCPU(_stream, ref *Source.KeyPointer, Source.PoolBytes);
        _v.View.CopyFromCPU(_stream, ref *Source.ValuePointer, Source.PoolBytes);
        var all = new float[VZeroOffset + Source.ValueZeros.Length];
        Source.KeyScales.CopyTo(all.AsSpan(KScaleOffset));
        Source.ValueScales.CopyTo(all.AsSpan(VScaleOffset));
        Source.KeyZeros.CopyTo(all.AsSpan(KZeroOffset));
        Source.ValueZeros.CopyTo(all.AsSpan(VZeroOffset));
        if (all.Length > 0) _scales.View.SubView(0, all.Length).CopyFromCPU(_stream, all);
        _stream.Synchronize();
        GC.KeepAlive(Source);
    }

    /// <summary>Throws <see cref="ObjectDisposedException"/> if this cache, or the backend (accelerator) that holds its
    /// pools, was disposed: the accelerator's disposal frees the pools.</summary>
    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        ObjectDisposedException.ThrowIf(Accelerator.IsDisposed, Accelerator);
    }

    protected override void Dispose(bool disposing)
    {
        if (!Accelerator.IsDisposed) // else the accelerator already released the pools
        {
            _k.Dispose();
            _v.Dispose();
            _scales.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>A plan's metadata on the device (uploaded once per plan, then reused for every layer) and its workspace.</summary>
internal sealed class GpuPlanData : IDisposable
{
    public GpuPlanData(Accelerator accelerator, AcceleratorStream stream, AttentionPlan plan)
    {
        var meta = new List<int>();
        var args = new AttentionLaunchArgs { ItemsOffset = 0 };
        foreach (var it in plan.Items)
            meta.AddRange([it.QueryRow, it.QueryRows, it.MaskQuery, it.MaskQoLen, it.MaskKvLen, it.KvHead, it.KvHeads, it.GroupHead, it.GroupHeads, it.PageBegin, it.PageEnd, it.PartialSlot]);
        args.PageIdsOffset = meta.Count;
        meta.AddRange(plan.PageList.ToArray());
        args.PageTokensOffset = meta.Count;
        meta.AddRange(plan.PageListTokens.ToArray());
        args.PageKeyOffset = meta.Count;
        meta.AddRange(plan.PageListKeyStart.ToArray());
        args.MaskRowOffset = args.MaskWordsOffset = args.AlibiOffset = args.RowPosOffset = args.SinkOffset = -1;
        if (plan.Sinks is { } sinks)
        {
            args.SinkOffset = meta.Count;
            foreach (float x in sinks) meta.Add(BitConverter.SingleToInt32Bits(x));
        }
        if (plan.RowPosition is { } positions)
        {
            args.RowPosOffset = meta.Count;
            meta.AddRange(positions);
        }
        if (plan.AlibiSlopes is { } slopes)
        {
            args.AlibiOffset = meta.Count;
            foreach (float x in slopes) meta.Add(BitConverter.SingleToInt32Bits(x));
        }
        if (plan is PrefillPlan { CustomMask: { } mask })
        {
            // Per query row: word offset, first kept key, one past the last; then the row-aligned bits (with a padding word).
            args.MaskRowOffset = meta.Count;
            for (int r = 0; r < mask.QueryRows; r++) meta.AddRange([mask.RowWord[r], mask.RowLo[r], mask.RowHi[r]]);
            args.MaskWordsOffset = meta.Count;
            if ((long)meta.Count + mask.Words.Length > int.MaxValue)
                throw new NotSupportedException($"The custom mask's {mask.Words.Length} words do not fit the GPU plan's 32-bit metadata offsets.");
            foreach (uint w in mask.Words) meta.Add((int)w);
        }
        // Units: one thread group per (item, block of UnitRows query rows, kv head, block of UnitHeads of its query heads).
        // One warp per (row, head) pair, up to MaxWarps: decode plans (one row per item) take a kv head's query heads
        // (GQA); plans with multi-row items (prefill, block-sparse, a cascade's shared level) tile rows × group heads, so a
        // staged chunk of K/V serves every row of the tile.
        int maxRows = 1, maxHeads = 1;
        foreach (var it in plan.Items)
        {
            maxRows = Math.Max(maxRows, it.QueryRows);
            maxHeads = Math.Max(maxHeads, it.GroupHeads);
        }
        int warps = PagedAttentionKernels.MaxWarps(plan.Shape.HeadDim);
        args.UnitHeads = Math.Min(maxHeads, warps);
        args.UnitRows = Math.Min(maxRows, warps / args.UnitHeads);
        args.Warps = args.UnitHeads * args.UnitRows;
        args.UnitsOffset = meta.Count;
        int units = 0;
        for (int i = 0; i < plan.Items.Length; i++)
        {
            var it = plan.Items[i];
            for (int r = 0; r < it.QueryRows; r += args.UnitRows)
                for (int kk = 0; kk < it.KvHeads; kk++)
                    for (int h0 = 0; h0 < it.GroupHeads; h0 += args.UnitHeads, units++)
                        meta.AddRange([i, r, kk, h0]);
        }
        args.UnitCount = units;
        args.SplitOffset = meta.Count;
        long workFloats = 1;
        if (plan.Split is { } split && plan.PartialSlots > 0)
        {
            // Per query row: the slot of its first chunk, its chunks, and the slot distance between chunks (SplitKvLayout).
            args.SplitRows = plan.QueryRows;
            for (int r = 0; r < plan.QueryRows; r++) meta.AddRange([split.Start[r], split.Count[r], split.Stride[r]]);
            args.PartialOut = plan.PartialOutputOffset;
            args.PartialLse = plan.PartialLseOffset;
            workFloats = plan.WorkspaceFloats;
            HasSplits = true;
        }
        Args = args;
        Meta = accelerator.Allocate1D<int>(Math.Max(1, meta.Count));
        if (meta.Count > 0) Meta.View.SubView(0, meta.Count).CopyFromCPU(stream, meta.ToArray());
        Work = accelerator.Allocate1D<float>(workFloats);
        stream.Synchronize();
    }

    public AttentionLaunchArgs Args { get; }
    public bool HasSplits { get; }
    public MemoryBuffer1D<int, Stride1D.Dense> Meta { get; }
    public MemoryBuffer1D<float, Stride1D.Dense> Work { get; }

    public void Dispose()
    {
        Meta.Dispose();
        Work.Dispose();
    }
}

/// <summary>Loads the attention kernels once; uploads each plan's metadata once and keeps the most recently used plans'.</summary>
internal sealed class PagedAttentionLauncher : IDisposable
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, ArrayView<float>, AttentionLaunchArgs> _attend;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionLaunchArgs> _merge;
    /// <summary>Plans whose device metadata stays cached (<see cref="GpuBackend.CachedAttentionPlans"/>): a runtime plans once
    /// per step and runs the plan for every layer, so the last few plans are all that is reused.</summary>
    public int MaxCachedPlans { get; set; } = GpuBackend.DefaultCachedAttentionPlans;
    private readonly List<(AttentionPlan Plan, GpuPlanData Data, long Call)> _recent = []; // least recently used first
    private readonly List<GpuPlanData> _retired = []; // evicted; freed once the stream has finished with them
    private long _call;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int> _dequantizeQueries;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _mergeStates;
    private MemoryBuffer1D<float, Stride1D.Dense>? _cascadeScratch; // cascade plans: suffix states and, without a caller lse, the prefix lse
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int> _applySinks;
    private MemoryBuffer1D<float, Stride1D.Dense>? _sinkLse; // attention sinks without a caller lse: the rows' lse, grown on demand
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _dummy;
    private MemoryBuffer1D<float, Stride1D.Dense>? _quantizedQueries; // QuantizedQueryDot: the dequantized int8 queries, grown on demand
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<byte>, ArrayView<byte>, ArrayView<float>,
        ArrayView<int>, KvAppendArgs> _append;
    private MemoryBuffer1D<int, Stride1D.Dense>? _appendTargets; // (page, slot) per appended token, grown on demand
    private int[]? _appendHost;                                   // its host staging, reused across calls

    public PagedAttentionLauncher(Accelerator accelerator)
    {
        if (accelerator.WarpSize != 32)
            throw new NotSupportedException($"GPU attention needs a warp of 32 lanes (lane t of a warp takes chunk token t); this accelerator's warp is {accelerator.WarpSize}.");
        _accelerator = accelerator;
        _attend = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, ArrayView<float>, AttentionLaunchArgs>(PagedAttentionKernels.Attend,
            new KernelSpecialization(PagedAttentionKernels.MaxGroupThreads, null));
        _merge = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionLaunchArgs>(PagedAttentionKernels.Merge);
        _dequantizeQueries = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(PagedAttentionKernels.DequantizeQueries);
        _mergeStates = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(PagedAttentionKernels.MergeStates);
        _dummy = accelerator.Allocate1D<float>(1);
        _applySinks = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int>(PagedAttentionKernels.ApplySinks);
        _append = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, KvAppendArgs>(KvAppendKernels.Append);
    }

    /// <summary>Writes the plan's tokens' K/V rows into the device pools (one warp per row; see <see cref="KvAppendKernels"/>).</summary>
    public void Append(AcceleratorStream stream, KvAppendPlan plan, GpuKvCache cache, ArrayView<float> keys, ArrayView<float> values)
    {
        if (plan.Tokens == 0) return;
        var c = cache.Source;
        int n = 2 * plan.Tokens;
        if (_appendTargets is null || _appendTargets.Length < n)
        {
            _appendTargets?.Dispose();
            _appendTargets = _accelerator.Allocate1D<int>(Math.Max(n, 256));
            _appendHost = new int[_appendTargets.Length];
        }
        for (int i = 0; i < plan.Tokens; i++)
        {
            _appendHost![2 * i] = plan.Pages[i];
            _appendHost[2 * i + 1] = plan.Slots[i];
        }
        _appendTargets.View.SubView(0, n).CopyFromCPU(stream, new ReadOnlySpan<int>(_appendHost, 0, n));
        var a = new KvAppendArgs
        {
            PageStride = c.PageStride, Tokens = plan.Tokens, KvHeads = c.KvHeads, HeadDim = c.HeadDim, RowBytes = c.RowBytes,
            TokenStride = c.TokenStride, HeadStride = c.HeadStride,
            DType = c.DType switch { DType.F32 => 0, DType.F16 => 1, DType.BF16 => 2, DType.I8 => 3, DType.F8E4M3 => 5, DType.F8E5M2 => 6, _ => 4 },
            PerHeadScale = c.ScaleMode == KvScaleMode.PerHead ? 1 : 0,
            KScaleOffset = cache.KScaleOffset, VScaleOffset = cache.VScaleOffset, KZeroOffset = cache.KZeroOffset, VZeroOffset = cache.VZeroOffset,
        };
        long rows = 2L * plan.Tokens * c.KvHeads;
        int groups = checked((int)((rows + KvAppendKernels.RowsPerGroup - 1) / KvAppendKernels.RowsPerGroup));
        _append(stream, new KernelConfig(groups, 32 * KvAppendKernels.RowsPerGroup), keys, values, cache.K, cache.V, cache.Scales, _appendTargets.View, a);
    }

    /// <summary>Merges the states (one per element of <paramref name="lse"/>, <paramref name="d"/> values each) in place; with
    /// <paramref name="clearEmpty"/>, rows left with no weight become 0 (final outputs).</summary>
    public void MergeStates(AcceleratorStream stream, ArrayView<float> v, ArrayView<float> lse, ArrayView<float> other, ArrayView<float> otherLse, int d,
        bool clearEmpty = false)
    {
        if (lse.Length > 0) _mergeStates(stream, (int)lse.Length * PagedAttentionKernels.MergeLanes, v, lse, other, otherLse, d, clearEmpty ? 1 : 0);
    }

    /// <summary>Runs a cascade plan: the first shared level into output (and lse); every further level (the suffix last) into
    /// scratch, merged in after it.</summary>
    public void LaunchCascade(AcceleratorStream stream, CascadePlan plan, GpuKvCache cache, ArrayView<float> q, ArrayView<float> output, ArrayView<float>? lse,
        ArrayView<float>? rope = null)
    {
        int d = plan.Shape.HeadDim;
        long rows = (long)plan.QueryRows * plan.Shape.QoHeads;
        if (_cascadeScratch is null || _cascadeScratch.Length < rows * (d + 2))
        {
            _cascadeScratch?.Dispose();
            _cascadeScratch = _accelerator.Allocate1D<float>(Math.Max(1, rows * (d + 2)));
        }
        var scratch = _cascadeScratch.View;
        var levelOut = scratch.SubView(0, rows * d);
        var levelLse = scratch.SubView(rows * d, rows);
        var stateLse = lse ?? scratch.SubView(rows * (d + 1), rows);
        Launch(stream, plan.Prefix, cache, q, output, stateLse, rope);
        for (int l = 1; l < plan.SharedLevels.Count; l++)
        {
            Launch(stream, plan.SharedLevels[l], cache, q, levelOut, levelLse, rope);
            MergeStates(stream, output, stateLse, levelOut, levelLse, d);
        }
        Launch(stream, plan.Suffix, cache, q, levelOut, levelLse, rope);
        MergeStates(stream, output, stateLse, levelOut, levelLse, d, clearEmpty: true);
        if (plan.Sinks is not null) ApplySinks(stream, plan, output, stateLse); // once, after every level
    }

    /// <summary>Merges each (row, head) state of a finished plan with its head's sink (the plan's metadata holds them).</summary>
    private void ApplySinks(AcceleratorStream stream, AttentionPlan plan, ArrayView<float> output, ArrayView<float> lse)
    {
        var data = PlanData(stream, plan);
        if (lse.Length > 0)
            _applySinks(stream, (int)lse.Length * PagedAttentionKernels.MergeLanes, output, lse, data.Meta.View, data.Args.SinkOffset,
                plan.Shape.QoHeads, plan.Shape.HeadDim);
    }

    /// <summary>Starts a backend call: plans used from here on are not evicted before the call ends (a cascade uses several).</summary>
    public void BeginCall() => _call++;

    /// <summary>Plans with device metadata cached (for tests).</summary>
    public int CachedPlans => _recent.Count;

    /// <summary>Evicted plans' metadata not yet freed (for tests).</summary>
    public int RetiredPlans => _retired.Count;

    /// <summary>The plan's device metadata, uploaded on its first use. Past <see cref="MaxCachedPlans"/> the least recently
    /// used plan of an earlier call is evicted; its buffers are freed after the stream's next synchronization (kernels
    /// queued with them may still run), or here with one when more than <see cref="MaxCachedPlans"/> wait.</summary>
    private GpuPlanData PlanData(AcceleratorStream stream, AttentionPlan plan)
    {
        int i = IndexOf(plan);
        GpuPlanData data;
        if (i >= 0)
        {
            data = _recent[i].Data;
            _recent.RemoveAt(i);
        }
        else data = new GpuPlanData(_accelerator, stream, plan);
        _recent.Add((plan, data, _call));
        while (_recent.Count > MaxCachedPlans && _recent[0].Call < _call)
        {
            _retired.Add(_recent[0].Data);
            _recent.RemoveAt(0);
        }
        if (_retired.Count > MaxCachedPlans) FreeRetired(stream, synchronized: false);
        return data;
    }

    private int IndexOf(AttentionPlan plan)
    {
        for (int i = 0; i < _recent.Count; i++)
            if (ReferenceEquals(_recent[i].Plan, plan)) return i;
        return -1;
    }

    /// <summary>Frees evicted plans' buffers, synchronizing the stream first unless the caller just did.</summary>
    public void FreeRetired(AcceleratorStream stream, bool synchronized)
    {
        if (_retired.Count == 0) return;
        if (!synchronized) stream.Synchronize();
        foreach (var d in _retired) d.Dispose();
        _retired.Clear();
    }

    /// <summary>Frees the plan's device metadata now (after pending work); false when none is cached.</summary>
    public bool Release(AcceleratorStream stream, AttentionPlan plan)
    {
        int i = IndexOf(plan);
        if (i < 0) return false;
        stream.Synchronize();
        _recent[i].Data.Dispose();
        _recent.RemoveAt(i);
        FreeRetired(stream, synchronized: true);
        return true;
    }

    /// <summary>Queues one plan's attention. <paramref name="rope"/> is the device copy of the plan's
    /// <c>AttentionOptions.Rope</c> table (required when the plan has one).</summary>
    public void Launch(AcceleratorStream stream, AttentionPlan plan, GpuKvCache cache, ArrayView<float> q, ArrayView<float> output, ArrayView<float>? lse,
        ArrayView<float>? rope = null)
    {
        if (plan.Options.Rope is not null && rope is null) throw new InvalidOperationException("The plan applies Rope; its device table is missing.");
        var data = PlanData(stream, plan);
        if (plan.Sinks is not null && lse is null)
        {
            // The sinks need every row's lse: into scratch when the caller wants none.
            long rows = (long)plan.QueryRows * plan.Shape.QoHeads;
            if (_sinkLse is null || _sinkLse.Length < rows)
            {
                _sinkLse?.Dispose();
                _sinkLse = _accelerator.Allocate1D<float>(Math.Max(rows, 64));
            }
            lse = _sinkLse.View.SubView(0, rows);
        }
        var c = cache.Source;
        var a = data.Args;
        a.PageStride = c.PageStride;
        a.TokenStride = c.TokenStride;
        a.HeadStride = c.HeadStride;
        a.RowBytes = c.RowBytes;
        a.HeadDim = plan.Shape.HeadDim;
        a.QoHeads = plan.Shape.QoHeads;
        a.Group = plan.Shape.GroupSize;
        a.DType = c.DType switch { DType.F32 => 0, DType.F16 => 1, DType.BF16 => 2, DType.I8 => 3, DType.F8E4M3 => 5, DType.F8E5M2 => 6, _ => 4 };
        a.PerHeadScale = c.ScaleMode == KvScaleMode.PerHead ? 1 : 0; // int8 or fp8
        a.Causal = plan.Options.Causal ? 1 : 0;
        a.WindowLeft = plan.Options.WindowLeft;
        a.SmScale = plan.SmScale;
        a.SoftCap = plan.Options.LogitsSoftCap;
        a.WriteLse = lse is null ? 0 : 1;
        a.KeepEmpty = plan.KeepsEmptyStates ? 1 : 0;
        a.KScaleOffset = cache.KScaleOffset;
        a.VScaleOffset = cache.VScaleOffset;
        a.KZeroOffset = cache.KZeroOffset;
        a.VZeroOffset = cache.VZeroOffset;
        var lseView = lse ?? _dummy.View;
        if (plan.Options.QuantizedQueryDot && c.DType is DType.I8 or DType.I4 && q.Length > 0)
        {
            // int8 queries: the kernel reads code·s, which the oracle's logits are computed from.
            if (_quantizedQueries is null || _quantizedQueries.Length < q.Length)
            {
                _quantizedQueries?.Dispose();
                _quantizedQueries = _accelerator.Allocate1D<float>(q.Length);
            }
            var dq = _quantizedQueries.View.SubView(0, q.Length);
            _dequantizeQueries(stream, (int)(q.Length / a.HeadDim), q, dq, a.HeadDim);
            q = dq;
        }
        a.PageCapacity = c.PageSize;
        if (plan.Options.Rope is { } ropeTable)
        {
            a.RopeRotary = ropeTable.RotaryDim;
            a.RopeInterleaved = ropeTable.Interleaved ? 1 : 0;
            a.RopeMaxPositions = ropeTable.MaxPositions;
        }
        if (a.UnitCount > 0)
        {
            _attend(stream, new KernelConfig(a.UnitCount, 32 * a.Warps),
                q, output, lseView, data.Work.View, cache.K, cache.V, cache.Scales, data.Meta.View, rope ?? _dummy.View, a);
        }
        if (data.HasSplits) _merge(stream, a.SplitRows * a.QoHeads * PagedAttentionKernels.MergeLanes, output, lseView, data.Work.View, data.Meta.View, a);
        if (plan.Sinks is not null && lse is { } sl) ApplySinks(stream, plan, output, sl);
    }

    public void Dispose()
    {
        foreach (var e in _recent) e.Data.Dispose();
        foreach (var d in _retired) d.Dispose();
        _quantizedQueries?.Dispose();
        _sinkLse?.Dispose();
        _appendTargets?.Dispose();
        _cascadeScratch?.Dispose();
        _dummy.Dispose();
    }
}
