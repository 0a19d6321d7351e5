using Kernels.Attention.Paging;
using Kernels.Attention.Planning;

namespace Kernels.Attention;

/// <summary>A paged KV cache as a backend holds it: the host cache itself on the CPU, a device copy on a GPU.</summary>
/// <remarks>Made by <see cref="IPagedAttentionOps.UploadKvCache"/>. A device copy is a snapshot: call <see cref="Update()"/> (or <see cref="Update(ReadOnlySpan{int})"/> with the pages written)
/// after appending to the host cache. Dispose it before its backend.</remarks>
public abstract class DeviceKvCache : IDisposable
{
    /// <summary>Wraps <paramref name="source"/>.</summary>
    /// <param name="source">The host cache.</param>
    protected DeviceKvCache(PagedKvCache source)
    {
        ArgumentNullException.ThrowIfNull(source);
        Source = source;
    }

    /// <summary>The host cache this mirrors (geometry and format).</summary>
    public PagedKvCache Source { get; }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Copies the host cache's current contents to the device (no-op on the CPU). After
    /// <see cref="IPagedAttentionOps.AppendKv"/> on a device, the device holds rows the host cache lacks: call
    /// <see cref="Download"/> first if both are to agree.</summary>
    public abstract void Update();

    /// <summary>Copies the given pages of the host cache (K/V bytes, scales and zero points) to the device: after host writes
    /// into a few pages (a decode step's appends), instead of the whole pool. This base implementation checks the ids and
    /// copies everything (<see cref="Update()"/>); the GPU backend copies the pages only.</summary>
    /// <param name="pages">Page ids.</param>
    /// <exception cref="ArgumentOutOfRangeException">A page id is outside the pool (checked before any copy).</exception>
    public virtual void Update(ReadOnlySpan<int> pages)
    {
        CheckPages(pages);
        Update();
    }

    /// <summary>Throws unless every id in <paramref name="pages"/> is a page of the pool.</summary>
    /// <param name="pages">Page ids.</param>
    protected void CheckPages(ReadOnlySpan<int> pages)
    {
        for (int i = 0; i < pages.Length; i++)
            if ((uint)pages[i] >= (uint)Source.NumPages)
                throw new ArgumentOutOfRangeException(nameof(pages), $"pages[{i}] = {pages[i]} is outside the pool's {Source.NumPages} pages.");
    }

    /// <summary>Swaps pages in from a host pool (vLLM's <c>swap_blocks</c> CPU → GPU, for a preempted request that resumes):
    /// page <c>c.Source</c> of <paramref name="host"/> becomes page <c>c.Destination</c> of this cache, K/V bytes, scales and
    /// zero points, for each copy in order. <paramref name="host"/> is a separate pool (the swap space), not
    /// <see cref="Source"/>; on a GPU only the device copy changes.</summary>
    /// <param name="host">The host pool, in the same format (<see cref="PagedKvCache.CheckSameFormat"/>).</param>
    /// <param name="copies">(host page → page here) pairs.</param>
    /// <exception cref="ArgumentException">The pools store pages differently (checked before any copy).</exception>
    /// <exception cref="ArgumentOutOfRangeException">A page id is outside its pool (checked before any copy).</exception>
    public void SwapIn(PagedKvCache host, ReadOnlySpan<PageCopy> copies)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        Source.CheckSameFormat(host, nameof(host));
        PagedKvCache.CheckCopies(copies, host, Source, nameof(copies));
        CopyFromHost(host, copies);
    }

    /// <summary>Swaps pages out to a host pool (vLLM's <c>swap_blocks</c> GPU → CPU, when a request is preempted): page
    /// <c>c.Source</c> of this cache becomes page <c>c.Destination</c> of <paramref name="host"/>, with its non-finite flags.</summary>
    /// <param name="host">The host pool, in the same format.</param>
    /// <param name="copies">(page here → host page) pairs.</param>
    /// <exception cref="ArgumentException">The pools store pages differently (checked before any copy).</exception>
    /// <exception cref="ArgumentOutOfRangeException">A page id is outside its pool (checked before any copy).</exception>
    public void SwapOut(PagedKvCache host, ReadOnlySpan<PageCopy> copies)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        Source.CheckSameFormat(host, nameof(host));
        PagedKvCache.CheckCopies(copies, Source, host, nameof(copies));
        CopyToHost(host, copies);
    }

    /// <summary>Copies checked pages of <paramref name="host"/> into this cache (<see cref="SwapIn"/>). This base
    /// implementation copies into <see cref="Source"/>, which is the cache itself on the CPU.</summary>
    /// <param name="host">The host pool.</param>
    /// <param name="copies">(host page → page here) pairs, validated.</param>
    protected virtual void CopyFromHost(PagedKvCache host, ReadOnlySpan<PageCopy> copies)
    {
        foreach (var c in copies) Source.CopyPageFrom(host, c.Source, c.Destination);
    }

    /// <summary>Copies checked pages of this cache into <paramref name="host"/> (<see cref="SwapOut"/>). This base
    /// implementation copies from <see cref="Source"/>.</summary>
    /// <param name="host">The host pool.</param>
    /// <param name="copies">(page here → host page) pairs, validated.</param>
    protected virtual void CopyToHost(PagedKvCache host, ReadOnlySpan<PageCopy> copies)
    {
        foreach (var c in copies) host.CopyPageFrom(Source, c.Source, c.Destination);
    }

    /// <summary>Copies the device's contents (K/V bytes, scales and zero points) back into the host cache, e.g. after
    /// <see cref="IPagedAttentionOps.AppendKv"/> on a GPU (no-op on the CPU, where the host cache is the device cache).</summary>
    public virtual void Download()
    {
    }

    /// <summary>Frees device memory.</summary>
    /// <param name="disposing">True from <see cref="Dispose()"/>.</param>
    protected virtual void Dispose(bool disposing) => IsDisposed = true;

    /// <inheritdoc/>
    public void Dispose()
    {
        if (IsDisposed) return;
        Dispose(true);
        GC.SuppressFinalize(this);
    }
}

/// <summary>Paged attention on a backend: the same plans run on the CPU and the GPU.</summary>
/// <remarks>q and output are <c>[rows, qo_heads, head_dim]</c> fp32 tensors, lse <c>[rows, qo_heads]</c> (natural log) or null;
/// rows is the plan's <see cref="AttentionPlan.QueryRows"/>. A cache or tensor that does not match the plan, or tensors passed
/// twice (q as output, output as lse), throw <see cref="ArgumentException"/> naming it and the sizes.
/// Every op takes only tensors and caches of the backend it runs on: one from another backend (or a disposed one) throws
/// <see cref="ArgumentException"/> (<see cref="ObjectDisposedException"/>) naming the parameter, before any kernel runs.</remarks>
public interface IPagedAttentionOps
{
    /// <summary>The split-KV target this backend runs decode best with: pass it as <c>targetItems</c> to
    /// <see cref="Planning.DecodePlanner.Plan"/> and <see cref="Planning.CascadePlanner"/> (the planners cannot see the
    /// backend; their default, <see cref="Planning.DecodePlanner.TargetItems"/>, is a backend-agnostic fallback). The CPU
    /// backend asks for a few chunks per thread (each chunk costs a setup, a cold first page and a merge); the GPU backend
    /// two per multiprocessor (at least the planner's default).</summary>
    int DecodeTargetItems { get; }

    /// <summary>Makes the backend's view of a host cache.</summary>
    /// <param name="cache">The host cache.</param>
    /// <returns>The backend cache (dispose it).</returns>
    DeviceKvCache UploadKvCache(PagedKvCache cache);

    /// <summary>Runs a decode, prefill, block-sparse or cascade plan.</summary>
    /// <param name="plan">The plan.</param>
    /// <param name="q">Queries.</param>
    /// <param name="cache">The backend cache.</param>
    /// <param name="output">Outputs.</param>
    /// <param name="lse">Log-sum-exps, or null.</param>
    /// <exception cref="NotSupportedException">The backend does not implement the plan's shape (the GPU backend: head_dim
    /// not a multiple of 32, or above 256).</exception>
    /// <exception cref="ArgumentException">A tensor or the cache belongs to another backend or does not match the plan, or
    /// one tensor is passed for two of q, output and lse.</exception>
    /// <exception cref="InvalidOperationException">The plan's split workspace is smaller than the plan needs.</exception>
    void Attention(AttentionPlan plan, DeviceTensor<float> q, DeviceKvCache cache, DeviceTensor<float> output, DeviceTensor<float>? lse);

    /// <summary>Merges attention states in place, per row: <c>(v, lse) ← (v, lse) ⊕ (other, otherLse)</c> with the rule of
    /// <see cref="Reference.AttentionState"/> (FlashInfer's <c>merge_state_in_place</c>): how split-KV partials, cascade levels
    /// or results computed on different devices combine.</summary>
    /// <param name="v">States' values <c>[rows, …, head_dim]</c> (updated): its last dimension is head_dim.</param>
    /// <param name="lse">States' log-sum-exps, one per row of head_dim values (updated).</param>
    /// <param name="other">The other states' values, shaped like <paramref name="v"/>.</param>
    /// <param name="otherLse">The other states' log-sum-exps, as many as <paramref name="lse"/>.</param>
    /// <exception cref="ArgumentException">The element counts disagree (the message names them), a values tensor is also
    /// passed as a log-sum-exp tensor (<paramref name="other"/> may be <paramref name="v"/> and <paramref name="otherLse"/>
    /// <paramref name="lse"/>, to merge a state with itself), or a tensor belongs to another backend.</exception>
    void MergeStates(DeviceTensor<float> v, DeviceTensor<float> lse, DeviceTensor<float> other, DeviceTensor<float> otherLse);

    /// <summary>Writes a batch of new tokens' keys and values into the backend cache where <paramref name="plan"/> puts them
    /// (FlashInfer's <c>append_paged_kv_cache</c>, vLLM's <c>reshape_and_cache</c>), converting or quantizing exactly as
    /// <see cref="PagedKvCache.WriteToken"/> does (fp16/bf16/fp8 rounding, int8 per-token or per-head scales, int4 scale and
    /// zero per row), so the K/V the projection produced on a device never leave it.</summary>
    /// <param name="plan">The tokens' (page, slot) targets.</param>
    /// <param name="keys"><c>[tokens, kv_heads, head_dim]</c> fp32 keys.</param>
    /// <param name="values">The values, shaped like <paramref name="keys"/>.</param>
    /// <param name="cache">The backend cache. On the GPU only the device copy changes (see <see cref="DeviceKvCache.Download"/>).</param>
    /// <exception cref="ArgumentException">The plan does not fit the cache, keys/values have the wrong element count (the
    /// message names the sizes), or a tensor or the cache belongs to another backend.</exception>
    void AppendKv(KvAppendPlan plan, DeviceTensor<float> keys, DeviceTensor<float> values, DeviceKvCache cache);

    /// <summary>Copies whole pages (K, V, scales and zero points) within the backend cache, in order: the copy-on-write
    /// copies <see cref="PageAllocator.Reserve"/> returns, replayed on a device (vLLM's <c>copy_blocks</c>).</summary>
    /// <param name="cache">The backend cache.</param>
    /// <param name="copies">The copies, applied one after another.</param>
    /// <exception cref="ArgumentOutOfRangeException">A page id is outside the pool (checked before any copy).</exception>
    /// <exception cref="ArgumentException">The cache belongs to another backend.</exception>
    void CopyPages(DeviceKvCache cache, ReadOnlySpan<PageCopy> copies);
}
