using BenchmarkDotNet.Attributes;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Reference;
using Kernels.Cpu.Attention;

namespace Kernels.Perf.Bdn;

/// <summary>BenchmarkDotNet: paged decode (32 q heads, 8 kv heads, d = 128, page 16, scattered pages) per KV dtype.
/// Run: <c>-- bdn --filter *AttentionBenchmarks*</c>.</summary>
[MemoryDiagnoser]
public class AttentionBenchmarks
{
    private PagedKvCache _cache = null!;
    private DecodePlan _plan = null!;
    private float[] _q = [], _o = [], _lse = [];

    [Params(DType.F16, DType.BF16, DType.I8, DType.I4)]
    public DType KvType { get; set; } = DType.F16;

    [Params(1, 8)]
    public int Batch { get; set; } = 1;

    [Params(4096, 4099)]
    public int Context { get; set; } = 4096;

    /// <summary>Frees the cache's native pools.</summary>
    [GlobalCleanup]
    public void Cleanup() => _cache?.Dispose();

    [GlobalSetup]
    public void Setup()
    {
        const int page = 16, kvHeads = 8, d = 128;
        int pagesPerSeq = (Context + page - 1) / page, pages = Batch * pagesPerSeq;
        _cache = new PagedKvCache(pages, page, kvHeads, d, KvType);
        var rng = new Random(1);
        int[] perm = Enumerable.Range(0, pages).OrderBy(_ => rng.Next()).ToArray();
        var row = new float[kvHeads * d];
        foreach (int p in perm.Take(Math.Min(pages, 32)))
            for (int s = 0; s < page; s++)
            {
                for (int i = 0; i < row.Length; i++) row[i] = (float)(rng.NextDouble() * 2 - 1);
                _cache.WriteToken(p, s, row, row);
            }
        var indptr = Enumerable.Range(0, Batch + 1).Select(b => b * pagesPerSeq).ToArray();
        var table = new PageTable(indptr, perm, Enumerable.Repeat(Context - (pagesPerSeq - 1) * page, Batch).ToArray(), page);
        var shape = new AttentionShape(32, kvHeads, d);
        _plan = DecodePlanner.Plan(table, shape, pages, new AttentionWorkspace());
        _q = Suites.DenseSuite.RandomFloats(Batch * 32 * d, 2);
        _o = new float[_q.Length];
        _lse = new float[Batch * 32];
        // Check once against the oracle.
        var e = new float[_q.Length];
        AttentionReference.Decode(_q, _cache, table, shape, AttentionOptions.Default, e, default);
        PagedDecode.Run(_plan, _q, _cache, _o, _lse);
        for (int i = 0; i < e.Length; i++)
            if (Math.Abs(e[i] - _o[i]) > 1e-3f) throw new InvalidOperationException($"PagedDecode does not match the reference at {i}: {e[i]} vs {_o[i]}");
    }

    [Benchmark]
    public void Decode() => PagedDecode.Run(_plan, _q, _cache, _o, _lse);
}
