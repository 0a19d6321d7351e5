namespace Kernels.Cpu.Threading;

/// <summary>A kernel body run over chunk indices by <see cref="WorkerPool"/>.</summary>
/// <typeparam name="TSelf">The unmanaged state struct (pointers and sizes; spans are pinned by the caller).</typeparam>
public interface IChunkKernel<TSelf> where TSelf : unmanaged, IChunkKernel<TSelf>
{
    /// <summary>Processes chunk <paramref name="chunk"/>. Must not throw.</summary>
    /// <param name="state">The shared, read-only kernel state.</param>
    /// <param name="chunk">Chunk index in <c>[0, chunkCount)</c>.</param>
    static abstract void Execute(ref TSelf state, int chunk);
}
