namespace Kernels.Attention.Paging;

/// <summary>How a <see cref="PageAllocator"/> chooses the page a sequence grows into.</summary>
public enum PagePlacement
{
    /// <summary>The most recently freed page (a fresh pool hands out pages 0, 1, 2, … in order): sequences that grow
    /// together interleave their pages.</summary>
    LastFreed,

    /// <summary>The page right after the sequence's last page when it is free; otherwise the middle of the longest run of
    /// free pages (its first page when the run starts the pool), which leaves room for the sequence before it to grow. Sequences that grow together then keep
    /// their pages in long runs of adjacent pages, which CPU decode reads faster than scattered pages (the hardware
    /// prefetchers run on from one page into the next; see docs/attention-perf-log.md). A fresh sequence or a collision costs
    /// a scan of the pool's reference counts.</summary>
    Adjacent,
}
