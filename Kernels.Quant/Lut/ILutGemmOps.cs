namespace Kernels.Quant.Lut;

/// <summary>LUT-based mixed-precision GEMM (T-MAC): low-bit weights × fp32 activations, same calls on CPU and GPU.</summary>
/// <remarks>
/// <c>y[j, r] = Σ_c w[r, c]·x[j, c]</c> with <c>w</c> the dequantized weight of <see cref="LutFormat"/>; x is <c>[n, k]</c>,
/// y is <c>[n, m]</c>. Results are within <see cref="Reference.LutReference.Int8TableErrorBound"/> (int8 tables) or fp32
/// rounding (exact tables) of <see cref="Reference.LutReference.Gemm"/>.
/// </remarks>
public interface ILutGemmOps
{
    /// <summary>Prepares packed weights for this backend (a device upload on GPU, a reference on CPU).</summary>
    /// <param name="weights">The packed weights.</param>
    /// <returns>The prepared weights; the caller disposes them.</returns>
    ILutPreparedWeights PrepareLut(LutWeights weights);

    /// <summary>Computes <c>y = x · Wᵀ</c>.</summary>
    /// <param name="weights">Prepared weights of this backend.</param>
    /// <param name="x"><c>[n, k]</c> activations.</param>
    /// <param name="y"><c>[n, m]</c> output, overwritten.</param>
    /// <param name="options">Table mode; null for the defaults.</param>
    /// <exception cref="ArgumentException">Shapes do not match, or an operand belongs to another backend.</exception>
    void LutGemm(ILutPreparedWeights weights, DeviceTensor<float> x, DeviceTensor<float> y, LutGemmOptions? options = null);
}
