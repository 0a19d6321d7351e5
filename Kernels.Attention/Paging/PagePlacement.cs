namespace Kernels.Attention.Paging;

/// <summary>How a <see cref="PageAllocator"/> chooses the page a sequence grows into.</summary>
public enum PagePlacement
{
    /// <summary>The default. The page right after the sequence's last page when it is free; otherwise the middle of the
    /// longest run of free pages (its first page when the run starts the pool), which leaves room for the sequence before it
    /// to grow. Sequences that grow together then keep their pages in long runs of adjacent pages, which CPU decode reads
    /// faster than scattered pages (the hardware prefetchers run on from one page into the next; 8 × 32k fp16 decode ran at
    /// 0.97× the speed of a contiguous cache, against 0.68× with <see cref="LastFreed"/>; see docs/attention.md). The free
    /// pages are kept in a bitmap with a segment tree of their runs: O(log pages) per page taken or freed, no allocation.</summary>
    Adjacent,

    /// <summary>The most recently freed page (a fresh pool hands out pages 0, 1, 2, … in order), as a free list does:
    /// sequences that grow together interleave their pages. O(1) per page.</summary>
    LastFreed,
}
