namespace Kernels.Quant.Lut;

/// <summary>Where a ternary (BitNet b1.58) scale is computed.</summary>
public enum TernaryScaleScope
{
    /// <summary>One absmean scale for the whole tensor (BitNet b1.58).</summary>
    PerTensor,
    /// <summary>One absmean scale per output row.</summary>
    PerRow,
}
