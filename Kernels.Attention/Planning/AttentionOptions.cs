namespace Kernels.Attention.Planning;

/// <summary>Logit transform and masking options (FlashInfer's <c>sm_scale</c>, <c>logits_soft_cap</c>, <c>window_left</c>,
/// <c>causal</c>, and <c>pos_encoding_mode="ALIBI"</c> with <c>alibi_slopes</c>).</summary>
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
    /// none. <see cref="DefaultAlibiSlopes"/> gives the standard ones. Not supported by cascade plans.</summary>
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
    /// <exception cref="ArgumentException">The scale or cap is not finite, the cap is negative, or the window is below −1.</exception>
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
    }

    /// <summary>Throws when an option is out of range or does not fit <paramref name="shape"/> (<see cref="AlibiSlopes"/>
    /// needs one slope per query head).</summary>
    /// <param name="shape">Heads and head_dim.</param>
    /// <exception cref="ArgumentException">As <see cref="Validate()"/>, or the slope or sink count is not the query head count.</exception>
    public void Validate(AttentionShape shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        Validate();
        if (AlibiSlopes is { } a && a.Count != shape.QoHeads)
            ThrowHelper.Argument(nameof(AlibiSlopes), $"AlibiSlopes has {a.Count} entries; the shape has {shape.QoHeads} query heads.");
        if (AttentionSinks is { } s && s.Count != shape.QoHeads)
            ThrowHelper.Argument(nameof(AttentionSinks), $"AttentionSinks has {s.Count} entries; the shape has {shape.QoHeads} query heads.");
    }

    /// <summary>The slopes as an array for the kernels (null without ALiBi).</summary>
    internal float[]? AlibiArray() => AlibiSlopes?.ToArray();
}
