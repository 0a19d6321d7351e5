using System.Numerics.Tensors;

namespace Kernels.Attention.Reference;

/// <summary>
/// Merging of attention states <c>(v, s)</c>: <c>v</c> the softmax-weighted values over a key subset and <c>s</c> the
/// log-sum-exp of its logits (natural log). This is how split-KV partials and cascade (shared-prefix) results combine.
/// </summary>
/// <remarks>
/// <para><c>s = max(s_a, s_b)</c>, <c>w_a = e^(s_a − s)</c>, <c>w_b = e^(s_b − s)</c>,
/// <c>v = (w_a·v_a + w_b·v_b)/(w_a + w_b)</c>, <c>s += ln(w_a + w_b)</c> (FlashInfer <c>state.cuh</c> / <c>cascade.cuh</c>, which
/// keeps <c>s</c> in base 2: <c>s₂ = s / ln 2</c>). The operation is associative and commutative up to rounding.
/// An empty state has <c>s = −∞</c> and weight 0: it adds <c>0·v</c>, so its finite values drop out (merging two empty states
/// gives <c>v = 0, s = −∞</c>) while a NaN or Inf in its <c>v</c> reaches the merged state as NaN at that position. That is
/// how a split chunk whose keys all had −∞ logits carries the oracle's <c>0·v</c> of an Inf/NaN V row among them (the
/// kernels write such a chunk as <c>(Σ 0·v_j, −∞)</c>, which is 0 unless a V row was not finite); a final output whose
/// merged <c>s</c> is −∞ is 0, as the oracle's. The exponents are taken relative to a finite maximum or skipped, so
/// empty states never make NaN from their <c>s</c>. A NaN state (a row that met a NaN or +∞ logit: see
/// <see cref="AttentionReference"/>) makes the merged state NaN. A state whose weight <c>e^(s_x − s)</c> is below 2⁻¹²⁶
/// counts 0, as the oracle's weights do (so its Inf/NaN values give NaN, as they would unsplit).</para>
/// </remarks>
public static class AttentionState
{
    /// <summary>Merges <c>(other, otherLse)</c> into <c>(v, lse)</c> in place.</summary>
    /// <param name="v">The accumulated state's values (updated).</param>
    /// <param name="lse">The accumulated state's log-sum-exp (updated).</param>
    /// <param name="other">The other state's values (same length).</param>
    /// <param name="otherLse">The other state's log-sum-exp.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static void MergeInPlace(Span<float> v, ref float lse, ReadOnlySpan<float> other, float otherLse)
    {
        ThrowHelper.ThrowIfLengthMismatch(nameof(other), other.Length, v.Length);
        bool empty = float.IsNegativeInfinity(lse), otherEmpty = float.IsNegativeInfinity(otherLse);
        if (empty || otherEmpty)
        {
            // An empty side has weight 0: v·(empty ? 0 : 1) + other·(otherEmpty ? 0 : 1), so only its NaN/Inf values survive.
            Combine(v, empty ? 0f : 1f, other, otherEmpty ? 0f : 1f);
            if (!otherEmpty) lse = otherLse;
            return;
        }
        float max = MathF.Max(lse, otherLse);
        float wa = Weight(lse - max), wb = Weight(otherLse - max);
        float inv = 1f / (wa + wb);
        Combine(v, wa * inv, other, wb * inv);
        lse = max + MathF.Log(wa + wb);
    }

    /// <summary><c>v = v·ca + other·cb</c>, each product rounded, then the sum.</summary>
    private static void Combine(Span<float> v, float ca, ReadOnlySpan<float> other, float cb)
    {
        if (other.Overlaps(v))
        {
            for (int i = 0; i < v.Length; i++) v[i] = v[i] * ca + other[i] * cb;
        }
        else
        {
            // The same arithmetic, vectorized (TensorPrimitives does not fuse the two steps).
            TensorPrimitives.Multiply(v, ca, v);
            TensorPrimitives.MultiplyAdd(other, cb, v, v);
        }
    }

    /// <summary>Merges two states into a third.</summary>
    /// <param name="a">State a's values.</param>
    /// <param name="lseA">State a's log-sum-exp.</param>
    /// <param name="b">State b's values.</param>
    /// <param name="lseB">State b's log-sum-exp.</param>
    /// <param name="destination">Merged values (may be a or b itself).</param>
    /// <returns>The merged log-sum-exp.</returns>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static float Merge(ReadOnlySpan<float> a, float lseA, ReadOnlySpan<float> b, float lseB, Span<float> destination)
    {
        ThrowHelper.ThrowIfLengthMismatch(nameof(b), b.Length, a.Length);
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Length, a.Length);
        if (b.Overlaps(destination) && !a.Overlaps(destination))
        {
            // destination is b: merge a into it (the merge is symmetric, bit for bit).
            float lb = lseB;
            MergeInPlace(destination, ref lb, a, lseA);
            return lb;
        }
        if (!a.Overlaps(destination)) a.CopyTo(destination);
        float lse = lseA;
        MergeInPlace(destination, ref lse, b, lseB);
        return lse;
    }

    /// <summary>Merges <c>n</c> states <c>[n, dim]</c> in index order (the order split-KV uses, so results are reproducible),
    /// starting from an empty state of zeros.</summary>
    /// <param name="values"><c>n·dim</c> values.</param>
    /// <param name="lses"><c>n</c> log-sum-exps.</param>
    /// <param name="destination"><c>dim</c> merged values.</param>
    /// <returns>The merged log-sum-exp (−∞ when every state is empty; destination is then 0, NaN where an empty state held
    /// Inf/NaN).</returns>
    /// <exception cref="ArgumentException">The lengths disagree.</exception>
    public static float MergeMany(ReadOnlySpan<float> values, ReadOnlySpan<float> lses, Span<float> destination)
    {
        int dim = destination.Length;
        ThrowHelper.ThrowIfLengthMismatch(nameof(values), values.Length, (long)lses.Length * dim);
        destination.Clear();
        float lse = float.NegativeInfinity;
        for (int i = 0; i < lses.Length; i++) MergeInPlace(destination, ref lse, values.Slice(i * dim, dim), lses[i]);
        return lse;
    }

    /// <summary>Adds an attention sink to a finished state: the merge of <c>(v, lse)</c> with the state <c>(0, sink)</c> by
    /// <see cref="MergeInPlace"/>'s rule (the sink's logit joins the normaliser and contributes no value): <c>v ← v·w_a/(w_a + w_s)</c>,
    /// <c>lse ← ln(e^lse + e^sink)</c>; an empty state (lse −∞) becomes <c>(0·v, sink)</c>, a NaN state stays NaN.</summary>
    /// <param name="v">The state's values (updated).</param>
    /// <param name="lse">The state's log-sum-exp (updated).</param>
    /// <param name="sink">The sink logit (finite).</param>
    public static void ApplySink(Span<float> v, ref float lse, float sink)
    {
        if (float.IsNegativeInfinity(lse))
        {
            TensorPrimitives.Multiply(v, 0f, v); // weight 0: only a NaN/Inf value survives, as in MergeInPlace
            lse = sink;
            return;
        }
        float max = MathF.Max(lse, sink);
        float wa = Weight(lse - max), ws = Weight(sink - max);
        TensorPrimitives.Multiply(v, wa * (1f / (wa + ws)), v);
        lse = max + MathF.Log(wa + ws);
    }

    /// <summary><c>e^x</c> (x ≤ 0), 0 below <see cref="AttentionReference.SmallestWeightExponent"/>: the attention weights' fp32 rule.</summary>
    private static float Weight(float x) => x < AttentionReference.SmallestWeightExponent ? 0f : MathF.Exp(x);
}
