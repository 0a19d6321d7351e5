using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu.Threading;

namespace Kernels.Perf.Harness;

/// <summary>
/// The memory-system floor of paged decode: a pure vectorised read of a K and a V pool page by page, in a given page order,
/// with the same one-page-ahead software prefetch, the same TLB warm-up two pages ahead and the same work split (runs of
/// consecutive list entries, never across a sequence) as the decode kernel, but no arithmetic. Read in shuffled and in identity order, it shows how much of the paged/contiguous gap of
/// decode the memory system itself imposes at this page size.
/// </summary>
public sealed unsafe class PageRead : IDisposable
{
    private readonly byte* _k, _v;
    private readonly int[] _order;
    private readonly long _pageBytes;
    private readonly Vector512<byte>[] _sinks;
    private readonly int _itemsPerSequence;

    /// <summary>Allocates two pools of <paramref name="pages"/> × <paramref name="pageBytes"/> bytes (filled) and the page list.</summary>
    /// <param name="pages">Pages per pool.</param>
    /// <param name="pageBytes">Bytes per page, a multiple of 64.</param>
    /// <param name="shuffled">True: the list visits the pages in a random permutation; false: in address order.</param>
    /// <param name="itemPages">Consecutive list entries per work item.</param>
    /// <param name="sequencePages">List entries per sequence: like decode items, a work item never spans two sequences.</param>
    public PageRead(int pages, long pageBytes, bool shuffled, int itemPages, int sequencePages)
    {
        if (pageBytes % 64 != 0) throw new ArgumentException($"pageBytes = {pageBytes} is not a multiple of 64.", nameof(pageBytes));
        if (itemPages <= 0 || sequencePages <= 0 || pages % sequencePages != 0)
            throw new ArgumentException($"pages = {pages} must be a whole number of sequences of {sequencePages} pages, with itemPages = {itemPages} > 0.");
        _pageBytes = pageBytes;
        long bytes = pages * pageBytes;
        _k = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 4096);
        _v = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 4096);
        for (long off = 0; off < bytes; off += int.MaxValue / 64 * 64)
        {
            int n = (int)Math.Min(int.MaxValue / 64 * 64, bytes - off);
            new Span<byte>(_k + off, n).Fill(1);
            new Span<byte>(_v + off, n).Fill(2);
        }
        _order = Enumerable.Range(0, pages).ToArray();
        if (shuffled) new Random(11).Shuffle(_order);
        ItemPages = itemPages;
        SequencePages = sequencePages;
        _itemsPerSequence = (sequencePages + itemPages - 1) / itemPages;
        _sinks = new Vector512<byte>[pages / sequencePages * _itemsPerSequence];
    }

    /// <summary>List entries per work item.</summary>
    public int ItemPages { get; }

    /// <summary>List entries per sequence.</summary>
    public int SequencePages { get; }

    /// <summary>Bytes one <see cref="Run"/> reads (both pools).</summary>
    public double Bytes => 2.0 * _order.Length * _pageBytes;

    /// <summary>Reads every page of both pools once on up to <paramref name="threads"/> workers.</summary>
    public void Run(int threads)
    {
        fixed (int* order = _order)
        fixed (Vector512<byte>* sinks = _sinks)
        {
            var s = new Kernel
            {
                K = _k, V = _v, Order = order, PageBytes = _pageBytes, ItemPages = ItemPages, SequencePages = SequencePages,
                ItemsPerSequence = _itemsPerSequence, Sinks = sinks,
            };
            WorkerPool.Run(_sinks.Length, threads, ref s);
        }
    }

    /// <summary>True when every page was read: K lines hold 1s and V lines 2s, so a page folds to 3 or 0 by its line count's
    /// parity and an item to that or 0 by its page count's parity.</summary>
    public bool Verify()
    {
        Run(1);
        byte perPage = (byte)((_pageBytes / 64) % 2 == 1 ? 3 : 0);
        for (int c = 0; c < _sinks.Length; c++)
        {
            var (begin, end) = Kernel.Range(c, ItemPages, SequencePages, _itemsPerSequence);
            int pages = end - begin;
            if (_sinks[c] != Vector512.Create(pages % 2 == 1 ? perPage : (byte)0)) return false;
        }
        return true;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        NativeMemory.AlignedFree(_k);
        NativeMemory.AlignedFree(_v);
    }

    private struct Kernel : IChunkKernel<Kernel>
    {
        public byte* K, V;
        public int* Order;
        public int ItemPages, SequencePages, ItemsPerSequence;
        public long PageBytes;
        public Vector512<byte>* Sinks;

        /// <summary>Item <paramref name="chunk"/>'s list entries: item j of sequence b covers its pages [j·itemPages, …), clipped to the sequence.</summary>
        public static (int Begin, int End) Range(int chunk, int itemPages, int sequencePages, int itemsPerSequence)
        {
            int b = chunk / itemsPerSequence, j = chunk % itemsPerSequence;
            int begin = b * sequencePages + j * itemPages;
            return (begin, Math.Min(begin + itemPages, (b + 1) * sequencePages));
        }

        public static void Execute(ref Kernel s, int chunk)
        {
            var (begin, end) = Range(chunk, s.ItemPages, s.SequencePages, s.ItemsPerSequence);
            Vector512<byte> acc = default;
            for (int p = begin; p < end; p++)
            {
                byte* k = s.K + s.Order[p] * s.PageBytes, v = s.V + s.Order[p] * s.PageBytes;
                byte* nk = p + 1 < end ? s.K + s.Order[p + 1] * s.PageBytes : null, nv = p + 1 < end ? s.V + s.Order[p + 1] * s.PageBytes : null;
                if (Sse.IsSupported && p + 2 < end && s.Order[p + 2] != s.Order[p] + 2)
                    for (long b = 0; b < s.PageBytes; b += 4096) // TLB warm-up two pages ahead, as the decode kernel does
                    {
                        Sse.Prefetch0(s.K + s.Order[p + 2] * s.PageBytes + b);
                        Sse.Prefetch0(s.V + s.Order[p + 2] * s.PageBytes + b);
                    }
                Vector512<byte> page = default;
                for (long b = 0; b < s.PageBytes; b += 64)
                {
                    if (nk != null && Sse.IsSupported)
                    {
                        Sse.Prefetch0(nk + b);
                        Sse.Prefetch0(nv + b);
                    }
                    page ^= Vector512.Load(k + b) ^ Vector512.Load(v + b);
                }
                acc ^= page;
            }
            s.Sinks[chunk] = acc;
        }
    }
}
