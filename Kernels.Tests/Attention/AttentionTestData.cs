using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Quant.Reference;

namespace Kernels.Tests.Attention;

/// <summary>Random paged caches (pages of each sequence scattered through the pool) and the stated error bounds.</summary>
public static class AttentionTestData
{
    public sealed record CacheSpec(int[] SeqLens, int PageSize, int KvHeads, int HeadDim, DType DType, KvLayout Layout, KvScaleMode Mode, int Seed)
    {
        public override string ToString() =>
            $"lens=[{string.Join(',', SeqLens)}] page={PageSize} kvHeads={KvHeads} d={HeadDim} {DType}/{Mode} {Layout} seed={Seed}";
    }

    /// <summary>Builds a cache whose sequences own randomly permuted pages; unused pages hold NaN (float dtypes) so a kernel that
    /// reads a page it should not produces NaN.</summary>
    public static (PagedKvCache Cache, PageTable Table) Build(CacheSpec s, int extraPages = 3)
    {
        var rng = new Random(s.Seed);
        int[] pages = s.SeqLens.Select(l => (l + s.PageSize - 1) / s.PageSize).ToArray();
        int numPages = pages.Sum() + extraPages;
        float[] headScales = Enumerable.Range(0, s.KvHeads).Select(_ => 0.02f + (float)rng.NextDouble() * 0.02f).ToArray();
        var cache = s.Mode == KvScaleMode.PerHead
            ? new PagedKvCache(numPages, s.PageSize, s.KvHeads, s.HeadDim, s.DType, s.Layout, s.Mode, headScales, headScales)
            : new PagedKvCache(numPages, s.PageSize, s.KvHeads, s.HeadDim, s.DType, s.Layout, s.Mode);
        int[] perm = Enumerable.Range(0, numPages).OrderBy(_ => rng.Next()).ToArray();
        var indptr = new int[s.SeqLens.Length + 1];
        var last = new int[s.SeqLens.Length];
        for (int i = 0; i < s.SeqLens.Length; i++)
        {
            indptr[i + 1] = indptr[i] + pages[i];
            last[i] = pages[i] == 0 ? 0 : s.SeqLens[i] - (pages[i] - 1) * s.PageSize;
        }
        int[] indices = perm[..indptr[^1]];
        int row = s.KvHeads * s.HeadDim;
        var k = new float[row];
        var v = new float[row];
        for (int i = 0; i < s.SeqLens.Length; i++)
            for (int t = 0; t < s.SeqLens[i]; t++)
            {
                for (int j = 0; j < row; j++)
                {
                    k[j] = (float)(rng.NextDouble() * 2 - 1);
                    v[j] = (float)(rng.NextDouble() * 2 - 1);
                }
                cache.WriteToken(indices[indptr[i] + t / s.PageSize], t % s.PageSize, k, v);
            }
        if (s.DType is DType.F32 or DType.F16 or DType.BF16 or DType.F8E4M3 or DType.F8E5M2)
        {
            Array.Fill(k, float.NaN);
            foreach (int p in perm[indptr[^1]..])
                for (int slot = 0; slot < s.PageSize; slot++) cache.WriteToken(p, slot, k, k);
        }
        return (cache, new PageTable(indptr, indices, last, s.PageSize));
    }

    public static float[] Queries(Random rng, int rows, AttentionShape shape, float scale = 1f)
    {
        var q = new float[rows * shape.QoHeads * shape.HeadDim];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return q;
    }

    /// <summary>ε_s: the absolute fp32 logit error bound, <c>1.01·d·2⁻²⁴·sm_scale·max Σ|q·k|</c> plus one rounding of the largest logit.</summary>
    public static double LogitError(ReadOnlySpan<float> q, AttentionShape shape, float smScale, IEnumerable<float[]> keySets)
    {
        int d = shape.HeadDim;
        double qmax = 0;
        for (int i = 0; i < q.Length; i += d)
        {
            double s = 0;
            for (int c = 0; c < d; c++) s += Math.Abs(q[i + c]);
            qmax = Math.Max(qmax, s);
        }
        double kmax = 0;
        foreach (var ks in keySets)
            foreach (float x in ks) kmax = Math.Max(kmax, Math.Abs(x));
        double mag = smScale * qmax * kmax; // ≥ sm_scale·Σ|q·k|
        return (1.01 * d + 2) * Math.ScaleB(1.0, -24) * mag + Math.ScaleB(1.0, -24);
    }

    /// <summary>The factor on <see cref="LogitError"/> under in-kernel RoPE (<see cref="AttentionOptions.Rope"/>; 1 without):
    /// rotation can grow Σ|q| and max|k| by √2 each and adds two fp32 roundings per rotated element (≤ 2⁻²² of the pair's
    /// magnitude), which stays within 2.5× the unrotated bound (its d·2⁻²⁴ term is ≥ 34·2⁻²⁴ for d ≥ 32).</summary>
    public static double RopeFactor(AttentionOptions options) => options.Rope is null ? 1 : 2.5;

    /// <summary>A short description of the options' in-kernel RoPE, for failure messages.</summary>
    public static string RopeText(AttentionOptions options) =>
        options.Rope is { } r ? $" rope={(r.Interleaved ? "gptj" : "neox")}/{r.RotaryDim}" : "";

    /// <summary>The fp32 error of the ALiBi bias in a logit: <c>slope·distance</c> is rounded once and added once, each within
    /// 2⁻²⁴ of the bias's magnitude (the logit's own part is in <see cref="LogitError"/>); 0 without ALiBi.</summary>
    public static double AlibiError(AttentionOptions options, int maxKvLen) =>
        options.AlibiSlopes is { Count: > 0 } a ? 2.0 * a.Max(Math.Abs) * (maxKvLen + 1) * Math.ScaleB(1.0, -24) : 0;

    /// <summary>Checks output and lse against the reference under the stated bound.</summary>
    public static void AssertClose(float[] expected, float[] actual, double[] magnitude, float[] lseExpected, float[] lseActual,
        double logitError, int maxKvLen, string what)
    {
        double rel = 2 * logitError + (maxKvLen + 16) * Math.ScaleB(1.0, -23);
        var r = ResultComparer.Compare(expected, actual, magnitude, rel, 1e-30);
        Assert.True(r.Passed, $"output {what}: {r} (relTol {rel:E2})");
        for (int i = 0; i < lseExpected.Length; i++)
        {
            float e = lseExpected[i], a = lseActual[i];
            if (!float.IsFinite(e))
            {
                Assert.True(float.IsNaN(e) ? float.IsNaN(a) : e == a, $"lse[{i}] {what}: expected {e}, got {a}");
                continue;
            }
            double bound = logitError + (maxKvLen + 16) * Math.ScaleB(1.0, -23) + Math.ScaleB(1.0, -23) * Math.Abs(e);
            Assert.True(Math.Abs(e - a) <= bound, $"lse[{i}] {what}: expected {e:R}, got {a:R}, bound {bound:E2}");
        }
    }

    public static IEnumerable<float[]> GatherKeys(PagedKvCache cache, PageTable table)
    {
        for (int b = 0; b < table.BatchSize; b++) yield return AttentionReference.Gather(cache, table, b).Keys;
    }

    /// <summary>A token's K and V rows of <paramref name="n"/> values uniform in [0, 1).</summary>
    public static (float[] K, float[] V) RandomRows(int seed, int n)
    {
        var rng = new Random(seed);
        var k = new float[n];
        var v = new float[n];
        for (int j = 0; j < n; j++)
        {
            k[j] = (float)rng.NextDouble();
            v[j] = (float)rng.NextDouble();
        }
        return (k, v);
    }

    /// <summary>The keys of <see cref="GatherKeys"/> with non-finite elements as 0: the error bound's scale for the finite part.</summary>
    public static IEnumerable<float[]> FiniteKeys(PagedKvCache cache, PageTable table) =>
        GatherKeys(cache, table).Select(ks => ks.Select(x => float.IsFinite(x) ? x : 0f).ToArray()).ToArray();

    /// <summary>Writes <paramref name="count"/> non-finite values (+Inf, −Inf, NaN, or 1e6, which overflows fp16 and bf16 to
    /// +Inf) into random elements of random live tokens' K or V rows of a float-format cache; returns what it did.</summary>
    public static string InjectNonFinite(PagedKvCache cache, PageTable table, Random rng, int count)
    {
        int hk = cache.KvHeads, d = cache.HeadDim;
        var live = Enumerable.Range(0, table.BatchSize).SelectMany(b => Enumerable.Range(0, table.KvLength(b)).Select(t => (b, t))).ToArray();
        if (live.Length == 0) return "none";
        float[] values = [float.PositiveInfinity, float.NegativeInfinity, float.NaN, 1e6f];
        var k = new float[hk * d];
        var v = new float[hk * d];
        var what = new List<string>();
        for (int n = 0; n < count; n++)
        {
            var (b, t) = live[rng.Next(live.Length)];
            int page = table.Indices[table.Indptr[b] + t / table.PageSize], slot = t % table.PageSize;
            for (int h = 0; h < hk; h++)
            {
                cache.ReadKey(page, slot, h, k.AsSpan(h * d, d));
                cache.ReadValue(page, slot, h, v.AsSpan(h * d, d));
            }
            bool inK = rng.Next(2) == 0;
            int e = rng.Next(hk * d);
            float x = values[rng.Next(values.Length)];
            (inK ? k : v)[e] = x;
            cache.WriteToken(page, slot, k, v);
            what.Add($"{(inK ? 'K' : 'V')}[seq {b}, token {t}, head {e / d}, dim {e % d}] = {x}");
        }
        return string.Join("; ", what);
    }
}
