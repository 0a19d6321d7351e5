namespace Kernels.Quant.Lut;

/// <summary>Options of the LUT-GEMM ops (on top of <see cref="KernelOptions"/>).</summary>
public sealed record LutGemmOptions
{
    /// <summary>The defaults: int8 tables.</summary>
    public static LutGemmOptions Default { get; } = new();

    /// <summary>Table precision.</summary>
    public LutTableMode TableMode { get; init; } = LutTableMode.Int8;
}
