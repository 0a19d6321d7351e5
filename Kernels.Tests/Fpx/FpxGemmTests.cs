using FsCheck;
using FsCheck.Fluent;
using Kernels.Cpu;
using Kernels.Cpu.Fpx;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Fpx;

public class FpxGemmTests
{
    public sealed record Case(int M, int K, int N, int Seed, bool Fp5, bool Bf16X)
    {
        public override string ToString() => $"m={M} k={K} n={N} seed={Seed} fp5={Fp5} bf16x={Bf16X}";
    }

    private static Arbitrary<Case> Cases =>
        (from m in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 9), Gen.Choose(10, 40))
         from k in Gen.OneOf(Gen.Constant(0), Gen.Choose(1, 70), Gen.Elements(63, 64, 65, 127, 129, 257))
         from n in Gen.OneOf(Gen.Constant(1), Gen.Choose(1, 6), Gen.Elements(8, 9, 17))
         from seed in Gen.Choose(0, int.MaxValue)
         from fp5 in Gen.Elements(false, true)
         from bf in Gen.Elements(false, true)
         select new Case(m, k, n, seed, fp5, bf)).ToArbitrary();

    internal static FpxWeights RandomWeights(Random rng, int m, int k, FpxFormat f)
    {
        var codes = new byte[m * k];
        for (int i = 0; i < codes.Length; i++) codes[i] = (byte)rng.Next(FpxCodec.CodeCount(f));
        var scales = Enumerable.Range(0, m).Select(_ => (float)(rng.NextDouble() * 0.01 + 1e-4)).ToArray();
        return FpxWeights.FromCodes(codes, scales, m, k, f);
    }

    private static void Check(Case c, IsaPath isa)
    {
        var rng = new Random(c.Seed);
        var f = c.Fp5 ? FpxFormat.Fp5E2M2 : FpxFormat.Fp6E3M2;
        var w = RandomWeights(rng, c.M, c.K, f);
        float[] x = Inputs.Floats(rng, c.N * c.K, 3f);
        BFloat16[] xb = x.Select(v => (BFloat16)v).ToArray();
        if (c.Bf16X) x = xb.Select(v => (float)v).ToArray();
        float[] expected = new float[c.M * c.N], actual = new float[c.M * c.N];
        double[] mag = new double[c.M * c.N];
        FpxReference.Gemm(w, x, expected, c.N, mag);
        var opt = new KernelOptions { Isa = isa };
        if (c.Bf16X) FpxGemm.Gemm(w, xb, actual, c.N, opt);
        else FpxGemm.Gemm(w, x, actual, c.N, opt);
        var r = ResultComparer.Compare(expected, actual, mag, ResultComparer.DotTolerance(c.K), ResultComparer.DotUnderflow(c.K));
        Assert.True(r.Passed, $"{isa} {c}: {r}");
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Gemm_EachIsa_MatchesReference(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        Prop.ForAll(Cases, c => Check(c, isa)).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Gemm_LargeParallel_MatchesReference()
    {
        Check(new Case(301, 1000, 1, 5, false, false), IsaPath.Auto);
        Check(new Case(67, 515, 11, 6, true, false), IsaPath.Auto);
    }

    [Fact]
    public void Gemm_Avx512WithoutPatternPath_MatchesReference()
    {
        // On VBMI machines GEMV uses the byte-interleave path; this runs the plain AVX-512 GEMV too (both are correct, so other
        // tests running concurrently are unaffected by the switch).
        if (!CpuIsa.IsSupported(IsaPath.Avx512)) return;
        Switches.With(ref FpxGemm.EnablePatterns512, false, () => Prop.ForAll(Cases, c => Check(c, IsaPath.Avx512)).QuickCheckThrowOnFailure());
    }

    [Fact]
    public void Probe_WithoutVbmi_Passes()
    {
        // The vpshufb fallbacks of the AVX-512 decode only run where AVX512-VBMI is off (.NET 10: DOTNET_EnableAVX512v2=0 turns off IFMA+VBMI): check them in a child process.
        var report = ProbeRunner.Run(new Dictionary<string, string> { ["DOTNET_EnableAVX512v2"] = "0" }, "fpx");
        Assert.Equal("False", report.Facts.GetValueOrDefault("Avx512Vbmi")); // the switch took effect
        Assert.True(report.ExitCode == 0 && report.Failed.Count == 0 && report.Passed.Contains("fpx"), report.Output);
    }

    [Fact]
    public void Gemm_VbmiWithoutFusedSmallBatch_MatchesReference()
    {
        // On VBMI machines n ≥ 2 runs the fused 2-row × 8-token kernel; this runs the decoded-tile GEMM in pattern order too.
        if (!CpuIsa.IsSupported(IsaPath.Avx512)) return;
        Switches.With(ref FpxGemm.EnableFused, false, () => Prop.ForAll(Cases, c => Check(c, IsaPath.Avx512)).QuickCheckThrowOnFailure());
    }

    [Fact]
    public void Gemm_FusedSmallBatch_OddRowsAndTokenRemainders_MatchReference()
    {
        // Two 8-token passes plus three GEMV tokens, an odd last row, several column blocks; both formats, both activation types.
        Check(new Case(33, 515, 19, 31, false, false), IsaPath.Auto);
        Check(new Case(7, 1024, 8, 32, true, true), IsaPath.Auto);
        Check(new Case(2, 64, 16, 33, false, true), IsaPath.Auto);
    }

    [Fact]
    public void Probe_WithoutGfni_Passes()
    {
        // With GFNI the VBMI pattern decode builds its bytes by vgf2p8affineqb; DOTNET_EnableGFNI=0 runs the vpermb variant.
        var report = ProbeRunner.Run(new Dictionary<string, string> { ["DOTNET_EnableGFNI"] = "0" }, "fpx");
        Assert.Equal("False", report.Facts.GetValueOrDefault("Gfni")); // the switch took effect
        Assert.True(report.ExitCode == 0 && report.Failed.Count == 0 && report.Passed.Contains("fpx"), report.Output);
    }

    [Fact]
    public void Gemm_SeveralColumnTiles_EachIsa_MatchesReference()
    {
        // k > FpxGemm.KTile: the decoded-tile path accumulates partial sums across column tiles (and a short last tile).
        foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
        {
            Check(new Case(9, 2 * FpxGemm.KTile + 77, 6, 21, false, false), isa);
            Check(new Case(6, FpxGemm.KTile + 1, 5, 22, true, true), isa);
        }
    }

    [Fact]
    public void Gemm_ExtremeActivations_StayAccurate()
    {
        // Tiny, huge and mixed-range activations: the power-of-two pre-scaling keeps products away from under/overflow.
        var rng = new Random(9);
        var w = RandomWeights(rng, 5, 200, FpxFormat.Fp6E3M2);
        foreach (float s in new[] { 1e-30f, 1e-38f, 1e30f, 3e37f })
        {
            float[] x = Inputs.Floats(rng, 2 * 200, s);
            float[] e = new float[10], a = new float[10];
            double[] mag = new double[10];
            FpxReference.Gemm(w, x, e, 2, mag);
            foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
            {
                FpxGemm.Gemm(w, x, a, 2, new KernelOptions { Isa = isa });
                var r = ResultComparer.Compare(e, a, mag, ResultComparer.DotTolerance(200), absTol: 1e-44);
                Assert.True(r.Passed, $"{isa} scale {s}: {r}");
            }
        }
    }

    [Fact]
    public void Gemm_InfAndNaNActivations_Propagate()
    {
        var rng = new Random(3);
        var w = RandomWeights(rng, 3, 70, FpxFormat.Fp6E3M2);
        float[] x = Inputs.Floats(rng, 70);
        x[5] = float.NaN;
        float[] y = new float[3];
        foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
        {
            FpxGemm.Gemm(w, x, y, 1, new KernelOptions { Isa = isa });
            Assert.All(y, v => Assert.True(float.IsNaN(v)));
        }
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Dequantize_EachIsa_IsBitExact(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        foreach (var f in new[] { FpxFormat.Fp6E3M2, FpxFormat.Fp5E2M2 })
        {
            // Every code in every position of a block, with several scales (incl. 1 and subnormal-producing ones), plus random tensors.
            int count = FpxCodec.CodeCount(f);
            var codes = new byte[4 * 130];
            for (int i = 0; i < codes.Length; i++) codes[i] = (byte)((i * 7 + i / 64) % count);
            foreach (var w in new[] { FpxWeights.FromCodes(codes, [1f, 0.001f, 3.3e-39f, 1e30f], 4, 130, f), RandomWeights(new Random(7), 9, 333, f) })
            {
                var e = new float[w.Rows * w.Columns];
                var a = new float[e.Length];
                FpxReference.Dequantize(w, e);
                FpxGemm.Dequantize(w, a, new KernelOptions { Isa = isa });
                Assert.Equal(e.Select(BitConverter.SingleToInt32Bits), a.Select(BitConverter.SingleToInt32Bits));
                var b = new BFloat16[e.Length];
                FpxGemm.Dequantize(w, b, new KernelOptions { Isa = isa });
                Assert.Equal(e.Select(v => (BFloat16)v), b);
            }
        }
    }

    [Fact]
    public void Gemm_EmptyShapes_DoNothing()
    {
        var w = FpxWeights.FromCodes([], [], 0, 5, FpxFormat.Fp6E3M2);
        FpxGemm.Gemm(w, new float[10], [], 2);
        var w2 = FpxWeights.FromCodes([], [1f, 2f], 2, 0, FpxFormat.Fp6E3M2);
        float[] y = [5, 5, 5, 5];
        FpxGemm.Gemm(w2, Array.Empty<float>(), y, 2);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Gemm_ThrowsForWrongLengths()
    {
        var w = RandomWeights(new Random(1), 3, 4, FpxFormat.Fp6E3M2);
        var ex = Assert.Throws<ArgumentException>(() => FpxGemm.Gemm(w, new float[4], new float[2], 1));
        Assert.Contains("y has 2 elements", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => FpxGemm.Gemm(w, new float[5], new float[3], 1));
        Assert.Equal("x", ex.ParamName);
        Assert.Throws<ArgumentException>(() => FpxGemm.Dequantize(w, new float[11]));
    }

    [Fact]
    public void Gemm_ThrowsForOverlappingOutput()
    {
        var w = RandomWeights(new Random(1), 4, 4, FpxFormat.Fp6E3M2);
        var buffer = new float[8];
        var ex = Assert.Throws<ArgumentException>(() => FpxGemm.Gemm(w, buffer.AsSpan(0, 4), buffer.AsSpan(2, 4), 1));
        Assert.Contains("overlaps", ex.Message);
    }
}
