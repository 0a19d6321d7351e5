using FsCheck;
using FsCheck.Fluent;

namespace Kernels.Tests.Core;

/// <summary><see cref="Float8"/>: exact decoding of all 256 codes of each format, round-to-nearest-even encoding checked
/// against a brute-force search over the finite codes, saturation, NaN, signed zero and subnormals.</summary>
public class Float8Tests
{
    public static TheoryData<DType> Formats => new() { DType.F8E4M3, DType.F8E5M2 };

    private static float Decode(DType f, byte c) => f == DType.F8E4M3 ? Float8.E4M3ToSingle(c) : Float8.E5M2ToSingle(c);

    private static byte Encode(DType f, float x) => f == DType.F8E4M3 ? Float8.SingleToE4M3(x) : Float8.SingleToE5M2(x);

    private static float Max(DType f) => f == DType.F8E4M3 ? Float8.E4M3MaxValue : Float8.E5M2MaxValue;

    [Fact]
    public void E5M2_Decode_IsTheTopByteOfAnFp16_ForAll256Codes()
    {
        for (int c = 0; c < 256; c++)
        {
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)(c << 8));
            float got = Float8.E5M2ToSingle((byte)c);
            if (float.IsNaN(want)) Assert.True(float.IsNaN(got), $"code {c:X2}");
            else Assert.Equal(BitConverter.SingleToInt32Bits(want), BitConverter.SingleToInt32Bits(got));
            Assert.Equal(!float.IsFinite(want), Float8.IsE5M2NonFinite((byte)c));
        }
    }

    [Fact]
    public void E4M3_Decode_KnownCodes()
    {
        Assert.Equal(1f, Float8.E4M3ToSingle(0x38));
        Assert.Equal(-1f, Float8.E4M3ToSingle(0xB8));
        Assert.Equal(448f, Float8.E4M3ToSingle(0x7E));
        Assert.Equal(-448f, Float8.E4M3ToSingle(0xFE));
        Assert.Equal(MathF.ScaleB(1, -6), Float8.E4M3ToSingle(0x08));   // smallest normal
        Assert.Equal(MathF.ScaleB(1, -9), Float8.E4M3ToSingle(0x01));   // smallest subnormal
        Assert.Equal(7 * MathF.ScaleB(1, -9), Float8.E4M3ToSingle(0x07)); // largest subnormal
        Assert.Equal(1.125f, Float8.E4M3ToSingle(0x39));
        Assert.Equal(BitConverter.SingleToInt32Bits(-0f), BitConverter.SingleToInt32Bits(Float8.E4M3ToSingle(0x80)));
        Assert.True(float.IsNaN(Float8.E4M3ToSingle(0x7F)) && float.IsNaN(Float8.E4M3ToSingle(0xFF)));
        for (int c = 0; c < 256; c++)
        {
            float v = Float8.E4M3ToSingle((byte)c);
            Assert.Equal(float.IsNaN(v), Float8.IsE4M3NonFinite((byte)c));
            Assert.False(float.IsInfinity(v));
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Encode_EveryFiniteCode_RoundTrips(DType f)
    {
        for (int c = 0; c < 256; c++)
        {
            float v = Decode(f, (byte)c);
            if (!float.IsFinite(v)) continue;
            Assert.Equal(c, Encode(f, v));
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Encode_EdgeValues(DType f)
    {
        byte maxCode = f == DType.F8E4M3 ? (byte)0x7E : (byte)0x7B;
        Assert.Equal(maxCode, Encode(f, float.PositiveInfinity));
        Assert.Equal(maxCode | 0x80, Encode(f, float.NegativeInfinity));
        Assert.Equal(maxCode, Encode(f, float.MaxValue));
        Assert.Equal(maxCode, Encode(f, Max(f) * 1.06f));
        Assert.Equal(0x7F, Encode(f, BitConverter.Int32BitsToSingle(0x7FC00000)));                  // NaN keeps its sign:
        Assert.Equal(0xFF, Encode(f, BitConverter.Int32BitsToSingle(unchecked((int)0xFFC00000)))); // .NET's float.NaN is negative
        Assert.True(float.IsNaN(Decode(f, Encode(f, float.NaN))));
        Assert.Equal(0x00, Encode(f, 0f));
        Assert.Equal(0x80, Encode(f, -0f));
        Assert.Equal(0x00, Encode(f, float.Epsilon));
        Assert.Equal(0x80, Encode(f, -float.Epsilon));
        float tinySub = f == DType.F8E4M3 ? MathF.ScaleB(1, -9) : MathF.ScaleB(1, -16);
        Assert.Equal(0x00, Encode(f, tinySub / 2));               // a tie with 0: to even (0)
        Assert.Equal(0x01, Encode(f, tinySub / 2 * 1.0001f));     // just past the tie
        Assert.Equal(0x02, Encode(f, tinySub * 1.5f));            // a tie between codes 1 and 2: to even (2)
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Encode_IsTheNearestFiniteCode_TiesToEven(DType f)
    {
        var finite = Enumerable.Range(0, 256).Where(c => float.IsFinite(Decode(f, (byte)c))).ToArray();
        var gen = Gen.OneOf(
            Gen.Choose(int.MinValue, int.MaxValue).Select(BitConverter.Int32BitsToSingle).Where(float.IsFinite), // any bit pattern
            Gen.Choose(-1_000_000, 1_000_000).Select(i => i / 1_000_000f * Max(f)),                           // in range
            Gen.Elements(finite).Two().Select(p => (Decode(f, (byte)p.Item1) + Decode(f, (byte)p.Item2)) / 2)); // midpoints (ties)
        Prop.ForAll(gen.ToArbitrary(), x =>
        {
            byte got = Encode(f, x);
            if (Math.Abs(x) >= Max(f)) return Math.Abs(Decode(f, got)) == Max(f) && (got & 0x80) == (BitConverter.SingleToUInt32Bits(x) >> 24 & 0x80);
            double best = finite.Min(c => Math.Abs((double)Decode(f, (byte)c) - x));
            double err = Math.Abs((double)Decode(f, got) - x);
            if (err != best) return false;
            // Ties: two codes at the same distance; the even mantissa wins (both neighbours of a tie differ in the last bit).
            bool tie = finite.Count(c => Math.Abs((double)Decode(f, (byte)c) - x) == best && Decode(f, (byte)c) != 0) > 1;
            return !tie || (got & 1) == 0;
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(3000));
    }
}
