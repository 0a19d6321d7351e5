using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Attention;
using Kernels.Quant.Reference;

namespace Kernels.Probe.Checks;

/// <summary>PagedDecode and PagedPrefill's public dispatchers (fp16, fp8 E4M3, int4 and int8 caches, scattered pages, split-KV; int8 queries;
/// in-kernel RoPE) against AttentionReference.</summary>
public sealed class AttentionCheck : IProbeCheck
{
    /// <inheritdoc/>
    public string Name => "paged-attention";

    /// <inheritdoc/>
    public string? Run()
    {
        foreach (var (dtype, mode) in new[] { (DType.F16, KvScaleMode.None), (DType.F8E4M3, KvScaleMode.None), (DType.I4, KvScaleMode.None), (DType.I8, KvScaleMode.PerToken) })
        {
            var rng = new Random(42);
            int[] lens = [37, 0, 5];
            const int page = 4, kvHeads = 2, d = 64;
            var shape = new AttentionShape(8, kvHeads, d);
            int pages = lens.Sum(l => (l + page - 1) / page);
            var cache = new PagedKvCache(pages + 2, page, kvHeads, d, dtype, KvLayout.Nhd, mode);
            int[] perm = Enumerable.Range(0, pages + 2).OrderBy(_ => rng.Next()).ToArray();
            var indptr = new int[lens.Length + 1];
            var last = new int[lens.Length];
            var row = new float[kvHeads * d];
            for (int b = 0; b < lens.Length; b++)
            {
                int n = (lens[b] + page - 1) / page;
                indptr[b + 1] = indptr[b] + n;
                last[b] = n == 0 ? 0 : lens[b] - (n - 1) * page;
                for (int t = 0; t < lens[b]; t++)
                {
                    for (int i = 0; i < row.Length; i++) row[i] = (float)(rng.NextDouble() * 2 - 1);
                    cache.WriteToken(perm[indptr[b] + t / page], t % page, row, row);
                }
            }
            var table = new PageTable(indptr, perm[..indptr[^1]], last, page);
            var q = ProbeData.Floats(rng, lens.Length * shape.QoHeads * d);
            float[] e = new float[q.Length], a = new float[q.Length], le = new float[lens.Length * shape.QoHeads], la = new float[le.Length];
            double[] mag = new double[q.Length];
            AttentionReference.Decode(q, cache, table, shape, AttentionOptions.Default, e, le, mag);
            var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), fixedChunkPages: 3);
            PagedDecode.Run(plan, q, cache, a, la);
            // Logits are O(1) here; the bound is the stated one with a generous ε_s.
            var r = ResultComparer.Compare(e, a, mag, 1e-5, 1e-30);
            if (!r.Passed) return $"decode {dtype} seed=42: {r}";
            for (int i = 0; i < le.Length; i++)
                if (!(float.IsNegativeInfinity(le[i]) ? float.IsNegativeInfinity(la[i]) : Math.Abs(le[i] - la[i]) <= 1e-5 * (1 + Math.Abs(le[i]))))
                    return $"decode {dtype} seed=42: lse[{i}] expected {le[i]}, got {la[i]}";

            int[] qo = [0, 6, 6, 9];
            var pq = ProbeData.Floats(rng, 9 * shape.QoHeads * d);
            float[] pe = new float[pq.Length], pa = new float[pq.Length];
            double[] pmag = new double[pq.Length];
            AttentionReference.Prefill(qo, pq, cache, table, shape, AttentionOptions.Default, pe, default, pmag);
            PagedPrefill.Run(PrefillPlanner.Plan(qo, table, shape, cache.NumPages), pq, cache, pa, default);
            r = ResultComparer.Compare(pe, pa, pmag, 1e-5, 1e-30);
            if (!r.Passed) return $"prefill {dtype} seed=42: {r}";

            // The same prefill with a random custom mask, ALiBi and a window.
            var mask = Kernels.Attention.Masks.CustomMask.Create(qo, lens, (_, _, _) => rng.Next(3) > 0);
            var masked = new AttentionOptions { AlibiSlopes = AttentionOptions.DefaultAlibiSlopes(shape.QoHeads), WindowLeft = 20 };
            AttentionReference.Prefill(qo, pq, cache, table, shape, masked, pe, default, pmag, mask);
            PagedPrefill.Run(PrefillPlanner.Plan(qo, table, shape, cache.NumPages, masked, mask), pq, cache, pa, default);
            r = ResultComparer.Compare(pe, pa, pmag, 1e-5, 1e-30);
            if (!r.Passed) return $"prefill {dtype} with a custom mask, ALiBi and a window, seed=42: {r}";
        }
        return QuantizedQueries() ?? InKernelRope();
    }

    /// <summary>Decode with in-kernel RoPE (<see cref="AttentionOptions.Rope"/>, NeoX pairs, keys un-rotated in the cache) on
    /// an fp16 cache, 6 query heads per kv head (one block of four and two single queries), against the oracle.</summary>
    private static string? InKernelRope()
    {
        var opts = new AttentionOptions { Rope = new Kernels.Attention.Positional.RopeTable(new Kernels.Attention.Positional.RopeOptions(), 128, 45) };
        return OneSequenceDecode(44, DType.F16, KvScaleMode.None, qoHeads: 12, len: 45, opts, "with in-kernel RoPE");
    }

    /// <summary>Decode with <see cref="AttentionOptions.QuantizedQueryDot"/> on int4 and int8 caches at head_dim 128 (the
    /// width the integer dot products need; AVX2 takes them by AVX-VNNI where present, else <c>vpmaddubsw</c>/<c>vpmaddwd</c>),
    /// against the oracle, which quantizes the queries the same way.</summary>
    private static string? QuantizedQueries()
    {
        var opts = new AttentionOptions { QuantizedQueryDot = true };
        return OneSequenceDecode(43, DType.I4, KvScaleMode.None, qoHeads: 8, len: 70, opts, "with int8 queries")
            ?? OneSequenceDecode(43, DType.I8, KvScaleMode.PerToken, qoHeads: 8, len: 70, opts, "with int8 queries");
    }

    /// <summary>One sequence of <paramref name="len"/> random tokens in scattered 16-token pages (2 kv heads, head_dim 128),
    /// decoded by the public dispatcher and by the oracle with <paramref name="opts"/>; null when they agree.</summary>
    private static string? OneSequenceDecode(int seed, DType dtype, KvScaleMode mode, int qoHeads, int len, AttentionOptions opts, string what)
    {
        var rng = new Random(seed);
        const int page = 16, kvHeads = 2, d = 128;
        var shape = new AttentionShape(qoHeads, kvHeads, d);
        int pages = (len + page - 1) / page;
        var cache = new PagedKvCache(pages + 1, page, kvHeads, d, dtype, KvLayout.Nhd, mode);
        int[] perm = Enumerable.Range(0, pages + 1).OrderBy(_ => rng.Next()).ToArray();
        var row = new float[kvHeads * d];
        for (int t = 0; t < len; t++)
        {
            for (int i = 0; i < row.Length; i++) row[i] = (float)(rng.NextDouble() * 2 - 1);
            cache.WriteToken(perm[t / page], t % page, row, row);
        }
        var table = new PageTable([0, pages], perm[..pages], [len - (pages - 1) * page], page);
        var q = ProbeData.Floats(rng, shape.QoHeads * d);
        float[] e = new float[q.Length], a = new float[q.Length];
        double[] mag = new double[q.Length];
        AttentionReference.Decode(q, cache, table, shape, opts, e, default, mag);
        PagedDecode.Run(DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace(), opts), q, cache, a, default);
        var r = ResultComparer.Compare(e, a, mag, 1e-5, 1e-30);
        return r.Passed ? null : $"decode {dtype} {what}, seed={seed}: {r}";
    }
}
