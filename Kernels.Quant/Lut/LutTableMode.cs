namespace Kernels.Quant.Lut;

/// <summary>How the LUT kernels store activation tables.</summary>
public enum LutTableMode
{
    /// <summary>int8 tables with one fp32 scale per (activation vector, group): T-MAC's fast path. Error bound in <see cref="Reference.LutReference.Int8TableErrorBound"/>.</summary>
    Int8,
    /// <summary>fp32 tables: matches the reference to float rounding; slower.</summary>
    Exact,
}
