using Kernels.Attention.Positional;

namespace Kernels.Attention.Planning;

/// <summary>Logit transform and masking options (FlashInfer's <c>sm_scale</c>, <c>logits_soft_cap</c>, <c>window_left</c>,
/// <c>causal</c>, and <c>pos_encoding_mode="ALIBI"</c> with <c>alibi_slopes</c> or <c>"ROPE_LLAMA"</c> with a rotary table).</summary>
/// <remarks>
/// Logit of query q (at key position <c>i</c>) of head h and key k at position j: <c>x = sm_scale·q·k + b</c> with the ALiBi
/// bias <c>b = slope_h·(j − i)</c> (0 without <see cref="AlibiSlopes"/>; <c>i = kv_len − qo_len + query index</c>, the
/// bottom-right alignment of the causal mask, so <c>b ≤ 0</c> for causal keys), then <c>c·tanh(x / c)</c> when
/// <see cref="LogitsSoftCap"/> <c>c &gt; 0</c>; softmax then runs on the logits with no further scale. <see cref="Causal"/>
/// applies to prefill and block-sparse attention (decode's single query sees every key anyway); the window applies everywhere.
/// </remarks>
public sealed record AttentionOptions
{
    /// <summary>The defaults: <c>1/√head_dim</c>, no soft cap, no window, causal.</summary>
    public static AttentionOptions Default { get; } = new();

    /// <summary>Softmax scale; null means <c>1/√head_dim</c>.</summary>
    public float? SmScale { get; init; }

    /// <summary>Soft cap c (0 = off).</summary>
    public float LogitsSoftCap { get; init; }

    /// <summary>Sliding window: keys at most this far left of the query's position are kept (−1 = off).</summary>
    public int WindowLeft { get; init; } = -1;

    /// <summary>Bottom-right aligned causal mask (prefill, block-sparse).</summary>
    public bool Causal { get; init; } = true;

    /// <summary>For int8 and int4 KV caches: quantize each query head row to int8 (<see cref="Reference.QueryQuantization"/>)
    /// and take the q·k dot products in the integer domain, as llama.cpp does for quantized K caches. Off by default.</summary>
    /// <remarks>The logits are then those of the quantized queries: the oracle applies the same quantization, and the
    /// kernels match it to fp32 rounding (the integer dot products are exact). The added logit error against unquantized
    /// queries is at most <c>sm_scale·(s_q/2)·Σ_i |k_i|</c> with <c>s_q = max|q|/127</c>, below the int4/int8 K
    /// quantization error it sits beside. Float caches ignore the option. The CPU AVX-512 and AVX2 kernels take int4 dot
    /// products by <c>vpmaddubsw</c>/<c>vpmaddwd</c> (head_dim a multiple of 128) and int8 by <c>vpmaddwd</c>; other CPU
    /// paths and the GPU backend (a small kernel quantizes the queries on the device first) compute with the dequantized
    /// queries.</remarks>
    public bool QuantizedQueryDot { get; init; }

    /// <summary>ALiBi slopes, one per query head (Press et al., "Train Short, Test Long"; BLOOM, MPT, Baichuan), or null for
    /// none. <see cref="DefaultAlibiSlopes"/> gives the standard ones.</summary>
    /// <remarks>Softmax is invariant to a constant per row, so the output depends only on the slopes, not on where the
    /// distance is counted from; the log-sum-exp uses the distance above (FlashInfer's kernels count from the query index,
    /// which shifts a prefill row's lse by <c>slope·(kv_len − qo_len)</c>).</remarks>
    public IReadOnlyList<float>? AlibiSlopes { get; init; }

    /// <summary>Attention-sink logits, one per query head (gpt-oss's learned <c>sinks</c>, FlashInfer's attention-sink
    /// variant), or null for none: head h's softmax also runs over one extra logit <c>s_h</c> that has no value, so
    /// <c>o = Σ e^(x_j)·v_j / (Σ e^(x_j) + e^(s_h))</c> and <c>lse = ln(Σ e^(x_j) + e^(s_h))</c>, in the units of the
    /// logits above (after the scale, bias and cap). A row with no kept key gives <c>o = 0</c>, <c>lse = s_h</c>.</summary>
    /// <remarks>Kernels apply it once per row after everything else, as a merge with the state <c>(0, s_h)</c>
    /// (<see cref="Reference.AttentionState.ApplySink"/>): split-KV chunks and cascade levels stay sink-free.</remarks>
    public IReadOnlyList<float>? AttentionSinks { get; init; }

    /// <summary>Rotary position embedding applied inside the attention kernels (FlashInfer's <c>pos_encoding_mode="ROPE_LLAMA"</c>),
    /// or null for none: the cache holds keys <em>before</em> rotation, and every key at position j (its index in its sequence)
    /// and every query at its position i (<c>kv_len − qo_len + query index</c>) are rotated with this table's cos/sin rows
    /// before their dot product, exactly as <see cref="RopeReference"/> and the backends' <c>ApplyRope</c> rotate (NeoX or
    /// GPT-J pairs, partial rotary_dim, the table's scaling). Values are not rotated.</summary>
    /// <remarks>
    /// <para>What it is for: a cache whose keys never carry a position can give them new ones, as StreamingLLM does when it
    /// evicts the middle of a long context and keeps the attention-sink tokens and a recent window contiguous (positions are
    /// indices in the cache, not in the original text). Runtimes that rotate keys before appending them (vLLM, llama.cpp)
    /// leave it null and call <c>ApplyRope</c> instead, which costs less: here every key is rotated on every step.</para>
    /// <para>The table must be built for this head_dim and cover every position used (each sequence's kv_len); queries
    /// need <c>qo_len ≤ kv_len</c>. Every plan type supports it (decode, prefill, block-sparse, custom-mask, cascade: a
    /// cascade's levels count positions from their own start, which changes no distance and so no rotated dot product) on
    /// the CPU and GPU backends. It cannot be combined with <see cref="QuantizedQueryDot"/> (rotated keys are no longer
    /// integer codes).</para>
    /// </remarks>
    public RopeTable? Rope { get; init; }

    /// <summary>The standard ALiBi slopes for <paramref name="heads"/> heads (BLOOM's <c>build_alibi_tensor</c>, FlashInfer's
    /// <c>get_alibi_slopes</c>): with <c>n = 2^⌊log₂ heads⌋</c>, <c>2^(−8k/n)</c> for <c>k = 1 … n</c>, then for the remaining
    /// heads <c>2^(−4k/n)</c> for odd <c>k = 1, 3, 5, …</c>.</summary>
    /// <param name="heads">Query heads (≥ 1).</param>
    /// <returns>The slopes.</returns>
    public static float[] DefaultAlibiSlopes(int heads)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        int n = 1 << System.Numerics.BitOperations.Log2((uint)heads);
        var slopes = new float[heads];
        for (int k = 1; k <= n; k++) slopes[k - 1] = (float)Math.Pow(2, -8.0 * k / n);
        for (int i = n, k = 1; i < heads; i++, k += 2) slopes[i] = (float)Math.Pow(2, -4.0 * k / n);
        return slopes;
    }

    /// <summary>The scale used for <paramref name="headDim"/>.</summary>
    /// <param name="headDim">Head dimension.</param>
    /// <returns><see cref="SmScale"/> or <c>1/√headDim</c>.</returns>
    public float ScaleFor(int headDim) => SmScale ?? 1f / MathF.Sqrt(headDim);

    /// <summary>Throws when an option is out of range.</summary>
    /// <exception cref="ArgumentException">The scale or cap is not finite, the cap is negative, the window is below −1, or
    /// <see cref="Rope"/> is combined with <see cref="QuantizedQueryDot"/>.</exception>
    public void Validate()
    {
        if (SmScale is { } s && !float.IsFinite(s)) ThrowHelper.Argument(nameof(SmScale), $"SmScale must be finite; got {s}.");
        if (!(LogitsSoftCap >= 0) || !float.IsFinite(LogitsSoftCap)) ThrowHelper.Argument(nameof(LogitsSoftCap), $"LogitsSoftCap must be finite and ≥ 0; got {LogitsSoftCap}.");
        if (WindowLeft < -1) ThrowHelper.Argument(nameof(WindowLeft), $"WindowLeft must be −1 (off) or ≥ 0; got {WindowLeft}.");
        if (AlibiSlopes is { } a)
            for (int h = 0; h < a.Count; h++)
                if (!float.IsFinite(a[h])) ThrowHelper.Argument(nameof(AlibiSlopes), $"AlibiSlopes[{h}] must be finite; got {a[h]}.");
        if (AttentionSinks is { } sinks)
            for (int h = 0; h < sinks.Count; h++)
                if (!float.IsFinite(sinks[h])) ThrowHelper.Argument(nameof(AttentionSinks), $"AttentionSinks[{h}] must be finite; got {sinks[h]}.");
        if (Rope is not null && QuantizedQueryDot)
            ThrowHelper.Argument(nameof(Rope), "Rope cannot be combined with QuantizedQueryDot: rotated keys are no longer integer codes.");
    }

    /// <summary>Throws when an option is out of range or does not fit <paramref name="shape"/> (<see cref="AlibiSlopes"/>
    /// needs one slope per query head).</summary>
    /// <param name="shape">Heads and head_dim.</param>
    /// <exception cref="ArgumentException">As <see cref="Validate()"/>, the slope or sink count is not the query head count, or
    /// the <see cref="Rope"/> table is for another head_dim.</exception>
    public void Validate(AttentionShape shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        Validate();
        if (AlibiSlopes is { } a && a.Count != shape.QoHeads)
            ThrowHelper.Argument(nameof(AlibiSlopes), $"AlibiSlopes has {a.Count} entries; the shape has {shape.QoHeads} query heads.");
        if (AttentionSinks is { } s && s.Count != shape.QoHeads)
            ThrowHelper.Argument(nameof(AttentionSinks), $"AttentionSinks has {s.Count} entries; the shape has {shape.QoHeads} query heads.");
        CheckRopeHeadDim(shape.HeadDim, nameof(Rope));
    }

    /// <summary>With <see cref="Rope"/>, throws unless its table was built for <paramref name="headDim"/>.</summary>
    /// <param name="headDim">The shape's head_dim.</param>
    /// <param name="paramName">The argument to name.</param>
    internal void CheckRopeHeadDim(int headDim, string paramName)
    {
        if (Rope is { } rope && rope.HeadDim != headDim)
            ThrowHelper.Argument(paramName, $"The Rope table was built for head_dim {rope.HeadDim}; the shape has head_dim {headDim}.");
    }

    /// <summary>With <see cref="Rope"/>, throws unless a request of <paramref name="qoLen"/> queries over
    /// <paramref name="kvLen"/> keys has every query and key position inside the table.</summary>
    /// <param name="qoLen">Queries of the request (bottom-right aligned).</param>
    /// <param name="kvLen">Keys of the request.</param>
    /// <param name="request">Its index, for the message.</param>
    /// <param name="paramName">The argument to name.</param>
    internal void CheckRopePositions(int qoLen, int kvLen, int request, string paramName)
    {
        if (Rope is not { } rope || kvLen == 0) return; // no keys: nothing is rotated, the rows are empty
        if (qoLen > kvLen)
            ThrowHelper.Argument(paramName, $"Request {request} has {qoLen} queries over {kvLen} keys: with Rope a query's position kv_len − qo_len + i must not be negative.");
        if (kvLen > rope.MaxPositions)
            ThrowHelper.Argument(paramName, $"Request {request} has {kvLen} keys; the Rope table covers positions [0, {rope.MaxPositions}).");
    }

    /// <summary>The slopes as an array for the kernels (null without ALiBi).</summary>
    internal float[]? AlibiArray() => AlibiSlopes?.ToArray();
}
