using System.Runtime.Intrinsics;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Attention;
using Kernels.Tests.TestUtilities;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

/// <summary>The cases the register-tiled kernels (AVX-512, AVX2) treat specially: fp16 rows read by a shift (exact for finite values,
/// Inf/NaN-aware on flagged pages), queries too large to pre-scale (generic fallback), and its inline exponential.</summary>
public class PagedAttentionTiledTests
{
    private static (PagedKvCache Cache, PageTable Table) Cache(int len, int kvHeads, int d, Func<Random, float> value, int seed, DType dtype = DType.F16)
    {
        var rng = new Random(seed);
        int pages = (len + 15) / 16;
        var cache = new PagedKvCache(pages + 2, 16, kvHeads, d, dtype);
        int[] ids = Enumerable.Range(0, pages + 2).OrderBy(_ => rng.Next()).Take(pages).ToArray();
        var k = new float[kvHeads * d];
        var v = new float[k.Length];
        for (int t = 0; t < len; t++)
        {
            for (int j = 0; j < k.Length; j++)
            {
                k[j] = value(rng);
                v[j] = value(rng);
            }
            cache.WriteToken(ids[t / 16], t % 16, k, v);
        }
        return (cache, new PageTable([0, pages], ids, [len - (pages - 1) * 16], 16));
    }

    private static void CheckAgainstReference(PagedKvCache cache, PageTable table, AttentionShape shape, float[] q, string what,
        IEnumerable<float[]>? boundKeys = null)
    {
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), AttentionOptions.Default, fixedChunkPages: 2);
        float[] e = new float[q.Length], le = new float[shape.QoHeads];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
        double eps = LogitError(q, shape, plan.SmScale, boundKeys ?? GatherKeys(cache, table));
        foreach (var isa in IsaMatrix.All)
        {
            if (IsaMatrix.OptionsOrSkip(isa) is not { } options) continue;
            float[] a = new float[q.Length], la = new float[le.Length];
            PagedDecode.Run(plan, q, cache, a, la, options);
            AssertClose(e, a, mag, le, la, eps, table.KvLength(0), $"{what} {isa}");
        }
    }

    [Theory]
    [InlineData(KvLayout.Nhd, 1, 16)]
    [InlineData(KvLayout.Nhd, 16, 1)]
    [InlineData(KvLayout.Nhd, 24, 8)]
    [InlineData(KvLayout.Hnd, 1, 16)]
    [InlineData(KvLayout.Hnd, 1, 1)]
    [InlineData(KvLayout.Hnd, 16, 8)]
    public void PageCapacity_IsThePageSize_InEitherLayout(KvLayout layout, int pageSize, int kvHeads)
    {
        // The vector scale reads take a tile's 16 rows only when the page holds them all; HND with one-token pages has token
        // and head strides of 1, so a capacity derived from the strides alone would let them read past the page.
        using var cache = new PagedKvCache(2, pageSize, kvHeads, 64, DType.I8, layout, KvScaleMode.PerToken);
        var s = new PagedAttentionKernel.State
        {
            PageStride = cache.PageStride, TokenStride = cache.TokenStride, HeadStride = cache.HeadStride, QoHeads = 4 * kvHeads, Group = 4,
        };
        Assert.Equal(pageSize, PagedAttentionTiled<Tile128>.PageCapacity(in s));
    }

    [Fact]
    public void TileScales_MatchScalarReads()
    {
        // The vector read of a tile's per-token values against the scalar rule, for every head count, layout and live range;
        // layouts a width has no path for return false and leave the destination alone.
        if (Tile512.IsSupported) TileScales<Tile512>(heads => heads is 2 or 4 or 8); // one head: a token stride of 1, as HND
        if (Tile256.IsSupported) TileScales<Tile256>(heads => heads == 8);
        TileScales<Tile128>(_ => false);
    }

    private static unsafe void TileScales<TTile>(Func<int, bool> nhdPath) where TTile : struct, IAttentionTile
    {
        var rng = new Random(4);
        foreach (int heads in new[] { 1, 2, 3, 4, 8, 16 })
            foreach (bool hnd in new[] { false, true })
                foreach (bool toInt in new[] { false, true })
                    for (int trial = 0; trial < 20; trial++)
                    {
                        int tl = rng.Next(0, 17), th = rng.Next(tl, 17);
                        long tokenStride = hnd ? 1 : heads, headStride = hnd ? 16 + rng.Next(0, 5) : 1;
                        var src = new float[(int)(15 * tokenStride + (heads - 1) * headStride + 1)];
                        for (int i = 0; i < src.Length; i++) src[i] = toInt ? rng.Next(0, 16) : (float)rng.NextDouble() * 4 - 2;
                        float mul = toInt ? 1f : 0.125f + (float)rng.NextDouble();
                        var dst = new float[heads * 16];
                        dst.AsSpan().Fill(-7f);
                        bool done;
                        fixed (float* ps = src, pd = dst) done = TTile.TileScales(ps, tokenStride, headStride, heads, mul, tl, th, pd, toInt);
                        string what = $"{typeof(TTile).Name} heads={heads} hnd={hnd} toInt={toInt} live=[{tl},{th})";
                        Assert.True(done == (typeof(TTile) != typeof(Tile128) && (hnd || heads == 1 || nhdPath(heads))), what);
                        for (int kk = 0; kk < heads; kk++)
                            for (int t = 0; t < 16; t++)
                            {
                                float want = t >= tl && t < th ? src[t * tokenStride + kk * headStride] * mul : 0f;
                                float got = dst[kk * 16 + t];
                                if (!done) Assert.Equal(-7f, got);
                                else if (toInt) Assert.Equal((int)want, BitConverter.SingleToInt32Bits(got));
                                else Assert.Equal(want, got);
                            }
                    }
    }

    [Fact]
    public void F16_SubnormalKeysAndValues_AreExact()
    {
        // fp16 subnormals (< 6.1e-5) become fp32 subnormals after the shift; exact, so the usual bound holds.
        var (cache, table) = Cache(70, 2, 64, r => (float)(r.NextDouble() * 2 - 1) * 3e-5f, 1);
        var shape = new AttentionShape(8, 2, 64);
        CheckAgainstReference(cache, table, shape, Queries(new Random(2), 1, shape, 4f), "subnormal");
    }

    [Fact]
    public void F16_InfAndNaNValues_PropagateAsInReference()
    {
        var (cache, table) = Cache(40, 2, 64, r => (float)(r.NextDouble() * 2 - 1), 3);
        int page = table.Indices[1];
        Assert.Equal(0, cache.NonFinitePageArray[page]);
        var (k, v) = RandomRows(4, 128);
        v[3] = float.PositiveInfinity;  // head 0, dim 3
        v[70] = 1e6f;                   // head 1, dim 6: overflows fp16 to +Inf
        v[75] = float.NaN;              // head 1, dim 11
        cache.WriteToken(page, 5, k, v); // token 21
        Assert.Equal(1, cache.NonFinitePageArray[page]);
        var shape = new AttentionShape(8, 2, 64);
        CheckAgainstReference(cache, table, shape, Queries(new Random(5), 1, shape), "non-finite V");

        // A copied page carries the flag.
        cache.CopyPage(page, table.Indices[0]);
        Assert.Equal(1, cache.NonFinitePageArray[table.Indices[0]]);
    }

    [Theory]
    [InlineData(40, 16)] // the first tile's logits are all −∞ (an fp16 overflow in K), the rest finite: finite output
    [InlineData(20, 20)] // every logit −∞: output 0, lse −∞, like a row with no key
    public void F16_MinusInfinityLogits_WeighZero(int len, int infTokens)
    {
        // K[dim 0] = 1e6 overflows fp16 to +Inf and every query has q[0] < 0, so those tokens' logits are −∞. Before the
        // shift of SoftmaxExp.Shift, a first tile of −∞ logits gave e^(−∞ + ∞) = NaN on the tiled paths.
        var (cache, table) = Cache(len, 2, 64, r => (float)(r.NextDouble() * 2 - 1), 8);
        var k = new float[128];
        var v = new float[128];
        var rng = new Random(9);
        for (int t = 0; t < infTokens; t++)
        {
            for (int j = 0; j < 128; j++)
            {
                k[j] = (float)(rng.NextDouble() * 2 - 1);
                v[j] = (float)(rng.NextDouble() * 2 - 1);
            }
            k[0] = k[64] = 1e6f;
            cache.WriteToken(table.Indices[t / 16], t % 16, k, v);
        }
        var shape = new AttentionShape(8, 2, 64);
        var q = Queries(new Random(10), 1, shape);
        for (int h = 0; h < 8; h++) q[h * 64] = -0.5f - h * 0.1f;
        float[] e = new float[q.Length], le = new float[8];
        AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, default);
        if (infTokens == len) Assert.All(le, x => Assert.True(float.IsNegativeInfinity(x)));
        else Assert.All(e, x => Assert.True(float.IsFinite(x)));
        var finiteKeys = FiniteKeys(cache, table);
        CheckAgainstReference(cache, table, shape, q, $"−∞ logits ({infTokens} of {len})", finiteKeys);
    }

    [Fact]
    public void F16_QueriesBeyondPrescaleRange_ReadRowsAtTrueValueAndMatch()
    {
        // |q| ≥ 2^15 cannot be pre-scaled by 2^112; the item reads fp16 rows at their true value (KvF16Exact).
        var (cache, table) = Cache(50, 2, 128, r => (float)(r.NextDouble() * 2 - 1), 6);
        var shape = new AttentionShape(8, 2, 128);
        var q = Queries(new Random(7), 1, shape, 1f);
        q[0] = 40000f;
        CheckAgainstReference(cache, table, shape, q, "large q");
    }

    [Theory]
    [InlineData(DType.F8E4M3, 0.004f, 300f)]   // subnormals below 2^-6; queries past 2^8 cannot be pre-scaled by 2^120
    [InlineData(DType.F8E5M2, 3e-5f, 40000f)]  // subnormals below 2^-14; queries past 2^15 cannot be pre-scaled by 2^112
    public void F8_SubnormalsLargeValuesNaNAndLargeQueries_MatchReference(DType dtype, float tiny, float largeQ)
    {
        // fp8 rows are widened by a shift (E5M2 ×2^-112, E4M3 ×2^-120): exact for subnormals and for the largest codes.
        var (cache, table) = Cache(70, 2, 64, r => (float)(r.NextDouble() * 2 - 1) * tiny, 11, dtype);
        var shape = new AttentionShape(8, 2, 64);
        CheckAgainstReference(cache, table, shape, Queries(new Random(12), 1, shape, 4f), $"{dtype} subnormal");

        float max = dtype == DType.F8E4M3 ? Float8.E4M3MaxValue : Float8.E5M2MaxValue;
        (cache, table) = Cache(40, 2, 64, r => (float)(r.NextDouble() * 2 - 1) * max * 1.1f, 13, dtype); // saturates past max
        CheckAgainstReference(cache, table, shape, Queries(new Random(14), 1, shape, 1f / max), $"{dtype} large values");

        // NaN in K and V on one page: the page is flagged and read by the NaN-aware widening.
        (cache, table) = Cache(40, 2, 64, r => (float)(r.NextDouble() * 2 - 1), 15, dtype);
        int page = table.Indices[1];
        Assert.Equal(0, cache.NonFinitePageArray[page]);
        var (k, v) = RandomRows(16, 128);
        v[3] = float.NaN;              // head 0, dim 3
        k[64 + 9] = float.NaN;         // head 1, dim 9: every head-1 query's logit is NaN
        v[70] = float.PositiveInfinity; // saturates to the largest finite value
        cache.WriteToken(page, 5, k, v);
        Assert.Equal(1, cache.NonFinitePageArray[page]);
        CheckAgainstReference(cache, table, shape, Queries(new Random(17), 1, shape), $"{dtype} NaN", FiniteKeys(cache, table));

        // Queries too large to pre-scale: the item reads the rows at their true value.
        (cache, table) = Cache(50, 2, 128, r => (float)(r.NextDouble() * 2 - 1), 18, dtype);
        shape = new AttentionShape(8, 2, 128);
        var q = Queries(new Random(19), 1, shape, 1f);
        q[0] = largeQ;
        CheckAgainstReference(cache, table, shape, q, $"{dtype} large q");
    }

    [Theory]
    [InlineData(DType.F8E4M3)]
    [InlineData(DType.F8E5M2)]
    public void F8_EveryFiniteCode_InKeysAndValues_MatchesReference(DType dtype)
    {
        // Every finite code of the format once in K and once in V (their decoded values round-trip through WriteToken
        // exactly), spread over the rows of 4 tokens, so each code goes through every ISA path's widening.
        var codes = Enumerable.Range(0, 256).Select(c => dtype == DType.F8E4M3 ? Float8.E4M3ToSingle((byte)c) : Float8.E5M2ToSingle((byte)c))
            .Where(float.IsFinite).ToArray();
        const int d = 64, tokens = 4;
        var cache = new PagedKvCache(2, 16, 1, d, dtype);
        var k = new float[d];
        var v = new float[d];
        for (int t = 0; t < tokens; t++)
        {
            for (int i = 0; i < d; i++)
            {
                k[i] = codes[(t * d + i) % codes.Length];
                v[i] = codes[(t * d + i + 37) % codes.Length];
            }
            cache.WriteToken(1, t, k, v);
            cache.ReadKey(1, t, 0, v); // read back: exactly the codes' values
            for (int i = 0; i < d; i++) Assert.Equal(codes[(t * d + i) % codes.Length], v[i]);
        }
        var table = new PageTable([0, 1], [1], [tokens], 16);
        var shape = new AttentionShape(4, 1, d);
        float max = dtype == DType.F8E4M3 ? Float8.E4M3MaxValue : Float8.E5M2MaxValue;
        CheckAgainstReference(cache, table, shape, Queries(new Random(23), 1, shape, 1f / max), $"{dtype} every code");
    }

    [Theory]
    [InlineData(DType.F8E4M3, 1000f)] // scale · 2^120 would overflow fp32: the item reads rows at their true value
    [InlineData(DType.F8E5M2, 1e5f)]  // scale · 2^112 would overflow
    [InlineData(DType.F8E4M3, 0.01f)]
    public void F8_PerHeadScales_MatchReference(DType dtype, float scale)
    {
        var rng = new Random(21);
        float[] scales = [scale, 0.5f];
        var cache = new PagedKvCache(6, 16, 2, 64, dtype, KvLayout.Nhd, KvScaleMode.PerHead, scales, scales);
        int[] ids = [4, 1, 5, 0];
        var k = new float[128];
        var v = new float[128];
        for (int t = 0; t < 60; t++)
        {
            for (int j = 0; j < 128; j++)
            {
                k[j] = (float)(rng.NextDouble() * 2 - 1) * scales[j / 64] * 100;
                v[j] = (float)(rng.NextDouble() * 2 - 1) * scales[j / 64] * 100;
            }
            cache.WriteToken(ids[t / 16], t % 16, k, v);
        }
        var table = new PageTable([0, 4], ids, [12], 16);
        var shape = new AttentionShape(8, 2, 64);
        CheckAgainstReference(cache, table, shape, Queries(new Random(22), 1, shape, 1f / (scale * 100)), $"{dtype} per-head scale {scale}");
    }

    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(128)]
    public void SoftmaxExp_MatchesMathExpWithin2Ulp(int width)
    {
        if (width == 512 && !System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return;
        var rng = new Random(8);
        var xs = new List<float> { 0f, -0f, -1e-30f, -1f, -0.34657359f, -0.6931472f, -87.33f, -87.3365f, -87.34f, -88f, -100f, -1e30f, float.NegativeInfinity, float.NaN };
        for (int i = 0; i < 20000; i++) xs.Add(-(float)(rng.NextDouble() * 90));
        while (xs.Count % 16 != 0) xs.Add(-1f);
        var e = new float[16];
        for (int i = 0; i < xs.Count; i += 16)
        {
            var chunk = xs.GetRange(i, 16).ToArray();
            switch (width)
            {
                case 512: SoftmaxExp.Exp(System.Runtime.Intrinsics.Vector512.Create(chunk)).CopyTo(e); break;
                case 256:
                    SoftmaxExp.Exp(System.Runtime.Intrinsics.Vector256.Create(chunk[..8])).CopyTo(e);
                    SoftmaxExp.Exp(System.Runtime.Intrinsics.Vector256.Create(chunk[8..])).CopyTo(e, 8);
                    break;
                default:
                    for (int j = 0; j < 16; j += 4) SoftmaxExp.Exp(System.Runtime.Intrinsics.Vector128.Create(chunk[j..(j + 4)])).CopyTo(e, j);
                    break;
            }
            for (int j = 0; j < 16; j++)
            {
                float xi = chunk[j], ei = e[j];
                if (float.IsNaN(xi))
                {
                    Assert.True(float.IsNaN(ei), $"exp(NaN) = {ei}");
                    continue;
                }
                if (xi < -87.33654f)
                {
                    Assert.Equal(0f, ei);
                    continue;
                }
                double want = Math.Exp(xi);
                Assert.True(Math.Abs(ei - want) <= 2 * Math.ScaleB(1.0, -23) * want, $"exp({xi:R}) = {ei:R}, want {want:R} (width {width})");
            }
        }
    }

    [Fact]
    public void QuantizedQueryDot_AgainstUnquantizedQueries_WithinStatedBound()
    {
        // |Δlogit| ≤ sm_scale·(s_q/2)·Σ|k| with s_q = max|q|/127; then |Δo| ≤ 2·max|Δlogit|·max|v| (as in the KV quantization test).
        foreach (var dtype in new[] { DType.I4, DType.I8 })
        {
            var spec = new CacheSpec([300, 77], 16, 2, 128, dtype, KvLayout.Nhd, dtype == DType.I8 ? KvScaleMode.PerToken : KvScaleMode.None, 21);
            var (cache, table) = Build(spec);
            var shape = new AttentionShape(8, 2, 128);
            var q = Queries(new Random(22), 2, shape, 2f);
            var opts = new AttentionOptions { QuantizedQueryDot = true };
            var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts);
            float[] exact = new float[q.Length], got = new float[q.Length];
            AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, exact, default);
            PagedDecode.Run(plan, q, cache, got, default);
            double qmax = q.Max(Math.Abs), kAbsSum = 0, vmax = 0;
            foreach (var (keys, values) in Enumerable.Range(0, 2).Select(b => AttentionReference.Gather(cache, table, b)))
            {
                for (int r = 0; r < keys.Length; r += 128) kAbsSum = Math.Max(kAbsSum, keys.AsSpan(r, 128).ToArray().Sum(x => Math.Abs((double)x)));
                vmax = Math.Max(vmax, values.Max(x => Math.Abs((double)x)));
            }
            double dLogit = plan.SmScale * (qmax / 127 / 2) * kAbsSum;
            double bound = 2 * dLogit * vmax + 1e-5;
            double worst = exact.Zip(got, (e, a) => Math.Abs(e - (double)a)).Max();
            Assert.True(worst <= bound, $"{dtype}: max |Δo| {worst:E3} > bound {bound:E3}");
            Assert.True(worst > 0, $"{dtype}: quantized queries changed nothing (option not applied?)");
        }
    }

    [Fact]
    public void QueryQuantization_RoundsHalfEvenAndHandlesZeroAndNonFinite()
    {
        Span<sbyte> codes = stackalloc sbyte[4];
        Assert.Equal(1f / 127f, QueryQuantization.Quantize([1f, -1f, 0.5f / 127f * 1f, 1.5f / 127f], codes));
        Assert.Equal(new sbyte[] { 127, -127, 0, 2 }, codes.ToArray()); // 0.5 → 0 and 1.5 → 2: ties to even
        Assert.Equal(0f, QueryQuantization.Quantize([0f, -0f, 0f, 0f], codes));
        Assert.Equal(new sbyte[4], codes.ToArray());
        Assert.True(float.IsNaN(QueryQuantization.Quantize([1f, float.NaN, 0f, 0f], codes)));
        Assert.True(float.IsNaN(QueryQuantization.Quantize([1f, float.PositiveInfinity, 0f, 0f], codes)));
    }

    [Fact]
    public void QuantizeQuery_EachWidth_IsBitIdenticalToReference()
    {
        if (Tile512.IsSupported) QuantizeQuery<Tile512>();
        if (Tile256.IsSupported) QuantizeQuery<Tile256>();
        QuantizeQuery<Tile128>();
    }

    private static unsafe void QuantizeQuery<TTile>() where TTile : struct, IAttentionTile
    {
        var rng = new Random(31);
        const int d = 128;
        float* q = stackalloc float[d], deq = stackalloc float[d];
        sbyte* codes = stackalloc sbyte[d];
        short* c16 = stackalloc short[d];
        var want = new sbyte[d];
        for (int trial = 0; trial < 500; trial++)
        {
            float amax = (float)Math.Pow(10, rng.Next(-30, 30));
            for (int i = 0; i < d; i++) q[i] = (float)(rng.NextDouble() * 2 - 1) * amax;
            if (trial % 5 == 1)
                for (int i = 0; i < d; i++) q[i] = (rng.Next(-254, 255) / 2f) * (amax / 127f); // exact ties q/s = k + 1/2
            if (trial == 2) q[7] = float.NaN;
            if (trial == 3) q[9] = float.NegativeInfinity;
            if (trial == 4) new Span<float>(q, d).Clear();
            float sw = QueryQuantization.Quantize(new ReadOnlySpan<float>(q, d), want);
            float sg = TTile.QuantizeQuery(q, d, codes, c16, deq, out int sum);
            Assert.Equal(BitConverter.SingleToInt32Bits(sw), BitConverter.SingleToInt32Bits(sg));
            Assert.Equal(want, new ReadOnlySpan<sbyte>(codes, d).ToArray());
            Assert.Equal(want.Sum(x => (int)x), sum);
            for (int i = 0; i < d; i++)
            {
                Assert.Equal(want[i], c16[i]);
                Assert.Equal(BitConverter.SingleToInt32Bits(want[i] * sw), BitConverter.SingleToInt32Bits(deq[i]));
            }
        }
    }

    [Fact]
    public void Cache_PoolBeyond2GB_IsAddressedAndDisposed()
    {
        // 65,537 pages × 16 slots × 8 heads × 256 B = 2^31 + 32 KiB per pool: page 65,536 starts past 2^31 bytes.
        using var cache = new PagedKvCache(65_537, 16, 8, 128, DType.F16);
        Assert.True(cache.PoolBytes > int.MaxValue);
        int last = cache.NumPages - 1;
        var rng = new Random(41);
        var k = new float[8 * 128];
        var v = new float[k.Length];
        for (int slot = 0; slot < 16; slot++)
        {
            for (int j = 0; j < k.Length; j++)
            {
                k[j] = (float)(rng.NextDouble() * 2 - 1);
                v[j] = (float)(rng.NextDouble() * 2 - 1);
            }
            cache.WriteToken(last, slot, k, v);
        }
        Assert.Equal((Half)k[0], System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(cache.GetPageKeys(last))[15 * 8 * 128]);
        var table = new PageTable([0, 2], [0, last], [16], 16); // page 0 (zeros) then the last page
        var shape = new AttentionShape(32, 8, 128);
        CheckAgainstReference(cache, table, shape, Queries(new Random(42), 1, shape), "2 GB+ pool");
        cache.Dispose();
        Assert.Throws<ObjectDisposedException>(() => cache.GetPageKeys(0));
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace());
        Assert.Throws<ObjectDisposedException>(() => PagedDecode.Run(plan, new float[32 * 128], cache, new float[32 * 128], default));
    }
}
