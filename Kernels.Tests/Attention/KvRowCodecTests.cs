using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Paging;

namespace Kernels.Tests.Attention;

/// <summary>The vectorized row encoders of the KV cache against their scalar definitions, bit for bit, on rows of every
/// length up to 70 (vector bodies and scalar tails) with edge values: ±0, subnormals, ties, values past every range, ±Inf,
/// NaN; and the row statistics (int8 max|x|, int4 min/max) against <c>MathF.Max</c>/<c>MathF.Min</c> folds.</summary>
public class KvRowCodecTests
{
    private static readonly float[] Edge =
        [0f, -0f, 1e-40f, -1e-45f, 2.9802322e-8f, 0.0009765625f, 0.01171875f, 1.0625f, -1.0625f, 447f, 464f, 465f, 500f, -70000f,
         57344f, 61440f, 65520f, 1e30f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, BitConverter.Int32BitsToSingle(0x7FC12345)];

    private static Arbitrary<float[]> Rows =>
        (from n in Gen.Choose(1, 70)
         from xs in Gen.ArrayOf(Gen.OneOf(
             Gen.Choose(-1_000_000, 1_000_000).Select(i => i / 250_000f),
             Gen.Elements(Edge),
             Gen.Choose(int.MinValue, int.MaxValue).Select(BitConverter.Int32BitsToSingle)), n)
         select xs).ToArbitrary();

    /// <summary>Rows without the non-finite and huge values, so the vector paths (not the NaN fallbacks) run.</summary>
    private static Arbitrary<float[]> FiniteRows =>
        (from n in Gen.Choose(1, 70)
         from xs in Gen.ArrayOf(Gen.OneOf(Gen.Choose(-1_000_000, 1_000_000).Select(i => i / 250_000f), Gen.Elements(0f, -0f, 1e-40f, 0.5f, -2.5f)), n)
         select xs).ToArbitrary();

    [Fact]
    public void Bf16AndFloat8_MatchTheScalarEncoders()
    {
        Prop.ForAll(Rows, x =>
        {
            var bf = new ushort[x.Length];
            KvRowCodec.ToBf16(x, bf);
            for (int i = 0; i < x.Length; i++) Assert.Equal(((BFloat16)x[i]).Bits, bf[i]);
            foreach (bool e4m3 in new[] { true, false })
                foreach (float scale in new[] { 1f, 0.37f })
                {
                    var c = new byte[x.Length];
                    bool special = KvRowCodec.ToFloat8(x, scale, e4m3, c);
                    bool want = false;
                    for (int i = 0; i < x.Length; i++)
                    {
                        byte e = e4m3 ? Float8.SingleToE4M3(x[i] / scale) : Float8.SingleToE5M2(x[i] / scale);
                        Assert.True(e == c[i], $"{(e4m3 ? "E4M3" : "E5M2")} of {x[i]} / {scale}: {e:X2} vs {c[i]:X2}");
                        want |= e4m3 ? Float8.IsE4M3NonFinite(e) : Float8.IsE5M2NonFinite(e);
                    }
                    Assert.Equal(want, special);
                }
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(400));
    }

    private static void CheckInts(float[] x)
    {
        // int8: the scale from MathF.Max over |x| from 0; then the codes.
        float amax = 0;
        foreach (float v in x) amax = MathF.Max(amax, MathF.Abs(v));
        foreach (float s in new[] { amax / 127f, 0.05f, 0f })
        {
            var c = new byte[x.Length];
            KvRowCodec.ToInt8(x, s, c);
            for (int i = 0; i < x.Length; i++)
            {
                float q = s == 0 ? 0 : MathF.Round(x[i] / s);
                Assert.True((byte)(sbyte)Math.Clamp(q, -127f, 127f) == c[i], $"int8 of {x[i]} / {s}");
            }
        }
        // int4: (s, z) from MathF.Min/Max folds, then the nibbles.
        float[] even = x.Length % 2 == 0 ? x : [.. x, 0.25f];
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (float v in even)
        {
            min = MathF.Min(min, v);
            max = MathF.Max(max, v);
        }
        float s4 = (max - min) / 15f;
        if (!(s4 > 0)) s4 = MathF.Max(MathF.Abs(min), MathF.Abs(max)) is > 0 and var a ? a : 1f;
        float z = Math.Clamp(MathF.Round(-min / s4), 0f, 15f);
        var (gs, gz) = PagedKvCache.Int4Params(even);
        Assert.True(gs.Equals(s4) && gz.Equals(z), $"int4 params ({gs}, {gz}) vs ({s4}, {z})");
        var bytes = new byte[even.Length / 2];
        KvRowCodec.ToInt4(even, s4, z, bytes);
        int half = even.Length / 2;
        for (int j = 0; j < half; j++)
        {
            int lo = (int)Math.Clamp(MathF.Round(even[j] / s4) + z, 0f, 15f), hi = (int)Math.Clamp(MathF.Round(even[j + half] / s4) + z, 0f, 15f);
            Assert.True((byte)(lo | (hi << 4)) == bytes[j], $"int4 byte {j}");
        }
    }

    [Fact]
    public void Int8AndInt4_MatchTheScalarQuantizers()
    {
        Prop.ForAll(Rows, x => CheckInts(x)).Check(Config.QuickThrowOnFailure.WithMaxTest(300));
        Prop.ForAll(FiniteRows, x => CheckInts(x)).Check(Config.QuickThrowOnFailure.WithMaxTest(300));
    }
}
