using System.Buffers;
using Kernels.Attention;
using Kernels.Attention.Positional;
using Kernels.Gpu.Attention;

namespace Kernels.Gpu;

public sealed partial class GpuBackend : IRopeOps
{
    private RopeLauncher? _rope;

    /// <inheritdoc/>
    /// <remarks>
    /// <para>One GPU thread per (token, head, pair) (see <see cref="RopeKernels"/>). The table is uploaded on its first use
    /// with this backend and kept, keyed by the <see cref="RopeTable"/> instance, until <see cref="ReleaseRopeTable"/>, the
    /// backend's disposal, or the table's collection: build one table per model and reuse it.</para>
    /// <para>The positions are copied to the host and checked before the launch (a stream synchronization and
    /// <c>4 × tokens</c> bytes per call), so an out-of-range position throws before anything is written; the kernel also
    /// skips any position outside the table rather than read past it.</para>
    /// </remarks>
    public void ApplyRope(RopeTable table, DeviceTensor<int> positions, DeviceTensor<float> x, DeviceTensor<float> output)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(positions);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(output);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var p = AsGpu(positions, nameof(positions));
        var xs = AsGpu(x, nameof(x));
        var os = AsGpu(output, nameof(output));
        int heads = RopeArguments.Heads(positions.Shape.ElementCount, table.HeadDim, x.Shape.ElementCount, output.Shape.ElementCount);
        int tokens = checked((int)positions.Shape.ElementCount);
        if (tokens == 0) return;
        int[] host = ArrayPool<int>.Shared.Rent(tokens);
        try
        {
            p.CopyTo(host.AsSpan(0, tokens));
            RopeArguments.CheckPositions(host.AsSpan(0, tokens), table.MaxPositions);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(host);
        }
        if (heads == 0) return;
        _rope ??= Own(new RopeLauncher(Accelerator));
        Wrap(() =>
        {
            _rope.Launch(Stream, table, p.View, xs.View, os.View, tokens, heads, inPlace: ReferenceEquals(x, output));
            return 0;
        });
    }

    /// <summary>Frees this backend's device copy of <paramref name="table"/> now (after pending work); a later
    /// <see cref="ApplyRope"/> with the table uploads it again.</summary>
    /// <param name="table">The table.</param>
    /// <returns>True if a copy was held.</returns>
    public bool ReleaseRopeTable(RopeTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _rope is not null && Wrap(() => _rope.Release(Stream, table));
    }

    /// <summary>The device copy of <paramref name="table"/> on this backend, or null (for tests).</summary>
    internal object? CachedRopeTable(RopeTable table) => _rope?.CachedCopy(table);
}
