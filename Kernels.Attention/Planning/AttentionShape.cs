namespace Kernels.Attention.Planning;

/// <summary>Head counts and head dimension of an attention layer.</summary>
/// <remarks>GQA/MQA: <c>QoHeads</c> is a multiple of <c>KvHeads</c>; query head <c>h</c> reads kv head <c>h / GroupSize</c>.</remarks>
public sealed record AttentionShape
{
    /// <summary>Creates a shape.</summary>
    /// <param name="qoHeads">Query/output heads.</param>
    /// <param name="kvHeads">Key/value heads (divides qoHeads).</param>
    /// <param name="headDim">Values per head.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    /// <exception cref="ArgumentException">kvHeads does not divide qoHeads.</exception>
    public AttentionShape(int qoHeads, int kvHeads, int headDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(qoHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        if (qoHeads % kvHeads != 0)
            ThrowHelper.Argument(nameof(kvHeads), $"qo heads ({qoHeads}) must be a multiple of kv heads ({kvHeads}).");
        QoHeads = qoHeads;
        KvHeads = kvHeads;
        HeadDim = headDim;
    }

    /// <summary>Query/output heads.</summary>
    public int QoHeads { get; }

    /// <summary>Key/value heads.</summary>
    public int KvHeads { get; }

    /// <summary>Values per head.</summary>
    public int HeadDim { get; }

    /// <summary>Query heads per kv head.</summary>
    public int GroupSize => QoHeads / KvHeads;
}
