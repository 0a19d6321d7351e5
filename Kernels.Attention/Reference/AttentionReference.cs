using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Positional;
using Kernels.Attention.Planning;

namespace Kernels.Attention.Reference;

/// <summary>
/// The attention oracle: naive softmax attention in double over dense, gathered (and dequantized) K/V, returning the
/// output and the natural-log log-sum-exp of every (query, head) row.
/// </summary>
/// <remarks>
/// <para><c>logit_j = c·tanh(sm_scale·q·k_j / c)</c> (soft cap <c>c &gt; 0</c>) or <c>sm_scale·q·k_j</c>;
/// <c>o = Σ_j e^(logit_j − lse)·v_j</c>, <c>lse = ln Σ_j e^(logit_j)</c> over the kept keys. A row with no kept key has
/// <c>o = 0</c>, <c>lse = −∞</c>. FlashInfer returns <c>lse</c> in base 2; multiply ours by <c>1/ln 2</c> to compare.</para>
/// <para>Non-finite logits (an Inf or NaN in a K row or a query) follow IEEE arithmetic over the kept keys, with
/// <c>m = max_j logit_j</c> and <c>p_j = e^(logit_j − m)</c>: a kept key whose logit is −∞ has weight exactly 0 and still
/// contributes <c>0·v_j</c> (NaN when its V row holds Inf or NaN, as in <c>softmax(QKᵀ)·V</c>), and so does a weight below
/// 2⁻¹²⁶ (the smallest normal fp32 number: kernels compute weights in fp32 and flush there); a row whose kept logits are
/// all −∞ is treated like a row with no kept key (<c>o = 0</c>, <c>lse = −∞</c>); a NaN or +∞ logit makes the row's
/// normaliser NaN, so <c>o</c> and <c>lse</c> are NaN. Masked keys (causal, window, block-sparse) are never read. Every
/// kernel follows this rule, with or without split-KV (a NaN partial stays NaN through <see cref="AttentionState"/>'s merge).</para>
/// <para>Layouts: q and output <c>[tokens, qo_heads, head_dim]</c>, lse <c>[tokens, qo_heads]</c>, dense K/V
/// <c>[kv_len, kv_heads, head_dim]</c>. Query head <c>h</c> reads kv head <c>h / (qo_heads / kv_heads)</c>.
/// Paged caches are checked as <c>Dense(Gather(pages))</c>, the FlashInfer test pattern.</para>
/// </remarks>
public static class AttentionReference
{
    /// <summary>ln 2⁻¹²⁶ in fp32: a weight <c>e^(logit − max)</c> whose exponent is below it (the weight would be smaller than
    /// the smallest normal fp32 number) is 0, here and in every kernel and merge, which compute weights in fp32 and flush
    /// there. It matters only when such a weight meets an Inf or NaN in a V row.</summary>
    public const float SmallestWeightExponent = -87.33654f;

    /// <summary><c>e^x</c>, or 0 below <see cref="SmallestWeightExponent"/> (the kernels' fp32 flush).</summary>
    private static double Weight(double x) => x < SmallestWeightExponent ? 0 : Math.Exp(x);

    /// <summary>Attention of one request over dense K/V with the options' causal/window mask (bottom-right aligned) and an optional extra mask.</summary>
    /// <param name="q"><c>qoLen·qo_heads·head_dim</c> queries.</param>
    /// <param name="k"><c>kvLen·kv_heads·head_dim</c> keys.</param>
    /// <param name="v"><c>kvLen·kv_heads·head_dim</c> values.</param>
    /// <param name="qoLen">Queries.</param>
    /// <param name="kvLen">Keys.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="options">Scale, soft cap, window, causal.</param>
    /// <param name="output"><c>qoLen·qo_heads·head_dim</c> outputs.</param>
    /// <param name="lse"><c>qoLen·qo_heads</c> log-sum-exps (natural log), or empty.</param>
    /// <param name="keep">Extra mask <c>(query, key) → kept</c>, or null.</param>
    /// <param name="magnitude">Optional <c>Σ_j p_j·|v_j|</c> per output element (the scale of its rounding error), or empty.</param>
    /// <exception cref="ArgumentException">A buffer has the wrong length.</exception>
    public static void Dense(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int qoLen, int kvLen,
        AttentionShape shape, AttentionOptions options, Span<float> output, Span<float> lse, Func<int, int, bool>? keep = null, Span<double> magnitude = default)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int hq = shape.QoHeads, hk = shape.KvHeads, d = shape.HeadDim, g = shape.GroupSize;
        ThrowHelper.ThrowIfLengthMismatch(nameof(q), q.Length, (long)qoLen * hq * d);
        ThrowHelper.ThrowIfLengthMismatch(nameof(k), k.Length, (long)kvLen * hk * d);
        ThrowHelper.ThrowIfLengthMismatch(nameof(v), v.Length, (long)kvLen * hk * d);
        ThrowHelper.ThrowIfLengthMismatch(nameof(output), output.Length, (long)qoLen * hq * d);
        if (!lse.IsEmpty) ThrowHelper.ThrowIfLengthMismatch(nameof(lse), lse.Length, (long)qoLen * hq);
        if (!magnitude.IsEmpty) ThrowHelper.ThrowIfLengthMismatch(nameof(magnitude), magnitude.Length, output.Length);
        double scale = options.ScaleFor(d), cap = options.LogitsSoftCap;
        var alibi = options.AlibiSlopes;
        var sinks = options.AttentionSinks;
        if (sinks is not null && sinks.Count != hq)
            ThrowHelper.Argument(nameof(options), $"AttentionSinks has {sinks.Count} entries; the shape has {hq} query heads.");
        if (alibi is not null && alibi.Count != hq)
            ThrowHelper.Argument(nameof(options), $"AlibiSlopes has {alibi.Count} entries; the shape has {hq} query heads.");
        var rope = options.Rope;
        options.CheckRopeHeadDim(d, nameof(options));
        options.CheckRopePositions(qoLen, kvLen, 0, nameof(options));
        // With Rope, keys rotated at their index and queries at kv_len − qo_len + i, in double from the table's fp32 entries.
        double[]? kRot = rope is null ? null : Rotate(k, kvLen * hk, d, rope, row => row / hk);
        double[]? qRot = rope is null || kvLen == 0 ? null : Rotate(q, qoLen * hq, d, rope, row => kvLen - qoLen + row / hq);
        var logits = new double[kvLen];
        var kept = new bool[kvLen];
        var acc = new double[d];
        var mag = new double[d];
        for (int i = 0; i < qoLen; i++)
            for (int h = 0; h < hq; h++)
            {
                int kh = h / g;
                var qi = q.Slice((i * hq + h) * d, d);
                double max = double.NegativeInfinity; // Math.Max propagates NaN
                for (int j = 0; j < kvLen; j++)
                {
                    kept[j] = AttentionMask.IsKept(i, j, qoLen, kvLen, options.Causal, options.WindowLeft) && (keep is null || keep(i, j));
                    if (!kept[j]) continue;
                    double dot = 0;
                    if (rope is null)
                    {
                        var kj = k.Slice((j * hk + kh) * d, d);
                        for (int c = 0; c < d; c++) dot += (double)qi[c] * kj[c];
                    }
                    else
                    {
                        int qb = (i * hq + h) * d, kb = (j * hk + kh) * d;
                        for (int c = 0; c < d; c++) dot += qRot![qb + c] * kRot![kb + c];
                    }
                    double s = scale * dot + (alibi is null ? 0 : (double)alibi[h] * (j - ((long)kvLen - qoLen + i)));
                    logits[j] = cap > 0 ? cap * Math.Tanh(s / cap) : s;
                    max = Math.Max(max, logits[j]);
                }
                Array.Clear(acc);
                Array.Clear(mag);
                double sum = 0; // stays 0 when no key is kept or every kept logit is −∞; NaN for a NaN or +∞ logit
                if (!double.IsNegativeInfinity(max))
                {
                    for (int j = 0; j < kvLen; j++)
                    {
                        if (!kept[j]) continue;
                        // 0 for a −∞ logit, which still multiplies its V row; 0 below 2⁻¹²⁶, as fp32 kernels compute it.
                        double x = logits[j] - max;
                        double p = Weight(x);
                        sum += p;
                        var vj = v.Slice((j * hk + kh) * d, d);
                        for (int c = 0; c < d; c++)
                        {
                            acc[c] += p * vj[c];
                            mag[c] += p * Math.Abs(vj[c]);
                        }
                    }
                }
                var o = output.Slice((i * hq + h) * d, d);
                bool weighted = sum != 0; // sum > 0, or NaN
                // An attention sink joins the normaliser as one more logit with no value (the merge rule of AttentionState.ApplySink,
                // in double): the keys' share is e^(lse − m)/(e^(lse − m) + e^(sink − m)).
                double share = 1, rowLse = weighted ? max + Math.Log(sum) : double.NegativeInfinity;
                if (sinks is not null)
                {
                    double s = sinks[h];
                    if (!weighted) { share = 0; rowLse = s; }
                    else
                    {
                        double m = Math.Max(rowLse, s), wa = Weight(rowLse - m), ws = Weight(s - m);
                        share = wa / (wa + ws);
                        rowLse = m + Math.Log(wa + ws);
                    }
                }
                for (int c = 0; c < d; c++) o[c] = weighted ? (float)(acc[c] / sum * share) : 0f;
                if (!magnitude.IsEmpty)
                    for (int c = 0; c < d; c++) magnitude[(i * hq + h) * d + c] = weighted ? mag[c] / sum * share : 0;
                if (!lse.IsEmpty) lse[i * hq + h] = (float)rowLse;
            }
    }

    /// <summary>Rows of <paramref name="x"/> (<paramref name="d"/> floats each) rotated in double with the table's fp32 cos/sin
    /// of <paramref name="positionOf"/>(row): pairs (i, i + rotary/2), or (2i, 2i + 1) when interleaved; the other dimensions
    /// as they are.</summary>
    private static double[] Rotate(ReadOnlySpan<float> x, int rows, int d, RopeTable rope, Func<int, int> positionOf)
    {
        var o = new double[(long)rows * d];
        int half = rope.RotaryDim / 2;
        for (int r = 0; r < rows; r++)
        {
            var cos = rope.Cos(positionOf(r));
            var sin = rope.Sin(positionOf(r));
            int b = r * d;
            for (int c = 0; c < d; c++) o[b + c] = x[b + c];
            for (int i = 0; i < half; i++)
            {
                int i1 = b + (rope.Interleaved ? 2 * i : i), i2 = b + (rope.Interleaved ? 2 * i + 1 : i + half);
                double x1 = x[i1], x2 = x[i2], cs = cos[i], sn = sin[i];
                o[i1] = x1 * cs - x2 * sn;
                o[i2] = x2 * cs + x1 * sn;
            }
        }
        return o;
    }

    /// <summary>Gathers the dequantized K and V of one sequence into dense <c>[kv_len, kv_heads, head_dim]</c> arrays.</summary>
    /// <param name="cache">The cache.</param>
    /// <param name="table">The page table.</param>
    /// <param name="sequence">Sequence index in the table.</param>
    /// <returns>Keys and values.</returns>
    public static (float[] Keys, float[] Values) Gather(PagedKvCache cache, PageTable table, int sequence)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(table);
        table.Validate(cache.NumPages);
        int len = table.KvLength(sequence), hk = cache.KvHeads, d = cache.HeadDim;
        var keys = new float[(long)len * hk * d];
        var values = new float[keys.Length];
        for (int t = 0; t < len; t++)
        {
            int page = table.Indices[table.Indptr[sequence] + t / table.PageSize];
            for (int h = 0; h < hk; h++)
            {
                cache.ReadKey(page, t % table.PageSize, h, keys.AsSpan((t * hk + h) * d, d));
                cache.ReadValue(page, t % table.PageSize, h, values.AsSpan((t * hk + h) * d, d));
            }
        }
        return (keys, values);
    }

    /// <summary>Batch decode: one query per sequence over its paged K/V (the causal flag is moot for a single query).</summary>
    /// <param name="q"><c>batch·qo_heads·head_dim</c> queries.</param>
    /// <param name="cache">The cache.</param>
    /// <param name="table">The page table.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="options">Options.</param>
    /// <param name="output"><c>batch·qo_heads·head_dim</c> outputs.</param>
    /// <param name="lse"><c>batch·qo_heads</c> log-sum-exps, or empty.</param>
    /// <param name="magnitude">Optional error scale per output (see <see cref="Dense"/>), or empty.</param>
    public static void Decode(ReadOnlySpan<float> q, PagedKvCache cache, PageTable table, AttentionShape shape, AttentionOptions options,
        Span<float> output, Span<float> lse, Span<double> magnitude = default)
    {
        ArgumentNullException.ThrowIfNull(table);
        int[] qoIndptr = Enumerable.Range(0, table.BatchSize + 1).ToArray();
        Prefill(qoIndptr, q, cache, table, shape, options, output, lse, magnitude);
    }

    /// <summary>Batch prefill: ragged queries (<paramref name="qoIndptr"/>) over paged K/V with the options' mask.</summary>
    /// <param name="qoIndptr"><c>batch + 1</c> query offsets.</param>
    /// <param name="q"><c>qoIndptr[^1]·qo_heads·head_dim</c> queries.</param>
    /// <param name="cache">The cache.</param>
    /// <param name="table">The page table.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="options">Options.</param>
    /// <param name="output">Outputs, like q.</param>
    /// <param name="lse"><c>qoIndptr[^1]·qo_heads</c> log-sum-exps, or empty.</param>
    /// <param name="magnitude">Optional error scale per output, or empty.</param>
    /// <param name="customMask">An element-wise mask ANDed with the options' (see <see cref="CustomMask"/>), or null.</param>
    public static void Prefill(ReadOnlySpan<int> qoIndptr, ReadOnlySpan<float> q, PagedKvCache cache, PageTable table, AttentionShape shape,
        AttentionOptions options, Span<float> output, Span<float> lse, Span<double> magnitude = default, CustomMask? customMask = null)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(table);
        ThrowHelper.ThrowIfLengthMismatch(nameof(qoIndptr), qoIndptr.Length, table.BatchSize + 1);
        ArgumentNullException.ThrowIfNull(options);
        customMask?.CheckMatches(qoIndptr, table, nameof(customMask));
        int hq = shape.QoHeads, d = shape.HeadDim;
        if (options.QuantizedQueryDot && cache.DType is DType.I8 or DType.I4) q = QueryQuantization.Dequantized(q, d);
        for (int b = 0; b < table.BatchSize; b++)
        {
            int q0 = qoIndptr[b], qn = qoIndptr[b + 1] - q0;
            var (keys, values) = Gather(cache, table, b);
            Dense(q.Slice(q0 * hq * d, qn * hq * d), keys, values, qn, table.KvLength(b), shape, options,
                output.Slice(q0 * hq * d, qn * hq * d), lse.IsEmpty ? default : lse.Slice(q0 * hq, qn * hq),
                customMask is null ? null : (i, j) => customMask.IsKept(q0 + i, j),
                magnitude.IsEmpty ? default : magnitude.Slice(q0 * hq * d, qn * hq * d));
        }
    }

    /// <summary>Cascade (shared-prefix) decode: sequence <c>b</c> of group <c>g</c> attends, with its one query, to group
    /// <c>g</c>'s shared keys (sequence <c>g</c> of <paramref name="prefixes"/>) followed by its own keys (sequence <c>b</c>
    /// of <paramref name="suffixes"/>), as flat decode over the concatenated keys would.</summary>
    /// <param name="groupIndptr"><c>groups + 1</c> sequence offsets.</param>
    /// <param name="q"><c>batch·qo_heads·head_dim</c> queries.</param>
    /// <param name="cache">The cache both tables refer to.</param>
    /// <param name="prefixes">Shared pages per group.</param>
    /// <param name="suffixes">Own pages per sequence.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="options">Options (a window counts from the sequence's last key, across both levels).</param>
    /// <param name="output"><c>batch·qo_heads·head_dim</c> outputs.</param>
    /// <param name="lse"><c>batch·qo_heads</c> log-sum-exps, or empty.</param>
    /// <param name="magnitude">Optional error scale per output, or empty.</param>
    /// <exception cref="ArgumentException">groupIndptr disagrees with the tables.</exception>
    public static void Cascade(ReadOnlySpan<int> groupIndptr, ReadOnlySpan<float> q, PagedKvCache cache, PageTable prefixes, PageTable suffixes,
        AttentionShape shape, AttentionOptions options, Span<float> output, Span<float> lse, Span<double> magnitude = default)
    {
        ArgumentNullException.ThrowIfNull(prefixes);
        ArgumentNullException.ThrowIfNull(suffixes);
        ThrowHelper.ThrowIfLengthMismatch(nameof(groupIndptr), groupIndptr.Length, prefixes.BatchSize + 1);
        if (groupIndptr[0] != 0 || groupIndptr[^1] != suffixes.BatchSize)
            ThrowHelper.Argument(nameof(groupIndptr), $"groupIndptr must run from 0 to the batch size ({suffixes.BatchSize}); got {groupIndptr[0]} … {groupIndptr[^1]}.");
        Cascade([new CascadeLevel(groupIndptr, prefixes)], q, cache, suffixes, shape, options, output, lse, magnitude);
    }

    /// <summary>Multi-level cascade decode: sequence <c>b</c> attends, with its one query, to its group's shared keys at every
    /// level of <paramref name="levels"/> in turn, then to its own keys (sequence <c>b</c> of <paramref name="suffixes"/>),
    /// as flat decode over the concatenated keys would.</summary>
    /// <param name="levels">The shared levels, outermost first; each must cover the batch.</param>
    /// <param name="q"><c>batch·qo_heads·head_dim</c> queries.</param>
    /// <param name="cache">The cache every table refers to.</param>
    /// <param name="suffixes">Own pages per sequence.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="options">Options (a window counts from the sequence's last key, across every level).</param>
    /// <param name="output"><c>batch·qo_heads·head_dim</c> outputs.</param>
    /// <param name="lse"><c>batch·qo_heads</c> log-sum-exps, or empty.</param>
    /// <param name="magnitude">Optional error scale per output, or empty.</param>
    /// <exception cref="ArgumentException">A level does not cover the batch.</exception>
    public static void Cascade(IReadOnlyList<CascadeLevel> levels, ReadOnlySpan<float> q, PagedKvCache cache, PageTable suffixes,
        AttentionShape shape, AttentionOptions options, Span<float> output, Span<float> lse, Span<double> magnitude = default)
    {
        ArgumentNullException.ThrowIfNull(levels);
        ArgumentNullException.ThrowIfNull(suffixes);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(options);
        foreach (var level in levels)
            if (level.BatchSize != suffixes.BatchSize)
                ThrowHelper.Argument(nameof(levels), $"A level's groups cover {level.BatchSize} sequences; the suffix table has {suffixes.BatchSize}.");
        int hq = shape.QoHeads, d = shape.HeadDim;
        if (options.QuantizedQueryDot && cache.DType is DType.I8 or DType.I4) q = QueryQuantization.Dequantized(q, d);
        for (int b = 0; b < suffixes.BatchSize; b++)
        {
            var keys = new List<float>();
            var values = new List<float>();
            int len = 0;
            foreach (var level in levels)
            {
                int g = level.GroupOf(b);
                var (lk, lv) = Gather(cache, level.Pages, g);
                keys.AddRange(lk);
                values.AddRange(lv);
                len += level.Pages.KvLength(g);
            }
            var (sk, sv) = Gather(cache, suffixes, b);
            keys.AddRange(sk);
            values.AddRange(sv);
            len += suffixes.KvLength(b);
            Dense(q.Slice(b * hq * d, hq * d), keys.ToArray(), values.ToArray(), 1, len, shape, options,
                output.Slice(b * hq * d, hq * d), lse.IsEmpty ? default : lse.Slice(b * hq, hq), null,
                magnitude.IsEmpty ? default : magnitude.Slice(b * hq * d, hq * d));
        }
    }

    /// <summary>Block-sparse attention over dense K/V: score (i, j) is kept when its block is in the mask (and the options' causal/window mask keeps it, with <c>qo_len = M</c>, <c>kv_len = N</c>).</summary>
    /// <param name="mask">The block mask.</param>
    /// <param name="q"><c>M·qo_heads·head_dim</c> queries.</param>
    /// <param name="k"><c>N·kv_heads·head_dim</c> keys.</param>
    /// <param name="v"><c>N·kv_heads·head_dim</c> values.</param>
    /// <param name="shape">Heads and head_dim.</param>
    /// <param name="options">Options.</param>
    /// <param name="output"><c>M·qo_heads·head_dim</c> outputs.</param>
    /// <param name="lse"><c>M·qo_heads</c> log-sum-exps, or empty.</param>
    /// <param name="magnitude">Optional error scale per output, or empty.</param>
    /// <param name="elementMask">An element-wise mask inside the blocks (one request of M × N), or null.</param>
    public static void BlockSparse(BlockSparseMask mask, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, AttentionShape shape,
        AttentionOptions options, Span<float> output, Span<float> lse, Span<double> magnitude = default, CustomMask? elementMask = null)
    {
        ArgumentNullException.ThrowIfNull(mask);
        Dense(q, k, v, mask.M, mask.N, shape, options, output, lse,
            elementMask is null ? mask.Contains : (i, j) => mask.Contains(i, j) && elementMask.IsKept(i, j), magnitude);
    }
}
