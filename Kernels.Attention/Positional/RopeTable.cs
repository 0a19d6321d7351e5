namespace Kernels.Attention.Positional;

/// <summary>A precomputed RoPE cos/sin cache for positions <c>[0, MaxPositions)</c>, in fp32: vLLM's <c>cos_sin_cache</c>.
/// Immutable; build it once per model (per distinct <see cref="RopeOptions"/> and head_dim) and share it across layers,
/// threads and backends.</summary>
/// <remarks>
/// <para>Layout: <see cref="CosSin"/> is <c>[MaxPositions, RotaryDim]</c>, row p = <c>[cos θ_0(p) … cos θ_{h−1}(p),
/// sin θ_0(p) … sin θ_{h−1}(p)]</c> with h = rotary_dim/2 (vLLM's layout: one contiguous row per token). Each entry is
/// computed in double (<see cref="RopeOptions.Angle"/>, then <see cref="Math.SinCos"/>) and rounded once to float, so it is
/// within half an fp32 ulp (≤ 2⁻²⁵) of the exact value.</para>
/// <para>Memory: <c>MaxPositions × RotaryDim × 4</c> bytes (<see cref="SizeInBytes"/>): 64 MiB for Llama 3.1's 131,072
/// positions at head_dim 128, 2 MiB for 4,096 positions. A GPU backend keeps one device copy per table.</para>
/// </remarks>
public sealed class RopeTable
{
    private readonly float[] _cosSin;

    /// <summary>Builds the table (<c>MaxPositions × RotaryDim / 2</c> double-precision sincos; about 10 ns each).</summary>
    /// <param name="options">The RoPE settings.</param>
    /// <param name="headDim">head_dim of the tensors this table rotates.</param>
    /// <param name="maxPositions">Positions covered: valid positions are <c>[0, maxPositions)</c>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">The options are invalid for <paramref name="headDim"/> (see
    /// <see cref="RopeOptions.Validate(int)"/>), or the table would exceed <see cref="Array.MaxLength"/> floats.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxPositions"/> is negative.</exception>
    public RopeTable(RopeOptions options, int headDim, int maxPositions)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegative(maxPositions);
        int rotary = options.Validate(headDim);
        long count = (long)maxPositions * rotary;
        if (count > Array.MaxLength)
            throw new ArgumentException($"A table of {maxPositions} positions × rotary_dim {rotary} = {count} floats exceeds the {Array.MaxLength} an array holds.", nameof(maxPositions));
        Options = options;
        HeadDim = headDim;
        RotaryDim = rotary;
        MaxPositions = maxPositions;
        int half = rotary / 2;
        var freq = new double[half];
        for (int i = 0; i < half; i++) freq[i] = options.InverseFrequency(i, rotary);
        _cosSin = new float[count];
        for (int p = 0; p < maxPositions; p++)
        {
            var row = _cosSin.AsSpan(p * rotary, rotary);
            double t = p / options.Scale;
            for (int i = 0; i < half; i++)
            {
                // Same expression as RopeOptions.Angle (kept inline so the frequencies are computed once).
                double angle = t * freq[i];
                if (!double.IsFinite(angle))
                    throw new ArgumentException($"The RoPE angle of position {p}, pair {i} is {angle} (Theta {options.Theta}, Scale {options.Scale}, inverse frequency {freq[i]}): the options give no finite table.", nameof(options));
                var (sin, cos) = Math.SinCos(angle);
                row[i] = (float)cos;
                row[half + i] = (float)sin;
            }
        }
    }

    /// <summary>The settings the table was built from.</summary>
    public RopeOptions Options { get; }

    /// <summary>head_dim of the tensors this table applies to.</summary>
    public int HeadDim { get; }

    /// <summary>Dimensions that rotate (even, ≤ <see cref="HeadDim"/>).</summary>
    public int RotaryDim { get; }

    /// <summary>Positions covered: <c>[0, MaxPositions)</c>.</summary>
    public int MaxPositions { get; }

    /// <summary>True for GPT-J pairs (2i, 2i+1), false for NeoX pairs (i, i + rotary_dim/2): <see cref="RopeOptions.Interleaved"/>.</summary>
    public bool Interleaved => Options.Interleaved;

    /// <summary>Bytes of the table: <c>MaxPositions × RotaryDim × 4</c>.</summary>
    public long SizeInBytes => (long)_cosSin.Length * sizeof(float);

    /// <summary>The whole cache, <c>[MaxPositions, RotaryDim]</c>: per position rotary_dim/2 cosines, then rotary_dim/2 sines.</summary>
    public ReadOnlySpan<float> CosSin => _cosSin;

    /// <summary>The rotary_dim/2 cosines of <paramref name="position"/>.</summary>
    /// <param name="position">A position in <c>[0, MaxPositions)</c>.</param>
    /// <returns><c>cos θ_i(position)</c> for each pair i.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The position is outside the table.</exception>
    public ReadOnlySpan<float> Cos(int position) => Row(position)[..(RotaryDim / 2)];

    /// <summary>The rotary_dim/2 sines of <paramref name="position"/>.</summary>
    /// <param name="position">A position in <c>[0, MaxPositions)</c>.</param>
    /// <returns><c>sin θ_i(position)</c> for each pair i.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The position is outside the table.</exception>
    public ReadOnlySpan<float> Sin(int position) => Row(position)[(RotaryDim / 2)..];

    /// <summary>The backing array, for kernels (never written).</summary>
    internal float[] Data => _cosSin;

    private ReadOnlySpan<float> Row(int position)
    {
        if ((uint)position >= (uint)MaxPositions)
            throw new ArgumentOutOfRangeException(nameof(position), $"position {position} is outside the table's [0, {MaxPositions}).");
        return _cosSin.AsSpan(position * RotaryDim, RotaryDim);
    }
}
