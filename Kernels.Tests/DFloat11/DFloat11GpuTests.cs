using Kernels.Cpu;
using Kernels.Gpu;
using Kernels.Quant.DFloat11;
using Kernels.Quant.DFloat11.Reference;
using Kernels.Quant.Reference;
using Kernels.Tests.Gpu;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.DFloat11;

/// <summary>The ILGPU two-phase decoder on the CPU accelerator (tiny inputs: one OS thread per GPU thread).</summary>
[Collection(GpuCollection.Name)]
public class DFloat11GpuTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    private BFloat16[] GpuDecode(DFloat11Tensor t, bool staging = true)
    {
        _gpu.DFloat11AllowStaging = staging;
        using var w = _gpu.Upload(t);
        using var d = _gpu.Allocate<BFloat16>(Math.Max(1, t.ElementCount));
        if (t.ElementCount == 0) return [];
        _gpu.Decompress(w, d);
        var result = d.ToArray();
        _gpu.DFloat11AllowStaging = true;
        return result;
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 0)]
    [InlineData(13, 1)]
    [InlineData(3000, 0)]
    [InlineData(9000, 1)] // 3 blocks, escapes
    [InlineData(5000, 2)] // tiny magnitudes: long codes, sub-tables
    public void Decompress_MatchesOriginalBits(int n, int kind)
    {
        var rng = new Random(n + kind);
        var v = kind switch
        {
            0 => DFloat11Tests.Gaussian(rng, n),
            1 => DFloat11Tests.RandomBits(rng, n),
            _ => DFloat11Tests.Gaussian(rng, n, 1e-30),
        };
        var t = DFloat11Encoder.Encode(v);
        DFloat11Tests.AssertBits(v, GpuDecode(t, staging: true), $"gpu staged n={n} kind={kind}");
        DFloat11Tests.AssertBits(v, GpuDecode(t, staging: false), $"gpu direct n={n} kind={kind}");
    }

    [Fact]
    public void Decompress_AllBf16Patterns_RoundTrip()
    {
        var all = new BFloat16[65536];
        for (int i = 0; i < all.Length; i++) all[i] = BFloat16.FromBits((ushort)i);
        DFloat11Tests.AssertBits(all, GpuDecode(DFloat11Encoder.Encode(all)), "gpu all patterns");
    }

    [Fact]
    public void Decompress_TinyVectorFromDFloat11()
    {
        var luts = new byte[512];
        luts.AsSpan(0x00, 0x80).Fill(126);
        luts.AsSpan(0x80, 0x40).Fill(125);
        luts.AsSpan(0xC0, 0x20).Fill(127);
        luts.AsSpan(0xE0, 0x10).Fill(124);
        luts.AsSpan(0xF0, 0x10).Fill(128);
        luts[256 + 124] = 4; luts[256 + 125] = 2; luts[256 + 126] = 1; luts[256 + 127] = 3; luts[256 + 128] = 5;
        var sm = new byte[] { 1, 2, 3, 0x81, 5, 6, 7, 0xFF };
        var t = DFloat11Tensor.Create(new TensorShape(8), luts, [0b01011001, 0b11011110, 0b00111110], sm, [0u, 8u], new byte[320]);
        DFloat11Tests.AssertBits(DFloat11Reference.Decode(t), GpuDecode(t), "gpu tiny vector");
    }

    [Fact]
    public void Decompress_CorruptStreams_StayInBounds()
    {
        var rng = new Random(42);
        var v = DFloat11Tests.RandomBits(rng, 6000);
        var clean = DFloat11Encoder.Encode(v);
        for (int trial = 0; trial < 6; trial++)
        {
            var enc = clean.EncodedExponents.ToArray();
            for (int i = 0; i < 20; i++) enc[rng.Next(enc.Length)] ^= (byte)(1 << rng.Next(8));
            var gaps = clean.Gaps.ToArray();
            gaps[rng.Next(gaps.Length)] ^= 0xFF;
            var t = DFloat11Tensor.Create(clean.Shape, clean.Luts, enc, clean.SignMantissa, clean.OutputPositions, gaps);
            Assert.Equal(v.Length, GpuDecode(t, staging: trial % 2 == 0).Length);
        }
    }

    [Fact]
    public void Gemm_MatchesCpuFusedAndReference()
    {
        var rng = new Random(3);
        int m = 9, k = 70, n = 2;
        var w = DFloat11Tests.Gaussian(rng, m * k);
        var t = DFloat11Encoder.Encode(w, new TensorShape(m, k));
        float[] x = Inputs.Floats(rng, n * k);
        float[] expected = new float[n * m];
        double[] mag = new double[n * m];
        DenseReference.Gemm(w, x, expected, m, k, n);
        DenseReference.AbsGemm(w.Select(b => (float)b).ToArray(), x, mag, m, k, n);
        using var wt = _gpu.Upload(t);
        using var xt = _gpu.Upload(x, n, k);
        using var yt = _gpu.Allocate<float>(n, m);
        _gpu.Gemm(wt, xt, yt);
        var r = ResultComparer.Compare(expected, yt.ToArray(), mag, ResultComparer.DotTolerance(k));
        Assert.True(r.Passed, r.ToString());

        using var cpu = new CpuBackend();
        using var cw = cpu.Upload(t);
        using var cx = cpu.Upload(x, n, k);
        using var cy = cpu.Allocate<float>(n, m);
        cpu.Gemm(cw, cx, cy);
        r = ResultComparer.Compare(expected, cy.ToArray(), mag, ResultComparer.DotTolerance(k));
        Assert.True(r.Passed, r.ToString());
        using var dst = _gpu.Allocate<BFloat16>(m * k);
        Assert.Throws<ArgumentException>(() => _gpu.Decompress(cw, dst));
    }
}
