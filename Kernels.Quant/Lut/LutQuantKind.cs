namespace Kernels.Quant.Lut;

/// <summary>How a LUT-GEMM weight matrix was quantized.</summary>
public enum LutQuantKind
{
    /// <summary>Uniform asymmetric: per group a scale and an integer zero point, <c>w ≈ s·(q − z)</c>.</summary>
    Asymmetric,
    /// <summary>Uniform symmetric (mid-rise): per group a scale only, levels <c>s·(q − c)</c> with <c>c = (2^b − 1)/2</c>.</summary>
    Symmetric,
    /// <summary>BitNet b1.58 ternary {−1, 0, +1} with an absmean scale (per tensor or per row), stored as 2-bit codes <c>t + 1</c>.</summary>
    Ternary,
}
