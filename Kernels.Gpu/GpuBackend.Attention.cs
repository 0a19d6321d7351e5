using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Gpu.Attention;
using ILGPU;

namespace Kernels.Gpu;

public sealed partial class GpuBackend : IPagedAttentionOps
{
    private PagedAttentionLauncher? _attention;

    /// <inheritdoc/>
    /// <remarks>Two work items per multiprocessor, and at least the planner's default (<see cref="DecodePlanner.TargetItems"/>,
    /// 64): each item becomes one thread group per kv head, so a Llama-3-8B decode (8 kv heads) gets ≈ 16 groups per
    /// multiprocessor, about four rounds of the 4 decode groups an H200 multiprocessor holds at once (528 groups on 132),
    /// instead of one round whose last groups leave most of it idle. Not timed: no GPU was lent to this work.</remarks>
    public int DecodeTargetItems => Math.Max(DecodePlanner.TargetItems, 2 * Accelerator.NumMultiprocessors);

    /// <inheritdoc/>
    public DeviceKvCache UploadKvCache(PagedKvCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Wrap(() => new GpuKvCache(Accelerator, Stream, cache));
    }

    /// <inheritdoc/>
    /// <remarks>Plan metadata (work items, page lists, split-KV workspace) is uploaded on the first run of each plan and reused
    /// for every layer; the <see cref="CachedAttentionPlans"/> (8) most recently used plans stay cached, older ones are freed after the stream's next
    /// synchronization (<see cref="Synchronize"/>), so a runtime that plans every step does not accumulate device memory;
    /// <see cref="ReleasePlan"/> frees one now. The CPU-side checks of <c>PagedDecode.Run</c> apply (head_dim a multiple of
    /// 32 up to 256).</remarks>
    public void Attention(AttentionPlan plan, DeviceTensor<float> q, DeviceKvCache cache, DeviceTensor<float> output, DeviceTensor<float>? lse)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(output);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var gc = OwnCache(cache);
        var shape = plan.Shape;
        plan.CheckRun(gc.Source, q.Shape.ElementCount, output.Shape.ElementCount, lse is null ? -1 : lse.Shape.ElementCount);
        if (ReferenceEquals(q, output) || ReferenceEquals(q, lse) || ReferenceEquals(output, lse))
            throw new ArgumentException("q, output and lse must be three different tensors: the kernels read q while writing output and lse.", ReferenceEquals(q, output) ? nameof(output) : nameof(lse));
        if ((long)plan.QueryRows * shape.QoHeads > int.MaxValue / PagedAttentionKernels.MergeLanes)
            throw new NotSupportedException($"GPU attention takes at most {int.MaxValue / PagedAttentionKernels.MergeLanes} (query row, head) pairs per call; the plan has {(long)plan.QueryRows * shape.QoHeads}.");
        if (shape.HeadDim % 32 != 0 || shape.HeadDim > 256)
            throw new NotSupportedException($"GPU attention supports head_dim a multiple of 32 up to 256; got {shape.HeadDim}.");
        ArrayView<float> qv = AsGpu(q, nameof(q)).View, ov = AsGpu(output, nameof(output)).View;
        ArrayView<float>? lv = lse is null ? null : AsGpu(lse, nameof(lse)).View;
        _attention ??= NewAttentionLauncher();
        _attention.BeginCall();
        Wrap(() =>
        {
            // In-kernel RoPE reads this backend's device copy of the table (uploaded once, shared with ApplyRope).
            ArrayView<float>? rope = plan.Options.Rope is { } table ? (_rope ??= Own(new RopeLauncher(Accelerator))).Table(table) : null;
            if (plan is CascadePlan cascade) _attention.LaunchCascade(Stream, cascade, gc, qv, ov, lv, rope);
            else _attention.Launch(Stream, plan, gc, qv, ov, lv, rope);
            return 0;
        });
    }

    /// <summary>Frees this backend's device copy of <paramref name="plan"/>'s metadata now (after pending work); a later run
    /// of the plan uploads it again. Plans are also evicted on their own (see <see cref="Attention"/>).</summary>
    /// <param name="plan">The plan.</param>
    /// <returns>True if a copy was held.</returns>
    public bool ReleasePlan(AttentionPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _attention is not null && Wrap(() => _attention.Release(Stream, plan));
    }

    /// <summary>The default of <see cref="CachedAttentionPlans"/>.</summary>
    public const int DefaultCachedAttentionPlans = 8;

    private int _cachedPlans = DefaultCachedAttentionPlans;

    /// <summary>How many attention plans keep their device metadata between runs (default 8). A runtime that runs more
    /// distinct plans per step (per-layer windows, many cascade levels) raises it, so that plans are not uploaded again every
    /// step; evicted plans are freed at the next <see cref="Synchronize"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is below 1.</exception>
    public int CachedAttentionPlans
    {
        get => _cachedPlans;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _cachedPlans = value;
            if (_attention is not null) _attention.MaxCachedPlans = value;
        }
    }

    private PagedAttentionLauncher NewAttentionLauncher() => Own(new PagedAttentionLauncher(Accelerator) { MaxCachedPlans = _cachedPlans });

    /// <summary>Plans with cached device metadata, and evicted ones not yet freed (for tests).</summary>
    internal (int Cached, int Retired) PlanCache => _attention is null ? (0, 0) : (_attention.CachedPlans, _attention.RetiredPlans);

    /// <inheritdoc/>
    /// <remarks>One warp per (token, kv head, K or V) row, the (page, slot) targets uploaded per call; the host cache is not
    /// touched (<see cref="DeviceKvCache.Download"/> copies the device pools back).</remarks>
    public void AppendKv(KvAppendPlan plan, DeviceTensor<float> keys, DeviceTensor<float> values, DeviceKvCache cache)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(cache);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var gc = OwnCache(cache);
        gc.Source.CheckAppend(plan, keys.Shape.ElementCount, values.Shape.ElementCount);
        ArrayView<float> kv = AsGpu(keys, nameof(keys)).View, vv = AsGpu(values, nameof(values)).View;
        _attention ??= NewAttentionLauncher();
        Wrap(() =>
        {
            _attention.Append(Stream, plan, gc, kv, vv);
            return 0;
        });
    }

    /// <inheritdoc/>
    /// <remarks>Device-to-device copies of each page's K and V bytes and of its rows' scales and zero points, on the
    /// backend's stream.</remarks>
    public void CopyPages(DeviceKvCache cache, ReadOnlySpan<PageCopy> copies)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var gc = OwnCache(cache);
        gc.Source.CheckCopies(copies);
        var list = copies.ToArray();
        Wrap(() =>
        {
            foreach (var c in list) gc.CopyPage(Stream, c.Source, c.Destination);
            return 0;
        });
    }

    /// <summary>Returns <paramref name="cache"/> as a live cache of this backend, or throws naming the parameter: a cache
    /// uploaded by another backend (another accelerator) holds its pools in memory this one cannot address.</summary>
    private GpuKvCache OwnCache(DeviceKvCache cache)
    {
        if (cache is not GpuKvCache gc || !ReferenceEquals(gc.Accelerator, Accelerator))
            throw new ArgumentException($"The cache ({cache.GetType().Name}) was not made by this GPU backend's UploadKvCache; upload the host cache to this backend.", nameof(cache));
        ObjectDisposedException.ThrowIf(gc.IsDisposed, gc);
        return gc;
    }

    /// <inheritdoc/>
    /// <remarks>32 GPU threads per state row, lane i on elements i, i + 32, … (coalesced).</remarks>
    public void MergeStates(DeviceTensor<float> v, DeviceTensor<float> lse, DeviceTensor<float> other, DeviceTensor<float> otherLse)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int d = MergeStatesArguments.Check(v, lse, other, otherLse);
        if (lse.Shape.ElementCount > int.MaxValue / PagedAttentionKernels.MergeLanes)
            throw new ArgumentException($"lse has {lse.Shape.ElementCount} rows; one GPU merge takes at most {int.MaxValue / PagedAttentionKernels.MergeLanes} (merge in parts).", nameof(lse));
        ArrayView<float> vv = AsGpu(v, nameof(v)).View, lv = AsGpu(lse, nameof(lse)).View;
        ArrayView<float> ov = AsGpu(other, nameof(other)).View, olv = AsGpu(otherLse, nameof(otherLse)).View;
        _attention ??= NewAttentionLauncher();
        Wrap(() =>
        {
            _attention.MergeStates(Stream, vv, lv, ov, olv, d);
            return 0;
        });
    }
}
