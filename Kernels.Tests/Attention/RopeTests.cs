using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Positional;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Gpu;
using Kernels.Tests.Gpu;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Attention;

/// <summary>Rotary position embedding: the options and table against hand-computed values, every CPU ISA path against
/// the double-precision <see cref="RopeReference"/>, the paths against each other (bit for bit), in place against out of
/// place, the GPU kernel (CPU accelerator) against the CPU backend, edge values and the argument checks.</summary>
[Collection(GpuCollection.Name)]
public class RopeTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    /// <summary>Guard floats around every output buffer: a write outside the tensor shows up as a changed guard.</summary>
    private const int Guard = 16;
    private const float GuardValue = -7.25e9f;

    public sealed record RopeCase(int Tokens, int Heads, int HeadDim, int RotaryDim, bool Interleaved, double Theta, double Scale,
        Llama31Scaling? Llama31, int MaxPositions, int Seed)
    {
        public RopeOptions Options => new() { RotaryDim = RotaryDim, Theta = Theta, Scale = Scale, Interleaved = Interleaved, Llama31 = Llama31 };

        public override string ToString() =>
            $"tokens {Tokens} heads {Heads} head_dim {HeadDim} rotary {RotaryDim} interleaved {Interleaved} theta {Theta} scale {Scale} llama31 {Llama31} max {MaxPositions} seed {Seed}";
    }

    private static readonly Llama31Scaling SmallLlama31 = new(4, 1, 2, 64); // medium band at wavelengths 32..64: hit by theta 10000

    /// <summary>Shapes: 0, 1 and up to 40 tokens; head_dim 64/128/256 and the odd-ish 80, 96, 40 plus tiny and non-power-of-two
    /// ones (2, 6, 18, 34, 130) whose halves are shorter than or not a multiple of every vector width; rotary_dim full or
    /// any even value below head_dim.</summary>
    internal static Arbitrary<RopeCase> Cases =>
        (from tokens in Gen.OneOf(Gen.Elements(0, 1, 2, 3), Gen.Choose(0, 40))
         from heads in Gen.Elements(1, 2, 3, 8)
         from headDim in Gen.Elements(64, 128, 256, 80, 96, 40, 2, 6, 18, 34, 130)
         from pairs in Gen.OneOf(Gen.Constant(0), Gen.Choose(1, headDim / 2))
         from interleaved in Gen.Elements(false, true)
         from theta in Gen.Elements(10000.0, 500000.0, 1e6, 10.0)
         from scale in Gen.Elements(1.0, 1.0, 4.0, 0.5)
         from llama in Gen.Elements<Llama31Scaling?>(null, null, Llama31Scaling.Llama31, SmallLlama31)
         from maxPositions in Gen.Elements(1, 50, 2048)
         from seed in Gen.Choose(0, int.MaxValue)
         select new RopeCase(tokens, heads, headDim, 2 * pairs, interleaved, theta, scale, llama, maxPositions, seed)).ToArbitrary();

    private static int[] Positions(RopeCase c, Random rng)
    {
        var p = new int[c.Tokens];
        for (int i = 0; i < p.Length; i++) p[i] = rng.Next(4) == 0 ? (rng.Next(2) == 0 ? 0 : c.MaxPositions - 1) : rng.Next(c.MaxPositions);
        return p;
    }

    /// <summary>Index of the other element of <paramref name="d"/>'s pair (d &lt; rotary).</summary>
    private static int Partner(int d, int rotary, bool interleaved) => interleaved ? d ^ 1 : d < rotary / 2 ? d + rotary / 2 : d - rotary / 2;

    private static bool SameBits(float a, float b) => (float.IsNaN(a) && float.IsNaN(b)) || BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);

    /// <summary>
    /// Kernel vs oracle, per rotated element: the table's cos/sin are the oracle's double values rounded to fp32 (≤ 2⁻²⁵
    /// each, |cos|, |sin| ≤ 1), the kernel rounds x2·s once and the fused result once (2⁻²⁴ relative each), and the oracle
    /// rounds its double result to fp32 once: in all |e − a| ≤ (2⁻²⁵ + 2⁻²⁴ + 2⁻²⁴ + 2⁻²⁴)·(|x1| + |x2|) &lt; 2⁻²²·(|x1| + |x2|),
    /// plus a few subnormal units for products that underflow. A swapped sin sign or a wrong pairing misses by ~|x|.
    /// Non-finite pairs must match the oracle's class (NaN, or the same infinity); dimensions ≥ rotary_dim are bitwise copies.
    /// </summary>
    private static void AssertMatchesReference(float[] x, float[] expected, ReadOnlySpan<float> actual, int headDim, int rotary, bool interleaved, string what)
    {
        for (int k = 0; k < x.Length; k++)
        {
            int d = k % headDim;
            float e = expected[k], a = actual[k];
            if (d >= rotary)
            {
                Assert.True(SameBits(x[k], a), $"{what}: pass-through element {k} (dim {d}) is {a}, input {x[k]}");
                continue;
            }
            float x1 = x[k], x2 = x[k - d + Partner(d, rotary, interleaved)];
            if (!float.IsFinite(x1) || !float.IsFinite(x2))
            {
                Assert.True(SameBits(e, a) || (float.IsNaN(e) && float.IsNaN(a)) || e == a, $"{what}: element {k} (dim {d}) non-finite pair ({x1}, {x2}): expected {e}, got {a}");
                continue;
            }
            double tol = Math.ScaleB(Math.Abs((double)x1) + Math.Abs((double)x2), -22) + Math.ScaleB(1, -146);
            Assert.True(float.IsFinite(a) && Math.Abs((double)e - a) <= tol,
                $"{what}: element {k} (dim {d}): expected {e:R}, got {a:R} (|diff| {Math.Abs((double)e - a):E3} > {tol:E3}; pair ({x1}, {x2}))");
        }
    }

    private static void CheckCpu(RopeCase c, KernelOptions options, bool edges)
    {
        var rng = new Random(c.Seed);
        var opts = c.Options;
        var table = new RopeTable(opts, c.HeadDim, c.MaxPositions);
        int rotary = table.RotaryDim;
        int[] pos = Positions(c, rng);
        int n = c.Tokens * c.Heads * c.HeadDim;
        float[] x = Inputs.Floats(rng, n, 4f, edges, edgeEvery: 16), xCopy = (float[])x.Clone(), posCopy = pos.Select(v => (float)v).ToArray();
        var expected = new float[n];
        RopeReference.Apply(opts, c.HeadDim, pos, x, expected);

        var guarded = new float[n + 2 * Guard];
        guarded.AsSpan().Fill(GuardValue);
        var actual = guarded.AsSpan(Guard, n);
        actual.Fill(float.NaN);
        RopeKernel.Apply(table, pos, x, actual, options);
        string what = $"{c} {options.Isa} edges={edges}";
        AssertMatchesReference(x, expected, actual, c.HeadDim, rotary, c.Interleaved, what);
        Assert.True(guarded.AsSpan(0, Guard).ToArray().All(v => v == GuardValue) && guarded.AsSpan(Guard + n).ToArray().All(v => v == GuardValue), $"{what}: wrote outside output");
        Assert.Equal(xCopy, x);
        Assert.Equal(posCopy, pos.Select(v => (float)v).ToArray());

        // Every path computes the same fused formula: bit-identical to the scalar path.
        var scalar = new float[n];
        RopeKernel.Apply(table, pos, x, scalar, new KernelOptions { Isa = IsaPath.Scalar });
        for (int k = 0; k < n; k++) Assert.True(SameBits(scalar[k], actual[k]), $"{what}: element {k}: scalar {scalar[k]:R} vs {actual[k]:R}");

        // In place (the last vector of a row overlaps the one before it) gives the same bits, inside the same guards.
        guarded.AsSpan().Fill(GuardValue);
        x.CopyTo(guarded, Guard);
        RopeKernel.ApplyInPlace(table, pos, guarded.AsSpan(Guard, n), options);
        for (int k = 0; k < n; k++) Assert.True(SameBits(scalar[k], guarded[Guard + k]), $"{what}: in place element {k}: {guarded[Guard + k]:R} vs {scalar[k]:R}");
        Assert.True(guarded.AsSpan(0, Guard).ToArray().All(v => v == GuardValue) && guarded.AsSpan(Guard + n).ToArray().All(v => v == GuardValue), $"{what}: in place wrote outside x");
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Apply_EachIsa_MatchesReference(IsaPath isa)
    {
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(Cases, c => CheckCpu(c, options, edges: false)).Check(Config.QuickThrowOnFailure.WithMaxTest(150));
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Apply_EdgeValues_EachIsa_StayInTheirPairs(IsaPath isa)
    {
        // NaN, ±Inf, ±0 and subnormals in x (1 in 16): a non-finite value spoils only its own pair (the same way as the
        // oracle's IEEE arithmetic), every finite pair stays within tolerance, pass-through dimensions are copied bit for bit.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        Prop.ForAll(Cases, c => CheckCpu(c, options, edges: true)).Check(Config.QuickThrowOnFailure.WithMaxTest(80));
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Apply_SignedZeros_EachIsa_MatchReferenceBitwise(IsaPath isa)
    {
        // With only ±0 inputs every product is an exact signed zero in float and in double, so the sign rules of the sums
        // must agree bit for bit (position 0 included, where sin = +0).
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        foreach (bool interleaved in new[] { false, true })
        {
            var opts = new RopeOptions { Interleaved = interleaved };
            var table = new RopeTable(opts, 40, 16);
            var rng = new Random(3);
            int[] pos = [0, 1, 5, 15];
            float[] x = Enumerable.Range(0, pos.Length * 3 * 40).Select(_ => rng.Next(2) == 0 ? 0f : -0f).ToArray();
            float[] e = new float[x.Length], a = new float[x.Length];
            RopeReference.Apply(opts, 40, pos, x, e);
            RopeKernel.Apply(table, pos, x, a, options);
            for (int k = 0; k < x.Length; k++)
                Assert.True(BitConverter.SingleToInt32Bits(e[k]) == BitConverter.SingleToInt32Bits(a[k]), $"{isa} interleaved={interleaved} element {k}: expected {e[k]}, got {a[k]}");
        }
    }

    [Fact]
    public void Apply_HandComputedPairs_NeoxAndGptJ()
    {
        // head_dim 4, theta 10000: f0 = 1, f1 = 10000^(-2/4) = 0.01. Written out from the formula, not from the oracle.
        float[] x = [1, 2, 3, 4];
        double c0 = Math.Cos(3), s0 = Math.Sin(3), c1 = Math.Cos(0.03), s1 = Math.Sin(0.03);
        double[] neox = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1]; // pairs (0, 2), (1, 3)
        double[] gptj = [1 * c0 - 2 * s0, 2 * c0 + 1 * s0, 3 * c1 - 4 * s1, 4 * c1 + 3 * s1]; // pairs (0, 1), (2, 3)
        foreach (var (interleaved, want) in new[] { (false, neox), (true, gptj) })
        {
            var opts = new RopeOptions { Interleaved = interleaved };
            var r = new float[4];
            RopeReference.Apply(opts, 4, [3], x, r);
            for (int k = 0; k < 4; k++) Assert.Equal(want[k], r[k], 1e-6);
            foreach (var isa in IsaMatrix.All.Where(CpuIsa.IsSupported))
            {
                var a = new float[4];
                RopeKernel.Apply(new RopeTable(opts, 4, 4), [3], x, a, new KernelOptions { Isa = isa });
                for (int k = 0; k < 4; k++) Assert.Equal(want[k], a[k], 1e-6);
            }
        }
    }

    [Fact]
    public void Apply_LargeCall_ParallelEqualsSingleThreaded()
    {
        // 300 tokens × 8 heads × 128 = 307,200 rotated floats: above the 128 Ki threshold, so the worker pool splits tokens.
        var table = new RopeTable(new RopeOptions { Theta = 500000, Llama31 = Llama31Scaling.Llama31 }, 128, 8192);
        var rng = new Random(5);
        int[] pos = Enumerable.Range(0, 300).Select(_ => rng.Next(8192)).ToArray();
        float[] x = Inputs.Floats(rng, 300 * 8 * 128, 3f);
        Assert.True((long)300 * 8 * 128 >= RopeKernel.ParallelThreshold);
        float[] one = new float[x.Length], many = new float[x.Length], expected = new float[x.Length];
        RopeKernel.Apply(table, pos, x, one, new KernelOptions { MaxDegreeOfParallelism = 1 });
        RopeKernel.Apply(table, pos, x, many, new KernelOptions { MaxDegreeOfParallelism = 4 });
        Assert.Equal(one, many);
        RopeReference.Apply(table.Options, 128, pos, x, expected);
        AssertMatchesReference(x, expected, many, 128, 128, false, "parallel");
    }

    [Fact]
    public void Apply_LongContextPositions_MatchReference()
    {
        // Llama 3.1 at positions up to 131,071: angles of ~10^5 rad, computed in double by both the table and the oracle.
        var opts = new RopeOptions { Theta = 500000, Llama31 = Llama31Scaling.Llama31 };
        var table = new RopeTable(opts, 128, 131072);
        Assert.Equal(131072L * 128 * 4, table.SizeInBytes); // 64 MiB
        int[] pos = [131071, 100000, 65536, 8191, 8192, 1];
        float[] x = Inputs.Floats(new Random(9), pos.Length * 2 * 128, 2f);
        float[] e = new float[x.Length], a = new float[x.Length];
        RopeReference.Apply(opts, 128, pos, x, e);
        RopeKernel.Apply(table, pos, x, a);
        AssertMatchesReference(x, e, a, 128, 128, false, "long context");
    }

    [Fact]
    public void Table_KnownValues()
    {
        var table = new RopeTable(new RopeOptions { RotaryDim = 4 }, 6, 10);
        Assert.Equal((6, 4, 10, 10L * 4 * 4), (table.HeadDim, table.RotaryDim, table.MaxPositions, table.SizeInBytes));
        Assert.Equal([1f, 1f], table.Cos(0).ToArray()); // position 0: the identity
        Assert.Equal([0f, 0f], table.Sin(0).ToArray());
        // f0 = 1, f1 = 10000^(-2/4) = 0.01; row p = [cos p·f0, cos p·f1, sin p·f0, sin p·f1].
        Assert.Equal([(float)Math.Cos(7), (float)Math.Cos(0.07)], table.Cos(7).ToArray());
        Assert.Equal([(float)Math.Sin(7), (float)Math.Sin(0.07)], table.Sin(7).ToArray());
        Assert.Equal(table.CosSin.Slice(7 * 4, 4).ToArray(), table.Cos(7).ToArray().Concat(table.Sin(7).ToArray()).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Cos(10).Length);

        // Linear scaling: position 8 with Scale 4 is position 2 without.
        var scaled = new RopeTable(new RopeOptions { RotaryDim = 4, Scale = 4 }, 6, 10);
        Assert.Equal(table.CosSin.Slice(2 * 4, 4).ToArray(), scaled.CosSin.Slice(8 * 4, 4).ToArray());

        // Position 0 applies the identity to finite values (every path).
        var full = new RopeTable(new RopeOptions(), 128, 1);
        float[] x = Inputs.Floats(new Random(1), 3 * 128, 5f), y = new float[x.Length];
        RopeKernel.Apply(full, [0], x, y);
        Assert.Equal(x, y);
    }

    [Fact]
    public void Llama31_Frequencies_MatchHuggingFacesFormula()
    {
        // HF _compute_llama3_parameters with theta 500000, head_dim 128, factor 8, low 1, high 4, original 8192, in Python:
        // pair 20: wavelength 379.4 < 2048, kept; pair 30: 2948.3 in [2048, 8192], smoothed; pair 40: 22910.6 > 8192, ÷ 8.
        var opts = new RopeOptions { Theta = 500000, Llama31 = Llama31Scaling.Llama31 };
        Assert.Equal(0.016560440080994446, opts.InverseFrequency(20, 128), 1e-17);
        Assert.Equal(0.0013718935677611381, opts.InverseFrequency(30, 128), 1e-17);
        Assert.Equal(3.428102195952591e-05, opts.InverseFrequency(40, 128), 1e-19);
        Assert.Equal(0.0002742481756762073 / 8, opts.InverseFrequency(40, 128), 1e-19);
        // FlashInfer's form: f' = (1 − s)·f/factor + s·f with s = clamp(f·N/(2π(high − low)) − low/(high − low), 0, 1).
        var plain = new RopeOptions { Theta = 500000 };
        for (int i = 0; i < 64; i++)
        {
            double f = plain.InverseFrequency(i, 128);
            double s = Math.Clamp(f * 8192 / (2 * Math.PI * 3) - 1.0 / 3, 0, 1);
            Assert.Equal((1 - s) * f / 8 + s * f, opts.InverseFrequency(i, 128), f * 1e-13);
        }
        // The table uses the smoothed frequencies.
        var table = new RopeTable(opts, 128, 1000);
        Assert.Equal((float)Math.Cos(999 * 0.0013718935677611381), table.Cos(999)[30]);
    }

    [Fact]
    public void Options_Validation_NamesTheProblem()
    {
        Assert.Contains("even", Assert.Throws<ArgumentException>(() => new RopeOptions { RotaryDim = 63 }.Validate(128)).Message);
        Assert.Contains("63", Assert.Throws<ArgumentException>(() => new RopeTable(new RopeOptions { RotaryDim = 63 }, 128, 4)).Message);
        Assert.Contains("exceeds head_dim 64", Assert.Throws<ArgumentException>(() => new RopeOptions { RotaryDim = 128 }.Validate(64)).Message);
        Assert.Contains("odd", Assert.Throws<ArgumentException>(() => new RopeOptions().Validate(81)).Message);
        Assert.Equal(80, new RopeOptions { RotaryDim = 80 }.Validate(81)); // odd head_dim with an even rotary part is fine
        Assert.Contains("head_dim must be positive", Assert.Throws<ArgumentException>(() => new RopeOptions().Validate(0)).Message);
        Assert.Contains("Theta", Assert.Throws<ArgumentException>(() => new RopeOptions { Theta = 0 }.Validate()).Message);
        Assert.Contains("Scale", Assert.Throws<ArgumentException>(() => new RopeOptions { Scale = double.NaN }.Validate()).Message);
        Assert.Contains("HighFreqFactor", Assert.Throws<ArgumentException>(() => new RopeOptions { Llama31 = new(8, 4, 4, 8192) }.Validate()).Message);
        Assert.Contains("OriginalMaxPositions", Assert.Throws<ArgumentException>(() => new RopeOptions { Llama31 = new(8, 1, 4, 0) }.Validate()).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(new RopeOptions(), 64, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeOptions().InverseFrequency(32, 64));
    }

    [Fact]
    public void Apply_BadSizesAndPositions_ThrowBeforeWriting()
    {
        var table = new RopeTable(new RopeOptions(), 64, 4096);
        float[] x = Inputs.Floats(new Random(2), 3 * 2 * 64), xCopy = (float[])x.Clone();
        var output = new float[x.Length];
        Assert.Contains("x has 383 elements", Assert.Throws<ArgumentException>(() => RopeKernel.Apply(table, [1, 2, 3], x.AsSpan(1), output.AsSpan(1))).Message);
        Assert.Contains("output has 383 elements; x has 384", Assert.Throws<ArgumentException>(() => RopeKernel.Apply(table, [1, 2, 3], x, output.AsSpan(1))).Message);
        Assert.Contains("tokens 0", Assert.Throws<ArgumentException>(() => RopeKernel.Apply(table, [], x, output)).Message);
        Assert.Contains("overlaps", Assert.Throws<ArgumentException>(() => RopeKernel.Apply(table, [1, 2, 3], x.AsSpan(0, 192), x.AsSpan(64, 192))).Message);

        output.AsSpan().Fill(123f);
        foreach (int bad in new[] { 4096, -1, int.MinValue })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => RopeKernel.Apply(table, [5, 6, bad], x, output));
            Assert.Contains($"positions[2] = {bad}", e.Message);
            Assert.Contains("[0, 4096)", e.Message);
            Assert.All(output, v => Assert.Equal(123f, v));
            Assert.Throws<ArgumentOutOfRangeException>(() => RopeKernel.ApplyInPlace(table, [bad, 6, 7], x));
            Assert.Equal(xCopy, x);
        }
        RopeKernel.Apply(table, [], [], []); // zero tokens: nothing to do
        RopeKernel.Apply(table, [4095, 0, 17], [], []); // zero heads: positions still checked
        Assert.Throws<ArgumentOutOfRangeException>(() => RopeKernel.Apply(table, [4096], [], []));
        Assert.Throws<ArgumentNullException>(() => RopeKernel.Apply(null!, [], [], []));
    }

    [Fact]
    public void CpuBackend_ApplyRope_MatchesSpanApi_InPlaceToo()
    {
        var cpu = new CpuBackend();
        var table = new RopeTable(new RopeOptions { Interleaved = true, RotaryDim = 64 }, 96, 100);
        var rng = new Random(4);
        int[] pos = [0, 99, 42, 7, 7];
        float[] x = Inputs.Floats(rng, 5 * 3 * 96, 2f), expected = new float[x.Length];
        RopeKernel.Apply(table, pos, x, expected);
        using var pt = cpu.Upload(pos, 5);
        using var xt = cpu.Upload(x, 5, 3, 96);
        using var ot = cpu.Allocate<float>(5, 3, 96);
        cpu.ApplyRope(table, pt, xt, ot);
        Assert.Equal(expected, ot.ToArray());
        Assert.Equal(x, xt.ToArray());
        cpu.ApplyRope(table, pt, xt, xt);
        Assert.Equal(expected, xt.ToArray());

        using var wrong = cpu.Allocate<float>(5, 3, 95);
        Assert.Contains("output has 1425 elements; x has 1440", Assert.Throws<ArgumentException>(() => cpu.ApplyRope(table, pt, xt, wrong)).Message);
        using var badPos = cpu.Upload([0, 1, 100, 2, 3], 5);
        xt.CopyFrom(x);
        Assert.Contains("positions[2] = 100", Assert.Throws<ArgumentOutOfRangeException>(() => cpu.ApplyRope(table, badPos, xt, xt)).Message);
        Assert.Equal(x, xt.ToArray());
        using var gx = _gpu.Upload(x, 5, 3, 96);
        Assert.Throws<ArgumentException>(() => cpu.ApplyRope(table, pt, gx, ot));
    }

    /// <summary>Small cases for the CPU accelerator (it is slow): up to 12 tokens, head_dim up to 130.</summary>
    internal static Arbitrary<RopeCase> GpuCases =>
        Cases.Generator.Where(c => c.Tokens <= 12 && c.HeadDim <= 130 && c.Heads <= 3).ToArbitrary();

    private void CheckGpu(RopeCase c)
    {
        var rng = new Random(c.Seed);
        var table = new RopeTable(c.Options, c.HeadDim, c.MaxPositions);
        int[] pos = Positions(c, rng);
        int n = c.Tokens * c.Heads * c.HeadDim;
        float[] x = Inputs.Floats(rng, n, 4f, edges: true, edgeEvery: 16);
        float[] cpu = new float[n];
        RopeKernel.Apply(table, pos, x, cpu);
        using var pt = _gpu.Upload(pos, c.Tokens);
        using var xt = _gpu.Upload(x, c.Tokens, c.Heads, c.HeadDim);
        using var ot = _gpu.Allocate<float>(c.Tokens, c.Heads, c.HeadDim);
        _gpu.ApplyRope(table, pt, xt, ot);
        float[] gpu = ot.ToArray();
        Assert.Equal(x, xt.ToArray());
        // GPU vs CPU: both within 2⁻²²·(|x1| + |x2|) of the oracle (the GPU rounds both products; CUDA may fuse one), so
        // within twice that of each other. Non-finite pairs in the same class; pass-through bitwise.
        AssertMatchesReferenceScaled(x, cpu, gpu, c, table.RotaryDim);
        _gpu.ApplyRope(table, pt, xt, xt); // in place
        float[] inPlace = xt.ToArray();
        for (int k = 0; k < n; k++) Assert.True(SameBits(gpu[k], inPlace[k]), $"{c}: GPU in place element {k}: {inPlace[k]} vs {gpu[k]}");
    }

    private static void AssertMatchesReferenceScaled(float[] x, float[] cpu, float[] gpu, RopeCase c, int rotary)
    {
        for (int k = 0; k < x.Length; k++)
        {
            int d = k % c.HeadDim;
            if (d >= rotary)
            {
                Assert.True(SameBits(x[k], gpu[k]), $"{c}: GPU pass-through element {k}");
                continue;
            }
            float x1 = x[k], x2 = x[k - d + Partner(d, rotary, c.Interleaved)];
            if (!float.IsFinite(x1) || !float.IsFinite(x2))
            {
                Assert.True((float.IsNaN(cpu[k]) && float.IsNaN(gpu[k])) || cpu[k] == gpu[k], $"{c}: GPU element {k} non-finite pair: cpu {cpu[k]}, gpu {gpu[k]}");
                continue;
            }
            double tol = Math.ScaleB(Math.Abs((double)x1) + Math.Abs((double)x2), -21) + Math.ScaleB(1, -145);
            Assert.True(Math.Abs((double)cpu[k] - gpu[k]) <= tol, $"{c}: GPU element {k}: cpu {cpu[k]:R}, gpu {gpu[k]:R}");
        }
    }

    [Fact]
    public void GpuBackend_ApplyRope_MatchesCpuBackend()
    {
        Prop.ForAll(GpuCases, CheckGpu).Check(Config.QuickThrowOnFailure.WithMaxTest(25));
    }

    [Fact]
    public void GpuBackend_UploadsEachTableOnce_AndChecksBeforeWriting()
    {
        var table = new RopeTable(new RopeOptions { Theta = 500000 }, 64, 64);
        Assert.Null(_gpu.CachedRopeTable(table));
        float[] x = Inputs.Floats(new Random(8), 2 * 2 * 64);
        using var pt = _gpu.Upload([3, 63], 2);
        using var xt = _gpu.Upload(x, 2, 2, 64);
        using var ot = _gpu.Allocate<float>(2, 2, 64);
        _gpu.ApplyRope(table, pt, xt, ot);
        object? copy = _gpu.CachedRopeTable(table);
        Assert.NotNull(copy);
        _gpu.ApplyRope(table, pt, xt, ot);
        Assert.Same(copy, _gpu.CachedRopeTable(table)); // one upload, reused
        float[] first = ot.ToArray();

        using var badPos = _gpu.Upload([3, 64], 2);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => _gpu.ApplyRope(table, badPos, xt, xt));
        Assert.Contains("positions[1] = 64", e.Message);
        Assert.Equal(x, xt.ToArray());
        using var wrong = _gpu.Allocate<float>(2, 2, 63);
        Assert.Contains("x has 252 elements", Assert.Throws<ArgumentException>(() => _gpu.ApplyRope(table, pt, wrong, wrong)).Message);
        var cpu = new CpuBackend();
        using var cx = cpu.Upload(x, 2, 2, 64);
        Assert.Throws<ArgumentException>(() => _gpu.ApplyRope(table, pt, cx, ot));

        Assert.True(_gpu.ReleaseRopeTable(table));
        Assert.False(_gpu.ReleaseRopeTable(table));
        Assert.Null(_gpu.CachedRopeTable(table));
        _gpu.ApplyRope(table, pt, xt, ot); // uploaded again
        Assert.Equal(first, ot.ToArray());
        Assert.True(_gpu.ReleaseRopeTable(table));
    }
}
