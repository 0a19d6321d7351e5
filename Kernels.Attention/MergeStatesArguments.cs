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
    /// <exception cref="ArgumentException">The element counts disagree.</exception>
    public static int Check(DeviceTensor<float> v, DeviceTensor<float> lse, DeviceTensor<float> other, DeviceTensor<float> otherLse)
    {
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(lse);
        ArgumentNullException.ThrowIfNull(other);
        ArgumentNullException.ThrowIfNull(otherLse);
        int d = v.Shape.Rank == 0 ? 1 : v.Shape[v.Shape.Rank - 1];
        if (v.Shape.ElementCount != lse.Shape.ElementCount * d)
            ThrowHelper.Argument(nameof(lse), $"v has {v.Shape.ElementCount} values (head_dim {d}) but lse has {lse.Shape.ElementCount} rows; need {(d == 0 ? 0 : v.Shape.ElementCount / d)}.");
        ThrowHelper.ThrowIfLengthMismatch(nameof(other), other.Shape.ElementCount, v.Shape.ElementCount);
        ThrowHelper.ThrowIfLengthMismatch(nameof(otherLse), otherLse.Shape.ElementCount, lse.Shape.ElementCount);
        return d;
    }
}
