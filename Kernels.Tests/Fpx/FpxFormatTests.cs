using FsCheck;
using FsCheck.Fluent;
using Kernels.Quant.Fpx;
using Kernels.Quant.Reference;

namespace Kernels.Tests.Fpx;

public class FpxFormatTests
{
    public static TheoryData<FpxFormat> Formats => new(FpxFormat.Fp6E3M2, FpxFormat.Fp5E2M2);

    [Fact]
    public void Decode_KnownCodes_MatchFp6LlmTable()
    {
        Assert.Equal(28f, FpxCodec.Decode(FpxFormat.Fp6E3M2, 0x1F));
        Assert.Equal(0.0625f, FpxCodec.Decode(FpxFormat.Fp6E3M2, 0x01));
        Assert.Equal(1f, FpxCodec.Decode(FpxFormat.Fp6E3M2, 0x0C));
        Assert.Equal(1.25f, FpxCodec.Decode(FpxFormat.Fp6E3M2, 0x0D));
        Assert.Equal(-0.0625f, FpxCodec.Decode(FpxFormat.Fp6E3M2, 0x21));
        Assert.Equal(-28f, FpxCodec.Decode(FpxFormat.Fp6E3M2, 0x3F));
        Assert.True(float.IsNegative(FpxCodec.Decode(FpxFormat.Fp6E3M2, 0x20)));
        float[] fp5 = Enumerable.Range(0, 16).Select(c => FpxCodec.Decode(FpxFormat.Fp5E2M2, c)).ToArray();
        Assert.Equal([0f, .25f, .5f, .75f, 1f, 1.25f, 1.5f, 1.75f, 2f, 2.5f, 3f, 3.5f, 4f, 5f, 6f, 7f], fp5);
    }

    // The kernels' decode: fp32 pattern (s << 31) | (e·m << 21), times 2^(127 − bias). Exact for every code, subnormals included.
    [Theory]
    [MemberData(nameof(Formats))]
    public void BitTrick_EveryCode_IsExact(FpxFormat f)
    {
        int bits = FpxCodec.Bits(f);
        for (int c = 0; c < FpxCodec.CodeCount(f); c++)
        {
            int s = c >> (bits - 1), mag = c & ((1 << (bits - 1)) - 1);
            float pattern = BitConverter.Int32BitsToSingle((s << 31) | (mag << 21));
            float v = pattern * MathF.ScaleB(1f, FpxCodec.Fp32BiasShift(f));
            Assert.Equal(BitConverter.SingleToInt32Bits(FpxCodec.Decode(f, c)), BitConverter.SingleToInt32Bits(v));
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Encode_OfDecode_IsIdentity(FpxFormat f)
    {
        for (int c = 0; c < FpxCodec.CodeCount(f); c++) Assert.Equal(c, FpxCodec.Encode(f, FpxCodec.Decode(f, c)));
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Encode_MatchesBruteForceNearestEven(FpxFormat f)
    {
        float max = FpxCodec.MaxValue(f);
        var grid = Enumerable.Range(0, FpxCodec.CodeCount(f)).Select(c => (Code: c, V: (double)FpxCodec.Decode(f, c))).ToArray();
        Prop.ForAll(Gen.Choose(-1_000_000, 1_000_000).Select(i => i / 1_000_000.0 * max * 1.2).ToArbitrary(), v =>
        {
            int got = FpxCodec.Encode(f, v);
            double best = grid.Min(g => Math.Abs(g.V - v));
            var ties = grid.Where(g => Math.Abs(g.V - v) == best && (g.V != 0 || double.IsNegative(v) == (g.Code >> (FpxCodec.Bits(f) - 1) == 1))).ToArray();
            if (Math.Abs(v) >= max) return got == (v < 0 ? grid.Length - 1 : grid.Length / 2 - 1);
            return ties.Any(t => t.Code == got) && (ties.Length == 1 || (got & 1) == 0);
        }).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Encode_MidpointsRoundToEven_AndSaturates(FpxFormat f)
    {
        int half = FpxCodec.CodeCount(f) / 2;
        for (int c = 0; c + 1 < half; c++)
        {
            double mid = (FpxCodec.Decode(f, c) + (double)FpxCodec.Decode(f, c + 1)) / 2;
            int even = (c & 1) == 0 ? c : c + 1;
            Assert.Equal(even, FpxCodec.Encode(f, mid));
            Assert.Equal(even | half, FpxCodec.Encode(f, -mid));
        }
        Assert.Equal(half - 1, FpxCodec.Encode(f, 1e30));
        Assert.Equal(2 * half - 1, FpxCodec.Encode(f, double.NegativeInfinity));
        Assert.Equal(half, FpxCodec.Encode(f, -0.0));
        Assert.Equal(half, FpxCodec.Encode(f, -1e-30)); // rounds to zero, keeps the sign
        Assert.Throws<ArgumentException>(() => FpxCodec.Encode(f, double.NaN));
    }

    public sealed record PackCase(int Rows, int Cols, int Bits, int Seed);

    private static Arbitrary<PackCase> PackCases =>
        (from r in Gen.Choose(0, 5)
         from c in Gen.OneOf(Gen.Choose(0, 10), Gen.Elements(63, 64, 65, 127, 128, 200))
         from b in Gen.Elements(5, 6)
         from s in Gen.Choose(0, 1000)
         select new PackCase(r, c, b, s)).ToArbitrary();

    [Fact]
    public void Unpack_OfPack_IsIdentity()
    {
        Prop.ForAll(PackCases, p =>
        {
            var rng = new Random(p.Seed);
            var codes = new byte[p.Rows * p.Cols];
            for (int i = 0; i < codes.Length; i++) codes[i] = (byte)rng.Next(1 << p.Bits);
            int blocks = p.Rows * FpxPacking.PaddedColumns(p.Cols) / 64;
            var hi = new byte[blocks * FpxPacking.HighBlockBytes(p.Bits)];
            var lo = new byte[blocks * 32];
            FpxPacking.Pack(codes, p.Rows, p.Cols, p.Bits, hi, lo);
            var back = new byte[codes.Length];
            FpxPacking.Unpack(hi, lo, p.Rows, p.Cols, p.Bits, back);
            Assert.Equal(codes, back);
            Assert.Equal(6.0 / 8 * blocks * 64, p.Bits == 6 ? hi.Length + lo.Length : hi.Length + lo.Length + blocks * 8); // exactly 6 (5) bits per code
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Pack_LayoutDiagram_Holds()
    {
        // Block of 64 codes: lo nibble of code j in byte j (j < 32), of code j+32 in the high nibble; 2-bit field of code 16q+j at bits 2q of byte j.
        var codes = new byte[64];
        codes[0] = 0x3F; codes[33] = 0x25; codes[47] = 0x10;
        var hi = new byte[16];
        var lo = new byte[32];
        FpxPacking.Pack(codes, 1, 64, 6, hi, lo);
        Assert.Equal(0x0F, lo[0]);
        Assert.Equal(0x50, lo[1]);
        Assert.Equal(0x03, hi[0]);
        Assert.Equal(0x20, hi[1]);   // code 33 = 16·2 + 1 → field 2 at bits 4..5 of byte 1
        Assert.Equal(0x10, hi[15]);  // code 47 = 16·2 + 15 → field 1 at bits 4..5 of byte 15
    }

    [Fact]
    public void Pack_ThrowsForWrongPlaneLength()
    {
        var ex = Assert.Throws<ArgumentException>(() => FpxPacking.Pack(new byte[64], 1, 64, 6, new byte[15], new byte[32]));
        Assert.Contains("16", ex.Message);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Quantize_ScaleIsRowMaxOverFormatMax_AndErrorIsHalfAStep(FpxFormat f)
    {
        var rng = new Random(42);
        int m = 7, k = 131;
        float[] w = Enumerable.Range(0, m * k).Select(_ => (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-3, 2)))).ToArray();
        for (int c = 0; c < k; c++) w[3 * k + c] = 0; // zero row → scale 1
        w[5 * k + 7] = -0f;
        var q = FpxWeights.Quantize(w, m, k, f);
        var deq = new float[m * k];
        FpxReference.Dequantize(q, deq);
        float max = FpxCodec.MaxValue(f);
        for (int r = 0; r < m; r++)
        {
            float amax = w.Skip(r * k).Take(k).Max(Math.Abs);
            Assert.Equal(amax == 0 ? 1f : amax / max, q.Scales[r]);
            // Half a grid step: 2^-3 relative in the normal range, half the subnormal step (2^-bias-2 · scale) below it.
            double sub = Math.ScaleB(1.0, -FpxCodec.Bias(f) - 2) * q.Scales[r];
            for (int c = 0; c < k; c++)
                Assert.True(Math.Abs(deq[r * k + c] - w[r * k + c]) <= Math.Max(Math.Abs(w[r * k + c]) / 8, sub) * 1.000001, $"r={r} c={c}");
        }
        Assert.True(float.IsNegative(deq[5 * k + 7]));
    }

    [Fact]
    public void Quantize_Bf16AndFp16_MatchFloat()
    {
        var rng = new Random(1);
        float[] w = Enumerable.Range(0, 3 * 70).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var b = w.Select(v => (BFloat16)v).ToArray();
        var h = w.Select(v => (Half)v).ToArray();
        Assert.Equal(FpxWeights.Quantize(b.Select(v => (float)v).ToArray(), 3, 70, FpxFormat.Fp6E3M2).GetCodes(), FpxWeights.Quantize(b, 3, 70, FpxFormat.Fp6E3M2).GetCodes());
        Assert.Equal(FpxWeights.Quantize(h.Select(v => (float)v).ToArray(), 3, 70, FpxFormat.Fp5E2M2).GetCodes(), FpxWeights.Quantize(h, 3, 70, FpxFormat.Fp5E2M2).GetCodes());
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void Quantize_NonFinite_ThrowsNamingRowAndColumn(float bad)
    {
        var w = new float[3 * 5];
        w[2 * 5 + 4] = bad;
        var ex = Assert.Throws<ArgumentException>(() => FpxWeights.Quantize(w, 3, 5, FpxFormat.Fp6E3M2));
        Assert.Contains("[2, 4]", ex.Message);
    }

    [Fact]
    public void FromCodes_RejectsOutOfRangeCode()
    {
        var ex = Assert.Throws<ArgumentException>(() => FpxWeights.FromCodes(new byte[] { 0, 32 }, new float[] { 1 }, 1, 2, FpxFormat.Fp5E2M2));
        Assert.Contains("codes[1]", ex.Message);
    }
}
