namespace Kernels.Quant.Lut;

/// <summary>The shape of a LUT-GEMM weight format: kind, bits per weight and the quantization group along k.</summary>
/// <remarks>
/// <para>Logical value of a weight with code <c>q ∈ [0, 2^b)</c> in group <c>(r, g)</c>:
/// <c>w = s[r,g]·(q − c) + o[r,g]</c> with the format's centre <c>c = (2^b − 1)/2</c>, scale <c>s</c> and offset <c>o</c> (both
/// stored as bfloat16). Centring on <c>c</c> is what makes the bit-plane identity exact:
/// <c>q − c = Σ_i 2^(i−1)·σ_i</c> with <c>σ_i = 2·bit_i(q) − 1 ∈ {−1, +1}</c> (T-MAC).</para>
/// <para>Asymmetric: <c>o = s·(c − z)</c>; symmetric: <c>o = 0</c>; ternary: <c>b = 2</c>, <c>q = t + 1</c>, <c>o = s/2</c>
/// (so <c>w = s·t</c>).</para>
/// </remarks>
public readonly record struct LutFormat
{
    /// <summary>Group sizes along k the kernels support.</summary>
    public static ReadOnlySpan<int> SupportedGroupSizes => [32, 64, 128];

    /// <summary>Creates and validates a format.</summary>
    /// <param name="kind">Quantization kind.</param>
    /// <param name="bits">Bits per weight, 1–4 (2 for ternary).</param>
    /// <param name="groupSize">Weights per scale group along k: 32, 64 or 128.</param>
    /// <exception cref="NotSupportedException">An unsupported combination; the message names what is supported.</exception>
    public LutFormat(LutQuantKind kind, int bits, int groupSize)
    {
        if (kind == LutQuantKind.Ternary && bits != 2)
            throw new NotSupportedException($"Ternary weights are stored as 2-bit codes; got bits = {bits}.");
        if (bits is < 1 or > 4) throw new NotSupportedException($"LUT formats support 1 to 4 bits per weight; got {bits}.");
        if (groupSize is not (32 or 64 or 128)) throw new NotSupportedException($"LUT group size must be 32, 64 or 128; got {groupSize}.");
        if (kind is < LutQuantKind.Asymmetric or > LutQuantKind.Ternary) throw new NotSupportedException($"Unknown LUT kind {(int)kind}.");
        Kind = kind;
        Bits = bits;
        GroupSize = groupSize;
    }

    /// <summary>A uniform asymmetric b-bit format.</summary>
    /// <param name="bits">1–4.</param>
    /// <param name="groupSize">32, 64 or 128.</param>
    /// <returns>The format.</returns>
    public static LutFormat Asymmetric(int bits, int groupSize = 128) => new(LutQuantKind.Asymmetric, bits, groupSize);

    /// <summary>A uniform symmetric b-bit format.</summary>
    /// <param name="bits">1–4.</param>
    /// <param name="groupSize">32, 64 or 128.</param>
    /// <returns>The format.</returns>
    public static LutFormat Symmetric(int bits, int groupSize = 128) => new(LutQuantKind.Symmetric, bits, groupSize);

    /// <summary>BitNet b1.58 ternary (2-bit codes); the scale group only sets the table-quantization granularity.</summary>
    /// <param name="groupSize">32, 64 or 128.</param>
    /// <returns>The format.</returns>
    public static LutFormat Ternary(int groupSize = 128) => new(LutQuantKind.Ternary, 2, groupSize);

    /// <summary>The quantization kind.</summary>
    public LutQuantKind Kind { get; }

    /// <summary>Bits per weight (bit-planes).</summary>
    public int Bits { get; }

    /// <summary>Weights per group along k.</summary>
    public int GroupSize { get; }

    /// <summary>The code centre <c>c = (2^b − 1)/2</c>.</summary>
    public double Center => ((1 << Bits) - 1) * 0.5;

    /// <summary>Largest code, <c>2^b − 1</c>.</summary>
    public int MaxCode => (1 << Bits) - 1;

    /// <summary>Storage cost in bits per weight: b bit-planes plus a bf16 scale and a bf16 offset per group.</summary>
    public double BitsPerWeight => Bits + 32.0 / GroupSize;

    /// <summary>Short name for reports, e.g. <c>W2 g128</c>, <c>W4s g64</c>, <c>ternary g128</c>.</summary>
    public string Name => Kind switch
    {
        LutQuantKind.Ternary => $"ternary g{GroupSize}",
        LutQuantKind.Symmetric => $"W{Bits}s g{GroupSize}",
        _ => $"W{Bits} g{GroupSize}",
    };

    /// <inheritdoc/>
    public override string ToString() => Name;
}
