using FsCheck;
using FsCheck.Fluent;
using Kernels.Cpu;
using Kernels.Cpu.Fpx;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Fpx;

/// <summary>The vectorized W6A8 activation quantizer against the reference, bit for bit, on every ISA path.</summary>
public class ActivationQuantizerTests
{
    /// <summary>Random tokens of odd widths, with exact halves (x/s = k + ½, where round-half-even decides), zeros, −0,
    /// subnormals, all-zero tokens and values spanning many binades: codes and scales equal the reference's.</summary>
    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Quantize_EachIsa_MatchesReferenceBitForBit(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        var cases = from n in Gen.Choose(1, 4)
                    from k in Gen.OneOf(Gen.Choose(0, 40), Gen.Elements(63, 64, 65, 127, 128, 129, 300))
                    from seed in Gen.Choose(0, int.MaxValue)
                    select (n, k, seed);
        Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var (n, k, seed) = c;
            var rng = new Random(seed);
            float[] x = new float[n * k];
            for (int j = 0; j < n; j++)
            {
                int kind = rng.Next(4);
                float scale = kind == 0 ? 0f : kind == 1 ? 100f : MathF.Pow(10, rng.Next(-40, 38));
                for (int i = 0; i < k; i++)
                {
                    float v = (float)(rng.NextDouble() * 2 - 1) * scale;
                    if (kind == 1 && i % 3 == 0) v = rng.Next(-127, 127) + 0.5f; // m + ½: exact ties once s = 1 (below)
                    if (rng.Next(20) == 0) v = rng.Next(2) == 0 ? -0f : float.Epsilon * rng.Next(1, 100);
                    x[j * k + i] = v;
                }
                if (kind == 1 && k > 0) x[j * k + rng.Next(k)] = 127f; // s = 1: x/s = x exactly, so the halves are exact ties
            }
            var (eq, es, aq, @as) = (new sbyte[x.Length], new float[n], new sbyte[x.Length], new float[n]);
            FpxReference.QuantizeActivations(x, k, eq, es);
            ActivationQuantizer.Quantize(isa, x, k, aq, @as);
            Assert.Equal(eq, aq);
            Assert.Equal(es.Select(BitConverter.SingleToInt32Bits), @as.Select(BitConverter.SingleToInt32Bits));
        }).QuickCheckThrowOnFailure();
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Quantize_NonFinite_NamesTheElement(IsaPath isa)
    {
        if (!CpuIsa.IsSupported(isa)) return;
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            float[] x = new float[3 * 37];
            x[2 * 37 + 29] = bad;
            x[2 * 37 + 30] = float.NaN; // the first one is named
            var ex = Assert.Throws<ArgumentException>(() => ActivationQuantizer.Quantize(isa, x, 37, new sbyte[x.Length], new float[3]));
            Assert.Contains("x[2, 29]", ex.Message);
        }
    }

    [Fact]
    public void Sum_MatchesScalar_IncludingExtremes()
    {
        Prop.ForAll(Gen.Choose(0, 300).ToArbitrary(), Gen.Choose(0, int.MaxValue).ToArbitrary(), (len, seed) =>
        {
            var rng = new Random(seed);
            int mode = rng.Next(3);
            var v = new sbyte[len];
            for (int i = 0; i < len; i++) v[i] = mode == 0 ? sbyte.MinValue : mode == 1 ? sbyte.MaxValue : (sbyte)rng.Next(-128, 128);
            Assert.Equal(v.Sum(b => (int)b), ActivationQuantizer.Sum(v));
        }).QuickCheckThrowOnFailure();
    }
}
