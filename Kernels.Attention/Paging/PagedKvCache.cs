using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Kernels.Attention.Paging;

/// <summary>
/// A page pool for the keys and values of one attention layer: <c>num_pages × page_size × kv_heads × head_dim</c> for K
/// and the same for V, in fp32, fp16, bf16, fp8 (E4M3, E5M2), int8 or int4 (FlashInfer's paged KV cache).
/// </summary>
/// <remarks>
/// <para><b>Rows.</b> The unit of storage is a <i>row</i>: the <c>head_dim</c> values of one (page, slot, head). Row index
/// <c>r = page·<see cref="PageStride"/> + slot·<see cref="TokenStride"/> + head·<see cref="HeadStride"/></c>
/// (<see cref="KvLayout.Nhd"/>: strides <c>(page_size·H, H, 1)</c>; <see cref="KvLayout.Hnd"/>: <c>(page_size·H, 1, page_size)</c>),
/// and its bytes start at <c>r·<see cref="RowBytes"/></c> in the K or V pool (one page's bytes:
/// <see cref="GetPageKeys"/> / <see cref="GetPageValues"/>). K and V are two separate pools (FlashInfer's
/// <c>(k_cache, v_cache)</c> tuple form) in 64-byte aligned native memory, so a pool may exceed 2 GB; dispose the cache to
/// free them (the finalizer frees them otherwise).</para>
/// <para><b>Element formats.</b> fp32, fp16 (IEEE binary16), bf16: little-endian, <c>RowBytes = head_dim·size</c>.
/// fp8 E4M3 / E5M2 (OCP; FlashInfer's and vLLM's fp8 KV without scales): one byte per value, written with
/// <see cref="Float8"/>'s saturating round-to-nearest-even (a value past ±448 / ±57344, or ±Inf, is stored as that
/// largest finite value; NaN as NaN).
/// int8: one signed byte per value, <c>x = s·q</c> (see <see cref="KvScaleMode"/>). int4 (QServe KV4): <c>RowBytes = head_dim/2</c>;
/// byte <c>i</c> holds element <c>i</c> in its low nibble and element <c>i + head_dim/2</c> in its high nibble (so a
/// vector of bytes unpacks into two contiguous halves of the row without a shuffle); <c>x = s·(q − z)</c> with a float
/// scale and zero per row in <see cref="KeyScales"/>/<see cref="KeyZeros"/>.</para>
/// <para><b>Scales.</b> int8 per-token and int4: one scale (and zero) per row, indexed by the row index. int8 per-head:
/// <see cref="KeyScales"/> has <c>kv_heads</c> entries.</para>
/// <para>Memory is pinned (pinned object heap), so kernels address it by pointer; the pool is limited to
/// <see cref="Array.MaxLength"/> bytes per K or V pool. Writing (<see cref="WriteToken"/>) quantizes;
/// <see cref="ReadKey"/>/<see cref="ReadValue"/> dequantize exactly as the kernels do, so the reference can run on the
/// dequantized cache and check a kernel to float rounding.</para>
/// </remarks>
public sealed unsafe class PagedKvCache : IDisposable
{
    private readonly NativePool _k, _v; // native: a pool may exceed the 2 GB of a managed array
    private readonly float[] _kScale, _vScale, _kZero, _vZero;
    private readonly byte[] _nonFinite; // per page: 1 once a non-finite fp16/fp8 value was stored in its K or V

    /// <summary>Creates a zero-filled cache.</summary>
    /// <param name="numPages">Pages in the pool (≥ 1).</param>
    /// <param name="pageSize">Tokens per page (≥ 1).</param>
    /// <param name="kvHeads">Key/value heads (≥ 1).</param>
    /// <param name="headDim">Values per head (≥ 1; even for int4).</param>
    /// <param name="dtype"><see cref="DType.F32"/>, <see cref="DType.F16"/>, <see cref="DType.BF16"/>, <see cref="DType.F8E4M3"/>,
    /// <see cref="DType.F8E5M2"/>, <see cref="DType.I8"/> or <see cref="DType.I4"/>.</param>
    /// <param name="layout">Page layout.</param>
    /// <param name="scaleMode">int8: <see cref="KvScaleMode.PerHead"/> or <see cref="KvScaleMode.PerToken"/> (default); fp8:
    /// <see cref="KvScaleMode.None"/> (default) or <see cref="KvScaleMode.PerHead"/>.</param>
    /// <param name="keyHeadScales">Per-head mode: one positive scale per kv head for K.</param>
    /// <param name="valueHeadScales">Per-head mode: one positive scale per kv head for V.</param>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    /// <exception cref="NotSupportedException">The dtype or scale mode is not supported (the message lists what is).</exception>
    /// <exception cref="ArgumentException">Per-head scales are missing, of the wrong length or not positive; or a row-scaled
    /// pool has more than <see cref="Array.MaxLength"/> rows.</exception>
    /// <exception cref="OutOfMemoryException">The pools cannot be allocated.</exception>
    public PagedKvCache(int numPages, int pageSize, int kvHeads, int headDim, DType dtype, KvLayout layout = KvLayout.Nhd,
        KvScaleMode scaleMode = KvScaleMode.None, ReadOnlySpan<float> keyHeadScales = default, ReadOnlySpan<float> valueHeadScales = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numPages);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        if (layout is not (KvLayout.Nhd or KvLayout.Hnd)) throw new ArgumentOutOfRangeException(nameof(layout));
        if (headDim > int.MaxValue / 4) // RowBytes (4·head_dim for fp32) must fit an int
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, $"head_dim {headDim} is too large: at most {int.MaxValue / 4}.");
        RowBytes = dtype switch
        {
            DType.F32 => 4 * headDim,
            DType.F16 or DType.BF16 => 2 * headDim,
            DType.I8 or DType.F8E4M3 or DType.F8E5M2 => headDim,
            DType.I4 when headDim % 2 == 0 => headDim / 2,
            DType.I4 => throw new NotSupportedException($"int4 KV needs an even head_dim; got {headDim}."),
            _ => throw new NotSupportedException($"KV dtype {dtype} is not supported; supported: F32, F16, BF16, F8E4M3, F8E5M2, I8, I4."),
        };
        if (dtype == DType.I8 && scaleMode == KvScaleMode.None) scaleMode = KvScaleMode.PerToken;
        bool fp8 = dtype is DType.F8E4M3 or DType.F8E5M2;
        if (dtype != DType.I8 && scaleMode != KvScaleMode.None && !(fp8 && scaleMode == KvScaleMode.PerHead))
            throw new NotSupportedException($"Scale mode {scaleMode} applies to I8 KV (PerHead, PerToken) and fp8 KV (PerHead) only; {dtype} takes KvScaleMode.None.");
        NumPages = numPages;
        PageSize = pageSize;
        KvHeads = kvHeads;
        HeadDim = headDim;
        DType = dtype;
        Layout = layout;
        ScaleMode = scaleMode;
        RowCount = (long)numPages * pageSize * kvHeads;
        if ((dtype is DType.I4 || (dtype == DType.I8 && scaleMode != KvScaleMode.PerHead)) && RowCount > Array.MaxLength)
            ThrowHelper.Argument(nameof(numPages), $"The pool has {RowCount} rows; per-row scales support at most {Array.MaxLength}.");
        long bytes = RowCount * RowBytes;
        _k = new NativePool(bytes);
        _v = new NativePool(bytes);
        _kZero = _vZero = [];
        _nonFinite = GC.AllocateArray<byte>(numPages, pinned: true);
        if (scaleMode == KvScaleMode.PerHead)
        {
            _kScale = CheckHeadScales(keyHeadScales, kvHeads, nameof(keyHeadScales));
            _vScale = CheckHeadScales(valueHeadScales, kvHeads, nameof(valueHeadScales));
        }
        else if (dtype is DType.I8 or DType.I4)
        {
            _kScale = GC.AllocateArray<float>((int)RowCount, pinned: true);
            _vScale = GC.AllocateArray<float>((int)RowCount, pinned: true);
            if (dtype == DType.I4)
            {
                _kZero = GC.AllocateArray<float>((int)RowCount, pinned: true);
                _vZero = GC.AllocateArray<float>((int)RowCount, pinned: true);
            }
        }
        else
        {
            _kScale = _vScale = [];
        }
        PageStride = (long)pageSize * kvHeads;
        TokenStride = layout == KvLayout.Nhd ? kvHeads : 1;
        HeadStride = layout == KvLayout.Nhd ? 1 : pageSize;
    }

    private static float[] CheckHeadScales(ReadOnlySpan<float> scales, int kvHeads, string name)
    {
        ThrowHelper.ThrowIfLengthMismatch(name, scales.Length, kvHeads);
        foreach (float s in scales)
            if (!(s > 0) || !float.IsFinite(s)) ThrowHelper.Argument(name, $"{name} must be finite and positive; got {s}.");
        float[] a = GC.AllocateArray<float>(kvHeads, pinned: true);
        scales.CopyTo(a);
        return a;
    }

    /// <summary>Pages in the pool.</summary>
    public int NumPages { get; }

    /// <summary>Tokens per page.</summary>
    public int PageSize { get; }

    /// <summary>Key/value heads.</summary>
    public int KvHeads { get; }

    /// <summary>Values per head.</summary>
    public int HeadDim { get; }

    /// <summary>Element type of the stored values.</summary>
    public DType DType { get; }

    /// <summary>Page layout.</summary>
    public KvLayout Layout { get; }

    /// <summary>Scale mode (int8, fp8); <see cref="KvScaleMode.None"/> otherwise.</summary>
    public KvScaleMode ScaleMode { get; }

    /// <summary>Bytes of one (token, head) row.</summary>
    public int RowBytes { get; }

    /// <summary>Rows per pool: <c>num_pages·page_size·kv_heads</c>.</summary>
    public long RowCount { get; }

    /// <summary>Rows between consecutive pages.</summary>
    public long PageStride { get; }

    /// <summary>Rows between consecutive slots of a page.</summary>
    public int TokenStride { get; }

    /// <summary>Rows between consecutive heads of a slot.</summary>
    public int HeadStride { get; }

    /// <summary>Bytes of K plus V payload (scales not included).</summary>
    public long PayloadBytes => 2 * RowCount * RowBytes;

    /// <summary>True when a row's scale lives per row (int8 per-token, int4); false for per-head or float caches.</summary>
    public bool HasRowScales => DType == DType.I4 || (DType == DType.I8 && ScaleMode == KvScaleMode.PerToken);

    /// <summary>Bytes of each of the K and V pools (<see cref="RowCount"/>·<see cref="RowBytes"/>).</summary>
    public long PoolBytes => RowCount * RowBytes;

    /// <summary>The raw key bytes of one page (<see cref="PageStride"/>·<see cref="RowBytes"/>).</summary>
    /// <param name="page">Page id.</param>
    /// <returns>A view valid until the cache is disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException">page is out of range.</exception>
    /// <exception cref="ObjectDisposedException">The cache was disposed.</exception>
    public ReadOnlySpan<byte> GetPageKeys(int page) => PageBytes(_k, page);

    /// <summary>The raw value bytes of one page.</summary>
    /// <param name="page">Page id.</param>
    /// <returns>A view valid until the cache is disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException">page is out of range.</exception>
    /// <exception cref="ObjectDisposedException">The cache was disposed.</exception>
    public ReadOnlySpan<byte> GetPageValues(int page) => PageBytes(_v, page);

    private ReadOnlySpan<byte> PageBytes(NativePool pool, int page)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(page);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(page, NumPages);
        return new ReadOnlySpan<byte>(pool.Pointer + page * PageStride * RowBytes, checked((int)(PageStride * RowBytes)));
    }

    /// <summary>Frees the K and V pools; the cache cannot be used afterwards.</summary>
    public void Dispose()
    {
        _k.Dispose();
        _v.Dispose();
    }

    /// <summary>Key scales: per row (int8 per-token, int4), per head (int8 per-head) or empty.</summary>
    public ReadOnlySpan<float> KeyScales => _kScale;

    /// <summary>Value scales, as <see cref="KeyScales"/>.</summary>
    public ReadOnlySpan<float> ValueScales => _vScale;

    /// <summary>Key zero points per row (int4) or empty.</summary>
    public ReadOnlySpan<float> KeyZeros => _kZero;

    /// <summary>Value zero points per row (int4) or empty.</summary>
    public ReadOnlySpan<float> ValueZeros => _vZero;

    /// <summary>The K pool; throws <see cref="ObjectDisposedException"/> once disposed. Callers keep the cache alive while
    /// they use it.</summary>
    internal byte* KeyPointer => _k.Pointer;

    /// <summary>The V pool, as <see cref="KeyPointer"/>.</summary>
    internal byte* ValuePointer => _v.Pointer;
    internal float[] KeyScaleArray => _kScale;
    internal float[] ValueScaleArray => _vScale;
    internal float[] KeyZeroArray => _kZero;
    internal float[] ValueZeroArray => _vZero;

    /// <summary>One byte per page, non-zero once a non-finite fp16 or fp8 value (±Inf, NaN, or a float that overflowed fp16)
    /// was stored in the page's K or V, or copied there with a page. Sticky until the page is overwritten by a page copy. The
    /// CPU kernels widen fp16 and fp8 by shifts that are exact for finite values only, and take an Inf/NaN-aware widening on
    /// flagged pages.</summary>
    internal byte[] NonFinitePageArray => _nonFinite;

    /// <summary>The row index of (page, slot, head).</summary>
    /// <param name="page">Page id.</param>
    /// <param name="slot">Slot in the page.</param>
    /// <param name="head">Kv head.</param>
    /// <returns>The row index.</returns>
    public long RowIndex(int page, int slot, int head) => page * PageStride + (long)slot * TokenStride + (long)head * HeadStride;

    /// <summary>Writes the keys and values of one token into (page, slot), converting or quantizing to <see cref="DType"/>.</summary>
    /// <param name="page">Page id.</param>
    /// <param name="slot">Slot in the page.</param>
    /// <param name="key"><c>kv_heads·head_dim</c> key values, head-major.</param>
    /// <param name="value"><c>kv_heads·head_dim</c> values.</param>
    /// <exception cref="ArgumentOutOfRangeException">page or slot is out of range.</exception>
    /// <exception cref="ArgumentException">key or value has the wrong length.</exception>
    public void WriteToken(int page, int slot, ReadOnlySpan<float> key, ReadOnlySpan<float> value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(page);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(page, NumPages);
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(slot, PageSize);
        ThrowHelper.ThrowIfLengthMismatch(nameof(key), key.Length, (long)KvHeads * HeadDim);
        ThrowHelper.ThrowIfLengthMismatch(nameof(value), value.Length, (long)KvHeads * HeadDim);
        for (int h = 0; h < KvHeads; h++)
        {
            long row = RowIndex(page, slot, h);
            WriteRow(_k, _kScale, _kZero, row, h, page, key.Slice(h * HeadDim, HeadDim));
            WriteRow(_v, _vScale, _vZero, row, h, page, value.Slice(h * HeadDim, HeadDim));
        }
    }

    /// <summary>Writes a batch of tokens' keys and values where <paramref name="plan"/> puts them, converting or quantizing to
    /// <see cref="DType"/> exactly as <see cref="WriteToken"/> does (FlashInfer's <c>append_paged_kv_cache</c> on the host).</summary>
    /// <param name="plan">The tokens' (page, slot) targets, checked against a pool of at most this cache's pages; padding tokens
    /// (page −1) are skipped.</param>
    /// <param name="keys"><c>tokens·kv_heads·head_dim</c> keys, token-major, head-major within a token.</param>
    /// <param name="values">The values, shaped like <paramref name="keys"/>.</param>
    /// <exception cref="ArgumentException">The plan was made for another page size or a larger pool, or keys/values have the
    /// wrong length.</exception>
    public void WriteTokens(KvAppendPlan plan, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        CheckAppend(plan, keys.Length, values.Length);
        int row = KvHeads * HeadDim;
        if ((long)plan.Tokens * row < ParallelAppendElements)
        {
            for (int i = 0; i < plan.Tokens; i++)
                if (plan.Pages[i] >= 0) WriteToken(plan.Pages[i], plan.Slots[i], keys.Slice(i * row, row), values.Slice(i * row, row));
            return;
        }
        // Large appends (prefill) on every core: tokens write distinct rows (the plan has no duplicate slot), and the only shared
        // state, a page's non-finite flag, is only ever set to 1.
        fixed (float* pk = keys)
        fixed (float* pv = values)
        {
            float* k = pk, v = pv;
            Parallel.For(0, plan.Tokens, i =>
            {
                if (plan.Pages[i] >= 0) WriteToken(plan.Pages[i], plan.Slots[i], new ReadOnlySpan<float>(k + (long)i * row, row), new ReadOnlySpan<float>(v + (long)i * row, row));
            });
        }
    }

    /// <summary>Appends of at least this many elements per pool (K or V) run in parallel.</summary>
    private const int ParallelAppendElements = 1 << 16;

    /// <summary>Checks an append plan and its key/value element counts against this cache (every backend's append).</summary>
    internal void CheckAppend(KvAppendPlan plan, long keys, long values)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (plan.PageSize != PageSize)
            ThrowHelper.Argument(nameof(plan), $"The plan was made for pages of {plan.PageSize} tokens; the cache's pages hold {PageSize}.");
        if (plan.NumPages > NumPages)
            ThrowHelper.Argument(nameof(plan), $"The plan was checked against a pool of {plan.NumPages} pages; the cache has {NumPages}.");
        ThrowHelper.ThrowIfLengthMismatch(nameof(keys), keys, (long)plan.Tokens * KvHeads * HeadDim);
        ThrowHelper.ThrowIfLengthMismatch(nameof(values), values, (long)plan.Tokens * KvHeads * HeadDim);
    }

    /// <summary>Throws unless <paramref name="other"/> stores pages exactly as this cache does: page size, kv heads, head_dim,
    /// dtype, layout, scale mode and, with per-head scales, the same scales (a page's bytes mean the same values in both).</summary>
    /// <param name="other">The other cache.</param>
    /// <param name="paramName">The parameter name for the exception.</param>
    /// <exception cref="ArgumentException">They differ; the message names the first difference.</exception>
    public void CheckSameFormat(PagedKvCache other, string paramName)
    {
        ArgumentNullException.ThrowIfNull(other, paramName);
        string? why = other.PageSize != PageSize ? $"page size {other.PageSize} against {PageSize}"
            : other.KvHeads != KvHeads ? $"{other.KvHeads} kv heads against {KvHeads}"
            : other.HeadDim != HeadDim ? $"head_dim {other.HeadDim} against {HeadDim}"
            : other.DType != DType ? $"dtype {other.DType} against {DType}"
            : other.Layout != Layout ? $"layout {other.Layout} against {Layout}"
            : other.ScaleMode != ScaleMode ? $"scale mode {other.ScaleMode} against {ScaleMode}"
            : ScaleMode == KvScaleMode.PerHead && !(other._kScale.AsSpan().SequenceEqual(_kScale) && other._vScale.AsSpan().SequenceEqual(_vScale))
                ? "other per-head K/V scales"
            : null;
        if (why is not null) ThrowHelper.Argument(paramName, $"The caches store pages differently: {why}.");
    }

    /// <summary>Throws unless every copy's source is a page of <paramref name="source"/> and its destination one of
    /// <paramref name="destination"/>.</summary>
    internal static void CheckCopies(ReadOnlySpan<PageCopy> copies, PagedKvCache source, PagedKvCache destination, string paramName)
    {
        for (int i = 0; i < copies.Length; i++)
            if ((uint)copies[i].Source >= (uint)source.NumPages || (uint)copies[i].Destination >= (uint)destination.NumPages)
                throw new ArgumentOutOfRangeException(paramName, $"{paramName}[{i}] = ({copies[i].Source} → {copies[i].Destination}) is outside "
                    + (ReferenceEquals(source, destination) ? $"the pool's {source.NumPages} pages." : $"the source's {source.NumPages} or the destination's {destination.NumPages} pages."));
    }

    /// <summary>Recomputes the non-finite flags of the given pages (see <see cref="RefreshNonFiniteFlags()"/>).</summary>
    internal void RefreshNonFiniteFlags(ReadOnlySpan<PageCopy> written)
    {
        foreach (var c in written) RefreshNonFiniteFlag(c.Destination);
    }

    /// <summary>Checks page copies against the pool before any is applied (every backend's <c>CopyPages</c>).</summary>
    internal void CheckCopies(ReadOnlySpan<PageCopy> copies) => CheckCopies(copies, this, this, nameof(copies));

    /// <summary>Recomputes every page's non-finite flag from its K and V bytes (fp16, fp8), after the pools were written
    /// other than through <see cref="WriteToken"/> (a device copy read back).</summary>
    internal void RefreshNonFiniteFlags()
    {
        for (int p = 0; p < NumPages; p++) RefreshNonFiniteFlag(p);
    }

    private void RefreshNonFiniteFlag(int p)
    {
        long pageBytes = PageStride * RowBytes;
        var k = new ReadOnlySpan<byte>(_k.Pointer + p * pageBytes, checked((int)pageBytes));
        var v = new ReadOnlySpan<byte>(_v.Pointer + p * pageBytes, checked((int)pageBytes));
        _nonFinite[p] = (byte)(HasNonFinite(k) || HasNonFinite(v) ? 1 : 0);
    }

    /// <summary>Whether the bytes hold an Inf/NaN code of the cache's fp16/fp8 format (vectorized searches).</summary>
    private bool HasNonFinite(ReadOnlySpan<byte> bytes)
    {
        switch (DType)
        {
            case DType.F16:
                var h = MemoryMarshal.Cast<byte, ushort>(bytes);
                return h.IndexOfAnyInRange((ushort)0x7C00, (ushort)0x7FFF) >= 0 || h.IndexOfAnyInRange((ushort)0xFC00, (ushort)0xFFFF) >= 0;
            case DType.F8E4M3:
                return bytes.IndexOfAny((byte)0x7F, (byte)0xFF) >= 0;
            case DType.F8E5M2:
                return bytes.IndexOfAnyInRange((byte)0x7C, (byte)0x7F) >= 0 || bytes.IndexOfAnyInRange((byte)0xFC, (byte)0xFF) >= 0;
            default:
                return false;
        }
    }

    /// <summary>Reads the dequantized key row of (page, slot, head): the exact values every kernel computes with.</summary>
    /// <param name="page">Page id.</param>
    /// <param name="slot">Slot.</param>
    /// <param name="head">Kv head.</param>
    /// <param name="destination"><c>head_dim</c> floats.</param>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    /// <exception cref="ArgumentException">destination is too short.</exception>
    public void ReadKey(int page, int slot, int head, Span<float> destination) => Read(_k, _kScale, _kZero, page, slot, head, destination);

    /// <summary>Reads the dequantized value row of (page, slot, head).</summary>
    /// <param name="page">Page id.</param>
    /// <param name="slot">Slot.</param>
    /// <param name="head">Kv head.</param>
    /// <param name="destination"><c>head_dim</c> floats.</param>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    /// <exception cref="ArgumentException">destination is too short.</exception>
    public void ReadValue(int page, int slot, int head, Span<float> destination) => Read(_v, _vScale, _vZero, page, slot, head, destination);

    /// <summary>Copies page <paramref name="source"/> (K, V, scales and zeros) over page <paramref name="destination"/>.</summary>
    /// <param name="source">Source page id.</param>
    /// <param name="destination">Destination page id.</param>
    /// <exception cref="ArgumentOutOfRangeException">A page id is out of range.</exception>
    public void CopyPage(int source, int destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(source);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(source, NumPages);
        ArgumentOutOfRangeException.ThrowIfNegative(destination);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(destination, NumPages);
        if (source == destination) return;
        int rows = (int)PageStride;
        long s = source * PageStride, d = destination * PageStride;
        long n = (long)rows * RowBytes;
        Buffer.MemoryCopy(_k.Pointer + s * RowBytes, _k.Pointer + d * RowBytes, n, n);
        Buffer.MemoryCopy(_v.Pointer + s * RowBytes, _v.Pointer + d * RowBytes, n, n);
        _nonFinite[destination] = _nonFinite[source];
        if (HasRowScales)
        {
            Array.Copy(_kScale, s, _kScale, d, rows);
            Array.Copy(_vScale, s, _vScale, d, rows);
        }
        if (DType == DType.I4)
        {
            Array.Copy(_kZero, s, _kZero, d, rows);
            Array.Copy(_vZero, s, _vZero, d, rows);
        }
    }

    /// <summary>Copies a page of another cache with the same geometry, dtype, layout and per-head scales (used to build
    /// the same data at other page ids).</summary>
    /// <param name="other">The source cache.</param>
    /// <param name="sourcePage">Page id in <paramref name="other"/>.</param>
    /// <param name="destinationPage">Page id here.</param>
    /// <exception cref="ArgumentException">The caches differ in geometry or format.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A page id is out of range.</exception>
    public void CopyPageFrom(PagedKvCache other, int sourcePage, int destinationPage)
    {
        CheckSameFormat(other, nameof(other));
        ArgumentOutOfRangeException.ThrowIfNegative(sourcePage);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(sourcePage, other.NumPages);
        ArgumentOutOfRangeException.ThrowIfNegative(destinationPage);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(destinationPage, NumPages);
        int rows = (int)PageStride;
        long s = sourcePage * PageStride, d = destinationPage * PageStride;
        long n = (long)rows * RowBytes;
        Buffer.MemoryCopy(other._k.Pointer + s * RowBytes, _k.Pointer + d * RowBytes, n, n);
        Buffer.MemoryCopy(other._v.Pointer + s * RowBytes, _v.Pointer + d * RowBytes, n, n);
        _nonFinite[destinationPage] = other._nonFinite[sourcePage];
        if (HasRowScales)
        {
            Array.Copy(other._kScale, s, _kScale, d, rows);
            Array.Copy(other._vScale, s, _vScale, d, rows);
        }
        if (DType == DType.I4)
        {
            Array.Copy(other._kZero, s, _kZero, d, rows);
            Array.Copy(other._vZero, s, _vZero, d, rows);
        }
    }

    private void Read(NativePool data, float[] scales, float[] zeros, int page, int slot, int head, Span<float> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(page);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(page, NumPages);
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(slot, PageSize);
        ArgumentOutOfRangeException.ThrowIfNegative(head);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(head, KvHeads);
        ThrowHelper.ThrowIfTooShort(nameof(destination), destination.Length, HeadDim);
        long row = RowIndex(page, slot, head);
        ReadOnlySpan<byte> bytes = new(data.Pointer + row * RowBytes, RowBytes);
        Span<float> dst = destination[..HeadDim];
        switch (DType)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(dst);
                break;
            case DType.F16:
                var h = MemoryMarshal.Cast<byte, Half>(bytes);
                for (int i = 0; i < HeadDim; i++) dst[i] = (float)h[i];
                break;
            case DType.BF16:
                var b = MemoryMarshal.Cast<byte, ushort>(bytes);
                for (int i = 0; i < HeadDim; i++) dst[i] = BitConverter.Int32BitsToSingle(b[i] << 16);
                break;
            case DType.F8E4M3:
                float s43 = ScaleMode == KvScaleMode.PerHead ? scales[head] : 1f;
                for (int i = 0; i < HeadDim; i++) dst[i] = Float8.E4M3ToSingle(bytes[i]) * s43;
                break;
            case DType.F8E5M2:
                float s52 = ScaleMode == KvScaleMode.PerHead ? scales[head] : 1f;
                for (int i = 0; i < HeadDim; i++) dst[i] = Float8.E5M2ToSingle(bytes[i]) * s52;
                break;
            case DType.I8:
                float s8 = ScaleMode == KvScaleMode.PerHead ? scales[head] : scales[row];
                for (int i = 0; i < HeadDim; i++) dst[i] = (sbyte)bytes[i] * s8;
                break;
            default:
                float s4 = scales[row], z = zeros[row];
                int half = HeadDim / 2;
                for (int i = 0; i < half; i++)
                {
                    dst[i] = ((bytes[i] & 0xF) - z) * s4;
                    dst[i + half] = ((bytes[i] >> 4) - z) * s4;
                }
                break;
        }
    }

    private void WriteRow(NativePool data, float[] scales, float[] zeros, long row, int head, int page, ReadOnlySpan<float> x)
    {
        Span<byte> bytes = new(data.Pointer + row * RowBytes, RowBytes);
        switch (DType)
        {
            case DType.F32:
                x.CopyTo(MemoryMarshal.Cast<byte, float>(bytes));
                break;
            case DType.F16:
                TensorPrimitives.ConvertToHalf(x, MemoryMarshal.Cast<byte, Half>(bytes)); // (Half)x for each, vectorized
                var h = MemoryMarshal.Cast<byte, ushort>(bytes);
                if (h.IndexOfAnyInRange((ushort)0x7C00, (ushort)0x7FFF) >= 0 || h.IndexOfAnyInRange((ushort)0xFC00, (ushort)0xFFFF) >= 0)
                    _nonFinite[page] = 1; // ±Inf or NaN
                break;
            case DType.BF16:
                KvRowCodec.ToBf16(x, MemoryMarshal.Cast<byte, ushort>(bytes));
                break;
            case DType.F8E4M3:
            case DType.F8E5M2:
                if (KvRowCodec.ToFloat8(x, ScaleMode == KvScaleMode.PerHead ? scales[head] : 1f, DType == DType.F8E4M3, bytes)) _nonFinite[page] = 1;
                break;
            case DType.I8:
                float s;
                if (ScaleMode == KvScaleMode.PerHead)
                {
                    s = scales[head];
                }
                else
                {
                    // max(0, max|x|), NaN if any is NaN (MathF.Max's rule, which the GPU append kernel follows).
                    float amax = KvRowCodec.HasNaN(x) ? float.NaN : MathF.Abs(TensorPrimitives.MaxMagnitude(x));
                    s = amax / 127f;
                    scales[row] = s;
                }
                KvRowCodec.ToInt8(x, s, bytes);
                break;
            default:
                var (s4, z) = Int4Params(x);
                scales[row] = s4;
                zeros[row] = z;
                KvRowCodec.ToInt4(x, s4, z, bytes);
                break;
        }
    }

    /// <summary>The int4 (scale, zero) of a row: <c>s = (max − min)/15</c>, <c>z = clamp(round(−min/s), 0, 15)</c>; a constant
    /// row <c>c</c> gets <c>s = |c|</c> (or 1 for zeros) so that it is represented exactly.</summary>
    internal static (float Scale, float Zero) Int4Params(ReadOnlySpan<float> x)
    {
        // MathF.Min/Max over the row (−0 below +0; NaN if any is NaN), as the GPU append kernel reduces it.
        bool nan = KvRowCodec.HasNaN(x);
        float min = nan ? float.NaN : TensorPrimitives.Min(x), max = nan ? float.NaN : TensorPrimitives.Max(x);
        float s = (max - min) / 15f;
        if (!(s > 0)) s = MathF.Max(MathF.Abs(min), MathF.Abs(max)) is > 0 and var a ? a : 1f;
        float z = Math.Clamp(MathF.Round(-min / s), 0f, 15f);
        return (s, z);
    }
}
