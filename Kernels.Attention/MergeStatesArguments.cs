namespace Kernels.Attention;

/// <summary>Checks of <see cref="IPagedAttentionOps.MergeStates"/> arguments, shared by the backends.</summary>
internal static class MergeStatesArguments
{
    /// <summary>Returns head_dim (the last dimension of <paramref name="v"/>) after checking that the four tensors agree.</summary>
    /// <param name="v">States' values.</param>
    /// <param name="lse">States' log-sum-exps.</param>
    /// <param name="other">Other values.</param>
    /// <param name="otherLse">Other log-sum-exps.</param>
    /// <returns>head_dim.</returns>
    /// <exception cref="ArgumentException">The element counts disagree, or a values tensor is also passed as a log-sum-exp
    /// tensor (with head_dim 1 the counts agree, and the merge read and wrote the same floats in both roles).</exception>
    public static int Check(DeviceTensor<float> v, DeviceTensor<float> lse, DeviceTensor<float> other, DeviceTensor<float> otherLse)
    {
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(lse);
        ArgumentNullException.ThrowIfNull(other);
        ArgumentNullException.ThrowIfNull(otherLse);
        ThrowIfShared(v, nameof(v), lse, nameof(lse));
        ThrowIfShared(other, nameof(other), lse, nameof(lse));
        ThrowIfShared(v, nameof(v), otherLse, nameof(otherLse));
        ThrowIfShared(other, nameof(other), otherLse, nameof(otherLse));
        int d = v.Shape.Rank == 0 ? 1 : v.Shape[v.Shape.Rank - 1];
        if (v.Shape.ElementCount != lse.Shape.ElementCount * d)
            ThrowHelper.Argument(nameof(lse), $"v has {v.Shape.ElementCount} values (head_dim {d}) but lse has {lse.Shape.ElementCount} rows; need {(d == 0 ? 0 : v.Shape.ElementCount / d)}.");
        ThrowHelper.ThrowIfLengthMismatch(nameof(other), other.Shape.ElementCount, v.Shape.ElementCount);
        ThrowHelper.ThrowIfLengthMismatch(nameof(otherLse), otherLse.Shape.ElementCount, lse.Shape.ElementCount);
        return d;
    }

    /// <summary>Throws if the values tensor <paramref name="values"/> is also the log-sum-exp tensor <paramref name="lse"/>.
    /// A state may be merged with itself (<c>other</c> = <c>v</c>, <c>otherLse</c> = <c>lse</c>): every element is then
    /// read before it is written.</summary>
    private static void ThrowIfShared(DeviceTensor<float> values, string valuesName, DeviceTensor<float> lse, string lseName)
    {
        if (ReferenceEquals(values, lse) && lse.Shape.ElementCount > 0)
            ThrowHelper.Argument(lseName, $"{lseName} is the same tensor as {valuesName}: values and log-sum-exps must be separate tensors.");
    }
}
