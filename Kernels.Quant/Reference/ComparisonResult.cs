using System.Globalization;

namespace Kernels.Quant.Reference;

/// <summary>The outcome of comparing a kernel's output with the oracle's.</summary>
/// <param name="Count">Elements compared.</param>
/// <param name="Failures">Elements outside the bound (or with mismatched NaN/±Inf).</param>
/// <param name="WorstIndex">Index of the element with the largest error relative to its bound (-1 when none).</param>
/// <param name="WorstExpected">The oracle's value there.</param>
/// <param name="WorstActual">The kernel's value there.</param>
/// <param name="WorstRatio">Error divided by the allowed error there (≤ 1 passes).</param>
/// <param name="Nmse">Normalised mean squared error over finite elements: <c>Σ(e−a)² / Σe²</c>.</param>
public readonly record struct ComparisonResult(int Count, int Failures, int WorstIndex, double WorstExpected, double WorstActual, double WorstRatio, double Nmse)
{
    /// <summary>True when every element is within its bound.</summary>
    public bool Passed => Failures == 0;

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Failures}/{Count} outside bound; worst index {WorstIndex}: expected {WorstExpected:R}, got {WorstActual:R} ({WorstRatio:F2}× the bound); NMSE {Nmse:E2}");
}
