namespace Kernels.Attention.Positional;

/// <summary>Rotary position embedding (RoPE) settings, as vLLM's <c>get_rope</c> and FlashInfer's <c>apply_rope*</c> take
/// them: which dimensions rotate, how pairs are formed, the base frequency and the context-extension scalings.</summary>
/// <remarks>
/// <para>Pair i (0 ≤ i &lt; rotary_dim/2) of a head rotates by the angle <c>θ_i(p) = (p / <see cref="Scale"/>) · f_i</c> at
/// position p, with <c>f_i = 1 / <see cref="Theta"/>^(2i / rotary_dim)</c> (HF's <c>inv_freq</c>), smoothed by
/// <see cref="Llama31"/> when set:</para>
/// <code>
/// x1' = x1·cos θ − x2·sin θ
/// x2' = x2·cos θ + x1·sin θ
/// </code>
/// <para>where (x1, x2) = (x[i], x[i + rotary_dim/2]) (<see cref="Interleaved"/> false: GPT-NeoX, Llama, vLLM
/// <c>is_neox_style=True</c>, FlashInfer <c>interleave=False</c>) or (x[2i], x[2i+1]) (true: GPT-J). Dimensions
/// ≥ rotary_dim pass through unchanged (partial rotary, GPT-NeoX's <c>rotary_pct</c>).</para>
/// <para>FlashInfer mapping: <c>apply_rope(rope_scale=s, rope_theta=t)</c> is <c>{ Scale = s, Theta = t }</c>;
/// <c>apply_llama31_rope(rope_scale=8, rope_theta=5e5, low_freq_factor=1, high_freq_factor=4, old_context_len=8192)</c>
/// is <c>{ Theta = 5e5, Llama31 = new(8, 1, 4, 8192) }</c> with <see cref="Scale"/> 1 (in Llama 3.1 mode FlashInfer's
/// rope_scale is the smoothing factor, not a position divisor).</para>
/// </remarks>
public sealed record RopeOptions
{
    /// <summary>Dimensions that rotate (even, ≤ head_dim); 0 (the default) means all of head_dim.</summary>
    public int RotaryDim { get; init; }

    /// <summary>The base θ of the frequencies (HF <c>rope_theta</c>); default 10000 (Llama 2), 500000 for Llama 3.</summary>
    public double Theta { get; init; } = 10000;

    /// <summary>False (default): pairs (i, i + rotary_dim/2), the "rotate_half" layout of GPT-NeoX and Llama; true: pairs
    /// (2i, 2i + 1), GPT-J.</summary>
    public bool Interleaved { get; init; }

    /// <summary>Linear position interpolation: positions are divided by this factor (FlashInfer's <c>rope_scale</c>, HF's
    /// <c>linear</c> rope scaling); default 1.</summary>
    public double Scale { get; init; } = 1;

    /// <summary>Llama 3.1 frequency smoothing, or null (default) for none.</summary>
    public Llama31Scaling? Llama31 { get; init; }

    /// <summary>Checks the settings that do not depend on head_dim.</summary>
    /// <exception cref="ArgumentException">A setting is out of range (the message names it and its value).</exception>
    public void Validate()
    {
        if (RotaryDim < 0 || RotaryDim % 2 != 0)
            throw new ArgumentException($"RotaryDim must be even and ≥ 0 (0 = head_dim); got {RotaryDim}.", nameof(RotaryDim));
        if (!(Theta > 0) || double.IsInfinity(Theta))
            throw new ArgumentException($"Theta must be finite and > 0; got {Theta}.", nameof(Theta));
        if (!(Scale > 0) || double.IsInfinity(Scale))
            throw new ArgumentException($"Scale must be finite and > 0; got {Scale}.", nameof(Scale));
        Llama31?.Validate();
    }

    /// <summary>Checks the settings against a head size and returns the rotary dimension they resolve to.</summary>
    /// <param name="headDim">head_dim.</param>
    /// <returns>rotary_dim: <see cref="RotaryDim"/>, or <paramref name="headDim"/> when it is 0.</returns>
    /// <exception cref="ArgumentException">A setting is out of range, head_dim is not positive, rotary_dim exceeds it, or
    /// rotary_dim (head_dim itself when <see cref="RotaryDim"/> is 0) is odd.</exception>
    public int Validate(int headDim)
    {
        Validate();
        if (headDim <= 0) throw new ArgumentException($"head_dim must be positive; got {headDim}.", nameof(headDim));
        if (RotaryDim > headDim)
            throw new ArgumentException($"RotaryDim {RotaryDim} exceeds head_dim {headDim}.", nameof(RotaryDim));
        int rotary = RotaryDim == 0 ? headDim : RotaryDim;
        if (rotary % 2 != 0)
            throw new ArgumentException($"rotary_dim must be even; head_dim {headDim} is odd, so set RotaryDim to an even value below it.", nameof(headDim));
        return rotary;
    }

    /// <summary>The inverse frequency of pair <paramref name="pair"/>, in double: <c>1 / θ^(2i/rotary_dim)</c>, then
    /// <see cref="Llama31"/>'s smoothing if set (not including <see cref="Scale"/>).</summary>
    /// <param name="pair">i in <c>[0, rotary_dim/2)</c>.</param>
    /// <param name="rotaryDim">rotary_dim (even, positive).</param>
    /// <returns>f_i in radians per position.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The pair is outside <c>[0, rotary_dim/2)</c>.</exception>
    public double InverseFrequency(int pair, int rotaryDim)
    {
        if ((uint)pair >= (uint)(rotaryDim / 2))
            throw new ArgumentOutOfRangeException(nameof(pair), $"pair {pair} is outside [0, {rotaryDim / 2}) for rotary_dim {rotaryDim}.");
        double f = 1.0 / Math.Pow(Theta, 2.0 * pair / rotaryDim);
        return Llama31 is { } l ? l.Smooth(f) : f;
    }

    /// <summary>The rotation angle of pair <paramref name="pair"/> at <paramref name="position"/>, in double:
    /// <c>(position / Scale) · f_i</c>. <see cref="RopeTable"/> and <see cref="RopeReference"/> both use it.</summary>
    /// <param name="position">Token position (≥ 0).</param>
    /// <param name="pair">i in <c>[0, rotary_dim/2)</c>.</param>
    /// <param name="rotaryDim">rotary_dim.</param>
    /// <returns>The angle in radians.</returns>
    public double Angle(int position, int pair, int rotaryDim) => position / Scale * InverseFrequency(pair, rotaryDim);
}

/// <summary>Llama 3.1's RoPE frequency smoothing (HF <c>rope_type="llama3"</c>, <c>_compute_llama3_parameters</c>; FlashInfer
/// <c>apply_llama31_rope</c>): low frequencies are divided by <see cref="Factor"/>, high ones kept, and the band between
/// interpolated.</summary>
/// <remarks>
/// With wavelength <c>λ = 2π / f</c>: <c>λ &lt; N/high</c> keeps f; <c>λ &gt; N/low</c> gives <c>f / factor</c>; otherwise
/// <c>s = (N/λ − low) / (high − low)</c> and <c>f' = (1 − s)·f/factor + s·f</c>, where N = <see cref="OriginalMaxPositions"/>.
/// This is FlashInfer's <c>smooth = clamp(f·a + b, 0, 1)</c> form with <c>a = N / (2π(high − low))</c>,
/// <c>b = −low / (high − low)</c> (the three cases meet continuously). Llama 3.1: <c>new(8, 1, 4, 8192)</c>.
/// </remarks>
/// <param name="Factor">Scale factor for low frequencies (8 for Llama 3.1).</param>
/// <param name="LowFreqFactor">low_freq_factor (1).</param>
/// <param name="HighFreqFactor">high_freq_factor (4), above <paramref name="LowFreqFactor"/>.</param>
/// <param name="OriginalMaxPositions">original_max_position_embeddings (8192).</param>
public sealed record Llama31Scaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions)
{
    /// <summary>Llama 3.1's published values: factor 8, low 1, high 4, 8192 original positions.</summary>
    public static Llama31Scaling Llama31 { get; } = new(8, 1, 4, 8192);

    /// <summary>Checks the factors.</summary>
    /// <exception cref="ArgumentException">A factor is not finite and positive, high ≤ low, or the original length is not positive.</exception>
    public void Validate()
    {
        if (!(Factor > 0) || double.IsInfinity(Factor))
            throw new ArgumentException($"Llama31 Factor must be finite and > 0; got {Factor}.", nameof(Factor));
        if (!(LowFreqFactor > 0) || double.IsInfinity(LowFreqFactor))
            throw new ArgumentException($"Llama31 LowFreqFactor must be finite and > 0; got {LowFreqFactor}.", nameof(LowFreqFactor));
        if (!(HighFreqFactor > LowFreqFactor) || double.IsInfinity(HighFreqFactor))
            throw new ArgumentException($"Llama31 HighFreqFactor must be finite and above LowFreqFactor {LowFreqFactor}; got {HighFreqFactor}.", nameof(HighFreqFactor));
        if (OriginalMaxPositions <= 0)
            throw new ArgumentException($"Llama31 OriginalMaxPositions must be positive; got {OriginalMaxPositions}.", nameof(OriginalMaxPositions));
    }

    /// <summary>Applies the smoothing to one inverse frequency, in double.</summary>
    /// <param name="inverseFrequency">f (radians per position).</param>
    /// <returns>The smoothed frequency.</returns>
    public double Smooth(double inverseFrequency)
    {
        double wavelength = 2 * Math.PI / inverseFrequency;
        if (wavelength < OriginalMaxPositions / HighFreqFactor) return inverseFrequency;
        if (wavelength > OriginalMaxPositions / LowFreqFactor) return inverseFrequency / Factor;
        double s = (OriginalMaxPositions / wavelength - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
        return (1 - s) * inverseFrequency / Factor + s * inverseFrequency;
    }
}
