using ILGPU;
using ILGPU.Runtime;
using System.Runtime.CompilerServices;
using Kernels.Attention.Positional;

namespace Kernels.Gpu.Attention;

/// <summary>Geometry of one RoPE launch.</summary>
internal struct RopeLaunchArgs
{
    public int Total, Heads, HeadDim, RotaryDim, MaxPositions, Interleaved, CopyPassThrough;
}

/// <summary>Rotary position embedding with a device copy of a <see cref="RopeTable"/>: one thread per (token, head, pair),
/// consecutive threads on consecutive pairs (coalesced x, output and table rows); the pass-through dimensions
/// (≥ rotary_dim) get one thread each, copying only out of place.</summary>
/// <remarks>Per pair with table entries (c, s): <c>x1' = x1·c − x2·s</c>, <c>x2' = x2·c + x1·s</c> in fp32. The CUDA compiler
/// may contract these into fused multiply-adds, so results can differ from the CPU backend's by an fp32 rounding
/// (&lt; 2⁻²³·(|x1| + |x2|)). Each thread reads its pair before writing it, so x and output may be the same buffer.</remarks>
internal static class RopeKernels
{
    /// <summary>Thread i: row r = i / slots (= token·heads + head), slot j = i % slots with slots = rotary_dim/2 +
    /// (head_dim − rotary_dim); j &lt; rotary_dim/2 rotates pair j, the rest copy one pass-through element.</summary>
    public static void Apply(Index1D index, ArrayView<float> x, ArrayView<float> output, ArrayView<int> positions, ArrayView<float> table, RopeLaunchArgs a)
    {
        int i = index;
        if (i >= a.Total) return;
        int half = a.RotaryDim / 2, slots = half + a.HeadDim - a.RotaryDim;
        int row = i / slots, j = i - row * slots;
        long b = (long)row * a.HeadDim;
        if (j >= half)
        {
            if (a.CopyPassThrough != 0)
            {
                long e = b + a.RotaryDim + (j - half);
                output[e] = x[e];
            }
            return;
        }
        int p = positions[row / a.Heads];
        if ((uint)p >= (uint)a.MaxPositions) return; // the host checked every position; never read past the table
        PairOffsets(j, half, a.Interleaved != 0, out int o1, out int o2);
        Rotate(table, p, a.RotaryDim, j, x[b + o1], x[b + o2], out output[b + o1], out output[b + o2]);
    }

    /// <summary>Offsets in a row of pair <paramref name="j"/>'s elements: (j, j + half), or (2j, 2j + 1) for GPT-J pairs.</summary>
    internal static void PairOffsets(int j, int half, bool interleaved, out int o1, out int o2)
    {
        o1 = interleaved ? 2 * j : j;
        o2 = interleaved ? o1 + 1 : o1 + half;
    }

    /// <summary>Pair <paramref name="j"/> of a row rotated with the table's cos/sin at <paramref name="position"/>:
    /// <c>x1' = x1·c − x2·s</c>, <c>x2' = x2·c + x1·s</c> (also the attention kernels' in-kernel RoPE).</summary>
    internal static void Rotate(ArrayView<float> table, int position, int rotary, int j, float x1, float x2, out float r1, out float r2)
    {
        long t = (long)position * rotary + j;
        float c = table[t], s = table[t + rotary / 2];
        r1 = x1 * c - x2 * s;
        r2 = x2 * c + x1 * s;
    }
}

/// <summary>Loads <see cref="RopeKernels.Apply"/> once and keeps one device copy of each <see cref="RopeTable"/> it has seen.</summary>
/// <remarks>The copies are keyed by table identity in a <see cref="ConditionalWeakTable{TKey, TValue}"/> (tables are
/// immutable): a table is uploaded on its first use and reused by every later call and layer. A copy is freed by
/// <see cref="Release"/>, by <see cref="Dispose"/> (with the backend), or by ILGPU's finalizer once its table has been
/// collected.</remarks>
internal sealed class RopeLauncher : IDisposable
{
    private readonly Accelerator _accelerator;
    // Loaded on the first Launch: the attention kernels' in-kernel RoPE uses only the table cache.
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, RopeLaunchArgs>? _apply;
    private readonly ConditionalWeakTable<RopeTable, MemoryBuffer1D<float, Stride1D.Dense>> _tables = new();

    public RopeLauncher(Accelerator accelerator) => _accelerator = accelerator;

    /// <summary>The device copy of <paramref name="table"/> if it has one (tests: a count of copies would also drop when an
    /// earlier, unreachable table is collected).</summary>
    public MemoryBuffer1D<float, Stride1D.Dense>? CachedCopy(RopeTable table) => _tables.TryGetValue(table, out var b) ? b : null;

    /// <summary>The device copy of <paramref name="table"/>, uploaded on first use.</summary>
    public ArrayView<float> Table(RopeTable table)
    {
        if (!_tables.TryGetValue(table, out var buffer))
        {
            buffer = table.Data.Length == 0 ? _accelerator.Allocate1D<float>(1) : _accelerator.Allocate1D(table.Data);
            _tables.Add(table, buffer);
        }
        return buffer.View;
    }

    /// <summary>Frees the device copy of <paramref name="table"/> now (after the stream's pending work).</summary>
    public bool Release(AcceleratorStream stream, RopeTable table)
    {
        if (!_tables.TryGetValue(table, out var buffer)) return false;
        stream.Synchronize();
        _tables.Remove(table);
        buffer.Dispose();
        return true;
    }

    /// <summary>Queues the rotation of <c>tokens × heads</c> rows.</summary>
    public void Launch(AcceleratorStream stream, RopeTable table, ArrayView<int> positions, ArrayView<float> x, ArrayView<float> output,
        int tokens, int heads, bool inPlace)
    {
        int half = table.RotaryDim / 2, slots = half + table.HeadDim - table.RotaryDim;
        long total = (long)tokens * heads * slots;
        if (total > int.MaxValue)
            throw new NotSupportedException($"GPU RoPE launches at most {int.MaxValue} threads; tokens {tokens} × heads {heads} × {slots} slots = {total}.");
        var args = new RopeLaunchArgs
        {
            Total = (int)total, Heads = heads, HeadDim = table.HeadDim, RotaryDim = table.RotaryDim, MaxPositions = table.MaxPositions,
            Interleaved = table.Interleaved ? 1 : 0, CopyPassThrough = inPlace ? 0 : 1,
        };
        _apply ??= _accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, RopeLaunchArgs>(RopeKernels.Apply);
        _apply(stream, (int)total, x, output, positions, Table(table), args);
    }

    public void Dispose()
    {
        foreach (var entry in _tables) entry.Value.Dispose();
        _tables.Clear();
    }
}
