using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Attention;

namespace Kernels.Cpu;

public sealed partial class CpuBackend : IPagedAttentionOps
{
    private sealed class HostKvCache(CpuBackend backend, PagedKvCache source) : DeviceKvCache(source)
    {
        public CpuBackend Backend { get; } = backend;

        // The pools are host memory, but a cache of a disposed backend is unusable on either backend (the GPU frees them).
        private void ThrowIfUnusable()
        {
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            Backend.ThrowIfDisposed();
        }

        public override void Update() => ThrowIfUnusable();

        public override void Download() => ThrowIfUnusable();

        protected override void CopyFromHost(PagedKvCache host, ReadOnlySpan<PageCopy> copies)
        {
            ThrowIfUnusable();
            base.CopyFromHost(host, copies);
        }

        protected override void CopyToHost(PagedKvCache host, ReadOnlySpan<PageCopy> copies)
        {
            ThrowIfUnusable();
            base.CopyToHost(host, copies);
        }
    }

    /// <summary>Split-KV chunks per thread that <see cref="DecodeTargetItems"/> asks for. On 2 cores (2026-12-02, fp16,
    /// alternated runs): 8 per thread ran 12–16 % faster than the planner's default of 64 in all at 1 × 32k and 8 × 4k (a
    /// scratch program, pages in order), and 4 per thread faster again at 8 × 512 paged (the bench harness: 539–595 against
    /// 653–699 µs; the sequences stay whole, no merge), alike elsewhere within the VM's ≈ 10 % noise.</summary>
    public const int DecodeItemsPerThread = 4;

    /// <inheritdoc/>
    /// <remarks><see cref="DecodeItemsPerThread"/> × <see cref="KernelOptions.EffectiveParallelism"/>.</remarks>
    public int DecodeTargetItems => checked(DecodeItemsPerThread * Options.EffectiveParallelism); // ≤ 4 × KernelOptions.MaxThreads

    /// <inheritdoc/>
    public DeviceKvCache UploadKvCache(PagedKvCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ThrowIfDisposed();
        return new HostKvCache(this, cache);
    }

    /// <inheritdoc/>
    public void Attention(AttentionPlan plan, DeviceTensor<float> q, DeviceKvCache cache, DeviceTensor<float> output, DeviceTensor<float>? lse)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(cache);
        RequireHostCache(cache);
        var qs = AsCpu(q, nameof(q)).Span;
        var os = AsCpu(output, nameof(output)).Span;
        var ls = lse is null ? default : AsCpu(lse, nameof(lse)).Span;
        switch (plan)
        {
            case DecodePlan d: PagedDecode.Run(d, qs, cache.Source, os, ls, Options); break;
            case PrefillPlan p: PagedPrefill.Run(p, qs, cache.Source, os, ls, Options); break;
            case CascadePlan c: CascadeDecode.Run(c, qs, cache.Source, os, ls, Options); break;
            default: throw new NotSupportedException($"Plan type {plan.GetType().Name} is not supported; use DecodePlanner, PrefillPlanner or CascadePlanner.");
        }
    }

    /// <inheritdoc/>
    public void AppendKv(KvAppendPlan plan, DeviceTensor<float> keys, DeviceTensor<float> values, DeviceKvCache cache)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(cache);
        RequireHostCache(cache);
        cache.Source.WriteTokens(plan, AsCpu(keys, nameof(keys)).Span, AsCpu(values, nameof(values)).Span);
    }

    /// <inheritdoc/>
    public void CopyPages(DeviceKvCache cache, ReadOnlySpan<PageCopy> copies)
    {
        RequireHostCache(cache);
        cache.Source.CheckCopies(copies);
        foreach (var c in copies) cache.Source.CopyPage(c.Source, c.Destination);
    }

    /// <inheritdoc/>
    public void MergeStates(DeviceTensor<float> v, DeviceTensor<float> lse, DeviceTensor<float> other, DeviceTensor<float> otherLse)
    {
        ThrowIfDisposed();
        int d = MergeStatesArguments.Check(v, lse, other, otherLse);
        Span<float> vs = AsCpu(v, nameof(v)).Span, ls = AsCpu(lse, nameof(lse)).Span;
        ReadOnlySpan<float> os = AsCpu(other, nameof(other)).Span, ols = AsCpu(otherLse, nameof(otherLse)).Span;
        for (int r = 0; r < ls.Length; r++) AttentionState.MergeInPlace(vs.Slice(r * d, d), ref ls[r], os.Slice(r * d, d), ols[r]);
    }

    /// <summary>Throws unless <paramref name="cache"/> is a live host cache (from a CPU backend's <see cref="UploadKvCache"/>):
    /// a device cache's host copy is not the memory its appends and copies write.</summary>
    private void RequireHostCache(DeviceKvCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ThrowIfDisposed();
        if (cache is not HostKvCache)
            throw new ArgumentException($"The cache ({cache.GetType().Name}) was not made by a CPU backend's UploadKvCache; its pages live on another device.", nameof(cache));
        ObjectDisposedException.ThrowIf(cache.IsDisposed, cache);
    }
}
