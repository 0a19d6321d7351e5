namespace Kernels.Attention.Planning;

/// <summary>Caller-owned scratch memory for split-KV partial states (FlashInfer's <c>float_workspace_buffer</c>).</summary>
/// <remarks>
/// A planner grows the workspace to what its plan needs and records named offsets into it
/// (<see cref="AttentionPlan.PartialOutputOffset"/>, <see cref="AttentionPlan.PartialLseOffset"/>). One workspace serves any number of
/// plans that run one at a time (e.g. all layers of a model); running two plans on one workspace concurrently is not
/// allowed. The memory is pinned.
/// </remarks>
public sealed class AttentionWorkspace
{
    private float[] _buffer;

    /// <summary>Creates a workspace with an initial capacity.</summary>
    /// <param name="initialFloats">Floats to reserve (≥ 0).</param>
    public AttentionWorkspace(int initialFloats = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(initialFloats);
        _buffer = GC.AllocateArray<float>(initialFloats, pinned: true);
    }

    /// <summary>Current capacity in floats.</summary>
    public int Capacity => _buffer.Length;

    internal float[] Buffer => _buffer;

    /// <summary>Grows the workspace to at least <paramref name="floats"/> floats (contents are not kept).</summary>
    /// <param name="floats">Required floats.</param>
    public void EnsureCapacity(long floats)
    {
        if (floats > Array.MaxLength) throw new NotSupportedException($"A workspace of {floats} floats exceeds the array limit.");
        if (floats > _buffer.Length) _buffer = GC.AllocateArray<float>((int)floats, pinned: true);
    }
}
