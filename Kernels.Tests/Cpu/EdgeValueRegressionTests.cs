using Kernels.Cpu;
using Kernels.Cpu.Fpx;
using Kernels.Cpu.Lut;
using Kernels.Quant.Fpx;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Cpu;

/// <summary>Tiny and subnormal activations through the LUT and FP6/FP5 kernels on each ISA path: cases a differential
/// edge-value fuzz against the oracles found outside the documented bounds.</summary>
public class EdgeValueRegressionTests
{
    /// <summary>Int8 LUT tables for a group of tiny activations (table scale below 2⁻¹²⁸): 1/scale overflowed to +∞, so every
    /// non-zero entry saturated to ±127 and the result broke the documented int8-table bound by orders of magnitude.</summary>
    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void LutInt8Tables_TinyActivations_StayWithinBound(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        foreach (int gs in new[] { 32, 128 })
            foreach (var format in new[] { LutFormat.Asymmetric(4, gs), LutFormat.Symmetric(2, gs), LutFormat.Ternary(gs) })
            {
                int m = 3, k = 2 * gs, n = 2;
                var rng = new Random(7);
                float[] w = Inputs.Floats(rng, m * k, 1e20f);
                var q = LutQuantizer.Quantize(w, m, k, format);
                var packed = BitPlanePacking.Pack(q);
                // 1e-39 … 1e-38 (|T| ≤ 4e-38, scale ≈ 3e-40 < 2⁻¹²⁸), plus subnormals near 2⁻¹⁴⁹.
                float[] x = new float[n * k];
                for (int i = 0; i < k; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * 1e-38);
                for (int i = k; i < 2 * k; i++) x[i] = BitConverter.Int32BitsToSingle(rng.Next(0, 0x0000_FFFF) | (rng.Next(2) << 31));
                float[] y = new float[n * m];
                LutGemm.Gemm(packed, x, y, n, new LutGemmOptions { TableMode = LutTableMode.Int8 }, options);
                Lut.LutGemmTests.CheckAgainstReference(q, x, y, n, LutTableMode.Int8, 1e-24, $"{isa} {format}");
            }
    }

    /// <summary>FP6/FP5 with subnormal activations: the pre-scaling exponent was clamped at 127, so products of small codes
    /// with activations below 2⁻¹²⁵ fell into the fp32 subnormal range and lost bits (FP5, x = −2.997628e−39, w = 292.8: error
    /// 2.1× the stated bound).</summary>
    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Fpx_SubnormalActivations_WithinDotTolerance(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        foreach (var format in new[] { FpxFormat.Fp6E3M2, FpxFormat.Fp5E2M2 })
            foreach (int k in new[] { 1, 7, 64, 129 })
                foreach (int n in new[] { 1, 3 })
                {
                    var rng = new Random(k * 31 + n);
                    int m = 5;
                    var codes = new byte[m * k];
                    for (int i = 0; i < codes.Length; i++) codes[i] = (byte)rng.Next(FpxCodec.CodeCount(format));
                    var scales = new float[m];
                    for (int r = 0; r < m; r++) scales[r] = (float)(rng.NextDouble() * 100 + 1);
                    var w = FpxWeights.FromCodes(codes, scales, m, k, format);
                    float[] x = Inputs.Subnormals(rng, n * k);
                    x[0] = -2.997628E-39f;
                    float[] y = new float[n * m], expected = new float[n * m];
                    double[] mag = new double[n * m];
                    FpxGemm.Gemm(w, x, y, n, options);
                    FpxReference.Gemm(w, x, expected, n, mag);
                    for (int i = 0; i < y.Length; i++)
                    {
                        double bound = ResultComparer.DotTolerance(k) * mag[i] + Math.ScaleB(1.0, -24) * Math.Abs(expected[i]) + ResultComparer.DotUnderflow(k);
                        Assert.True(Math.Abs((double)y[i] - expected[i]) <= bound,
                            $"{isa} {format} k={k} n={n} i={i}: expected {expected[i]:R}, got {y[i]:R} (bound {bound:G3})");
                    }
                }
    }
}
