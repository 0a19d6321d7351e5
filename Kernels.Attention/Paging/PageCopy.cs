namespace Kernels.Attention.Paging;

/// <summary>A page copy a device cache must replay: the contents (K, V, scales, zero points) of page
/// <paramref name="Source"/> onto page <paramref name="Destination"/> (copy-on-write of a shared partial page).</summary>
/// <param name="Source">The page copied from.</param>
/// <param name="Destination">The page copied to.</param>
public readonly record struct PageCopy(int Source, int Destination);
