namespace Kernels.Attention.Planning;

/// <summary>Logit transform and masking options (FlashInfer's <c>sm_scale</c>, <c>logits_soft_cap</c>, <c>window_left</c>, <c>causal</c>).</summary>
/// <remarks>
/// Logit of query q and key k: <c>c·tanh(sm_scale·q·k / c)</c> when <see cref="LogitsSoftCap"/> <c>c &gt; 0</c>, else
/// <c>sm_scale·q·k</c>; softmax then runs on the logits with no further scale. <see cref="Causal"/> applies to prefill and
/// block-sparse attention (decode's single query sees every key anyway); the window applies everywhere.
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
    }
}
