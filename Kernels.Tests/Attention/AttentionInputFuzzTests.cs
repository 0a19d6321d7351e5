using Kernels.Attention;
using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Positional;
using Kernels.Attention.Reference;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Gpu;
using Kernels.Tests.Gpu;
using Xunit.Abstractions;

namespace Kernels.Tests.Attention;

/// <summary>Random and corrupted arguments at the attention API's public boundary: page tables (indptr, indices,
/// last_page_len, page size), shapes, pool sizes, options, plan parameters, query/output/lse lengths, a cache other than the
/// plan's, query offsets, custom masks, cascade groups, K/V append plans, block-sparse masks, vLLM block tables, page
/// copies and swaps, and the backends' tensors for decode, state merges, appends and RoPE, one or two of them corrupted
/// per case. Every call either throws <see cref="ArgumentException"/> (or <see cref="NotSupportedException"/> for an
/// unsupported head_dim) before it writes anything, or runs and matches the oracle; q and the cache are never modified by
/// attention, and nothing is written past an output's expected length. Any other exception type is a failure.</summary>
/// <remarks>CI runs a few hundred cases per API; <c>KERNELS_FUZZ_CASES=N</c> runs N.</remarks>
[Collection(GpuCollection.Name)]
public class AttentionInputFuzzTests(GpuFixture fixture, ITestOutputHelper output)
{
    private const float Sentinel = 1234.5f;

    /// <summary>How the current fuzz's cases ended (rejected at which stage, or run and checked), for its summary line.</summary>
    [ThreadStatic]
    private static Dictionary<string, int>? t_outcomes;

    /// <summary>Records how a case ended, for the running fuzz's summary line.</summary>
    internal static void Count(string outcome)
    {
        if (t_outcomes is { } o) o[outcome] = o.GetValueOrDefault(outcome) + 1;
    }

    private static readonly int[] IntEdges = [-1, 0, 1, 2, int.MaxValue, int.MinValue];

    [Fact]
    public void Decode_RandomAndCorruptedInputs_ThrowArgumentErrorsOrMatchTheOracle() =>
        Fuzz("decode", 600, 1, rng =>
        {
            var c = Draw(rng);
            using var _ = c;
            if (TableAndShape(c) is not var (table, shape)) return;
            if (Stage(() => DecodePlanner.Plan(table, shape, c.NumPagesArg, new AttentionWorkspace(), c.Options, c.FixedChunk, false, c.Target), "plan") is not { } plan)
                return;
            int rows = table.BatchSize;
            RunAndCheck(c.RunCache, rng, rows, shape, (q, o, lse) => PagedDecode.Run(plan, q, c.RunCache, o, lse),
                (q, o, lse) => AttentionReference.Decode(q, c.RunCache, table, shape, c.Options, o, lse));
        });

    [Fact]
    public void Prefill_RandomAndCorruptedInputs_ThrowArgumentErrorsOrMatchTheOracle() =>
        Fuzz("prefill", 600, 2, rng =>
        {
            var c = Draw(rng);
            using var _ = c;
            if (TableAndShape(c) is not var (table, shape)) return;
            // Query offsets: 0–3 queries per sequence (more than its keys allowed), one entry corrupted one time in four.
            int[] qoIndptr = new int[table.BatchSize + 1];
            for (int b = 0; b < table.BatchSize; b++) qoIndptr[b + 1] = qoIndptr[b] + rng.Next(0, 4);
            qoIndptr = Corrupt(rng, qoIndptr, 4);
            var options = c.Options with { Causal = rng.Next(2) == 0 };
            CustomMask? mask = null;
            if (rng.Next(4) == 0)
            {
                // A mask for these requests, or for requests whose lengths disagree with them.
                int[] kvLens = Enumerable.Range(0, table.BatchSize).Select(table.KvLength).ToArray();
                int[] maskQo = rng.Next(3) == 0 ? Corrupt(rng, qoIndptr, 1) : qoIndptr;
                // Key counts off by a little (a mask of 2³¹ keys per row is valid, only slow to build).
                int[] maskKv = kvLens.Length > 0 && rng.Next(3) == 0 ? kvLens.Select((k, i) => i == 0 ? Pick(rng, k - 1, k + 1, -1, 0) : k).ToArray() : kvLens;
                int keepSeed = rng.Next();
                mask = Stage(() => CustomMask.Create(maskQo, maskKv, (r, i, j) => ((i * 31 + j * 7 + r + keepSeed) & 3) != 0), "mask");
                if (mask is null) return;
            }
            if (Stage(() => PrefillPlanner.Plan(qoIndptr, table, shape, c.NumPagesArg, options, mask, new AttentionWorkspace(), c.Target), "plan") is not { } plan)
                return;
            RunAndCheck(c.RunCache, rng, qoIndptr[^1], shape, (q, o, lse) => PagedPrefill.Run(plan, q, c.RunCache, o, lse),
                (q, o, lse) => AttentionReference.Prefill(qoIndptr, q, c.RunCache, table, shape, options, o, lse, default, mask));
        });

    [Fact]
    public void Cascade_RandomAndCorruptedInputs_ThrowArgumentErrorsOrMatchTheOracle() =>
        Fuzz("cascade", 300, 3, rng =>
        {
            var c = Draw(rng);
            using var _ = c;
            if (TableAndShape(c) is not var (table, shape)) return;
            // The drawn sequences split into shared prefixes (the first `groups`) and own suffixes (the rest).
            int groups = table.BatchSize == 0 ? 0 : rng.Next(0, table.BatchSize + 1), batch = table.BatchSize - groups;
            var prefixes = Sub(table, 0, groups);
            var suffixes = Sub(table, groups, batch);
            var groupIndptr = new int[groups + 1];
            for (int g = 0; g < groups; g++) groupIndptr[g + 1] = g == groups - 1 ? batch : Math.Min(batch, groupIndptr[g] + rng.Next(0, 3));
            groupIndptr = Corrupt(rng, groupIndptr, 4);
            if (groups == 0) groupIndptr = rng.Next(2) == 0 ? [0] : groupIndptr;
            if (Stage(() => CascadePlanner.Plan(groupIndptr, prefixes, suffixes, shape, c.NumPagesArg, new AttentionWorkspace(), c.Options, c.Target), "plan") is not { } plan)
                return;
            RunAndCheck(c.RunCache, rng, batch, shape, (q, o, lse) => CascadeDecode.Run(plan, q, c.RunCache, o, lse),
                (q, o, lse) => AttentionReference.Cascade(groupIndptr, q, c.RunCache, prefixes, suffixes, shape, c.Options, o, lse));
        });

    [Fact]
    public void Append_RandomAndCorruptedPlans_ThrowArgumentErrorsOrWriteWhatWriteTokenWrites() =>
        Fuzz("append", 600, 4, rng =>
        {
            var c = Draw(rng);
            using var _ = c;
            var cache = c.Cache;
            int row = cache.KvHeads * cache.HeadDim;
            KvAppendPlan? plan;
            switch (rng.Next(3))
            {
                case 0:
                {
                    // vLLM's slot mapping: −1 is padding; slots past the pool, repeated slots and a wrong page size are errors.
                    long slots = (long)cache.NumPages * cache.PageSize;
                    long[] mapping = Enumerable.Range(0, rng.Next(0, 6)).Select(_ => rng.Next(4) switch
                    {
                        0 => -1L,
                        1 => Pick(rng, slots, slots + 1, long.MaxValue, long.MinValue, -2L),
                        _ => rng.NextInt64(0, slots),
                    }).ToArray();
                    int pageSize = rng.Next(6) == 0 ? Pick(rng, 0, -1, cache.PageSize + 1) : cache.PageSize;
                    int numPages = rng.Next(6) == 0 ? Pick(rng, 0, -1, cache.NumPages + 1) : cache.NumPages;
                    plan = Stage(() => KvAppendPlan.FromSlotMapping(mapping, pageSize, numPages), "plan");
                    break;
                }
                default:
                {
                    if (Stage(() => new PageTable(c.Indptr, c.Indices, c.Last, c.TablePageSize), "table") is not { } table) return;
                    int[] lengths = Enumerable.Range(0, table.BatchSize).Select(b => rng.Next(0, Math.Min(table.KvLength(b), 3) + 1)).ToArray();
                    lengths = Corrupt(rng, lengths, 4);
                    plan = Stage(() => KvAppendPlan.ForAppend(table, lengths, c.NumPagesArg), "plan");
                    break;
                }
            }
            if (plan is null) return;
            int tokens = plan.Tokens;
            float[] keys = Lengthen(rng, RandomFloats(rng, tokens * row), row);
            float[] values = rng.Next(8) == 0 ? Lengthen(rng, RandomFloats(rng, tokens * row), row) : RandomFloats(rng, keys.Length);
            // The expected result: the same tokens written one by one (a later duplicate cannot occur: plans reject them).
            using var expected = Clone(cache);
            var before = Snapshot(cache);
            var error = Attempt(() => cache.WriteTokens(plan, keys, values));
            if (error is not null)
            {
                Allowed(error, "write");
                Assert.True(Snapshot(cache).SequenceEqual(before), "a rejected append changed the cache");
                return;
            }
            Assert.True(keys.Length == tokens * row && values.Length == tokens * row, $"an append of {tokens} tokens took {keys.Length} keys and {values.Length} values");
            for (int i = 0; i < tokens; i++)
                if (plan.Pages[i] >= 0) expected.WriteToken(plan.Pages[i], plan.Slots[i], keys.AsSpan(i * row, row), values.AsSpan(i * row, row));
            Assert.True(Snapshot(cache).SequenceEqual(Snapshot(expected)), "WriteTokens wrote other bytes than WriteToken");
            Count("written, matched WriteToken");
        });

    [Fact]
    public void Backends_DecodeWithCorruptedTensors_ThrowArgumentErrorsOrMatchTheOracle()
    {
        using var cpu = new CpuBackend();
        // The GPU kernels run on ILGPU's CPU accelerator (one OS thread per GPU thread): few, small cases.
        Fuzz("backend decode (CPU)", 200, 5, rng => BackendDecode(cpu, rng));
        Fuzz("backend decode (GPU, CPU accelerator)", 30, 6, rng => BackendDecode(fixture.Backend, rng));
    }

    [Fact]
    public void BlockSparse_RandomAndCorruptedMasks_ThrowArgumentErrorsOrMatchTheOracle() =>
        Fuzz("block-sparse", 400, 7, rng =>
        {
            // A block mask over M queries × N keys in R × C blocks, each block row keeping a random set of block columns;
            // sizes, offsets or column ids corrupted now and then.
            int r = Pick(rng, 1, 2, 4, 16), bc = Pick(rng, 1, 2, 4, 16), m = rng.Next(0, 40), n = rng.Next(0, 40);
            if (rng.Next(10) == 0) m = Pick(rng, -1, int.MaxValue, n + 1);
            if (rng.Next(10) == 0) n = Pick(rng, -1, int.MaxValue);
            if (rng.Next(12) == 0) r = Pick(rng, 0, -1);
            if (rng.Next(12) == 0) bc = Pick(rng, 0, -1);
            int mb = r > 0 && m >= 0 ? (int)Math.Min(((long)m + r - 1) / r, 40) : rng.Next(0, 3);
            int nb = bc > 0 && n >= 0 ? (int)Math.Min(((long)n + bc - 1) / bc, 40) : rng.Next(0, 3);
            var indptr = new List<int> { 0 };
            var indices = new List<int>();
            for (int i = 0; i < mb; i++)
            {
                for (int j = 0; j < nb; j++)
                    if (rng.Next(2) == 0) indices.Add(j);
                indptr.Add(indices.Count);
            }
            int[] ip = Corrupt(rng, [.. indptr], 6), ix = Corrupt(rng, [.. indices], 6, nb, nb + 1);
            if (Stage(() => new BlockSparseMask(ip, ix, m, n, r, bc), "mask") is not { } mask) return;
            // The cache's pages are the key blocks (a page size other than C, or too few pages, must be rejected).
            var (dtype, mode) = Pick(rng, [.. CombinedOptionsFuzzTests.Formats.Where(f => f.Item2 != KvScaleMode.PerHead)]);
            int kvHeads = rng.Next(1, 3), d = Pick(rng, 32, 64), group = Pick(rng, 1, 2, 4);
            int pageSize = rng.Next(10) == 0 ? mask.C + 1 : mask.C;
            int numPages = Math.Max(1, mask.BlockColumns + (rng.Next(6) == 0 ? -1 : rng.Next(0, 2)));
            if ((long)numPages * pageSize > 4096) return; // corrupted sizes that the mask accepted (N = 2³¹ − 1 with one block column per key)
            using var cache = new PagedKvCache(numPages, pageSize, kvHeads, d, dtype, Pick(rng, KvLayout.Nhd, KvLayout.Hnd), mode);
            FillRandom(cache, rng, 1);
            var shape = new AttentionShape(kvHeads * group, kvHeads, d);
            var options = new AttentionOptions { Causal = rng.Next(2) == 0 };
            CustomMask? elements = null;
            if (rng.Next(4) == 0)
            {
                var bits = new bool[Math.Max(0, mask.Indices.Length * mask.R * mask.C + (rng.Next(4) == 0 ? Pick(rng, -1, 1) : 0))];
                for (int i = 0; i < bits.Length; i++) bits[i] = rng.Next(3) != 0;
                if ((elements = Stage(() => mask.ElementMask(bits), "element mask")) is null) return;
            }
            int split = rng.Next(3);
            if (Stage(() => split == 0 ? PrefillPlanner.PlanBlockSparse(mask, shape, numPages, options, elements)
                    : PrefillPlanner.PlanBlockSparse(mask, shape, numPages, options, elements, new AttentionWorkspace(), fixedChunkPages: split == 2 ? Pick(rng, 1, 2, 0) : null),
                    "plan") is not { } plan)
                return;
            // Dense K/V of the N keys (key t is slot t mod C of page t / C), for the oracle.
            var denseK = new float[(long)mask.N * kvHeads * d];
            var denseV = new float[denseK.Length];
            var row = new float[d];
            for (int t = 0; t < mask.N; t++)
                for (int h = 0; h < kvHeads; h++)
                {
                    cache.ReadKey(t / mask.C, t % mask.C, h, row);
                    row.CopyTo(denseK, (t * kvHeads + h) * d);
                    cache.ReadValue(t / mask.C, t % mask.C, h, row);
                    row.CopyTo(denseV, (t * kvHeads + h) * d);
                }
            RunAndCheck(cache, rng, mask.M, shape, (q, o, lse) => PagedPrefill.Run(plan, q, cache, o, lse),
                (q, o, lse) => AttentionReference.BlockSparse(mask, q, denseK, denseV, shape, options, o, lse, default, elements));
        });

    [Fact]
    public void FromBlockTables_RandomAndCorruptedTables_ThrowArgumentErrorsOrConvert() =>
        Fuzz("vLLM block tables", 600, 8, rng =>
        {
            int seqs = rng.Next(0, 4), maxBlocks = rng.Next(0, 5), pageSize = Pick(rng, 1, 2, 16);
            int[] blocks = Enumerable.Range(0, seqs * maxBlocks).Select(_ => rng.Next(-1, 10)).ToArray();
            int[] lens = Enumerable.Range(0, seqs).Select(_ => rng.Next(0, maxBlocks * pageSize + 1)).ToArray();
            if (rng.Next(3) == 0)
                switch (rng.Next(5))
                {
                    case 0: lens = Corrupt(rng, lens, 1, maxBlocks * pageSize + 1); break;
                    case 1: lens = Resize(rng, lens); break;
                    case 2: blocks = Resize(rng, blocks); break;
                    case 3: maxBlocks = Pick(rng, -1, maxBlocks + 1, Math.Max(0, maxBlocks - 1), int.MaxValue); break;
                    default: pageSize = Pick(rng, 0, -1, int.MaxValue); break;
                }
            if (Stage(() => PageTable.FromBlockTables(blocks, maxBlocks, lens, pageSize), "conversion") is not { } table) return;
            Assert.Equal(lens.Length, table.BatchSize);
            Assert.Equal(pageSize, table.PageSize);
            for (int i = 0; i < lens.Length; i++)
            {
                int used = (int)(((long)lens[i] + pageSize - 1) / pageSize);
                Assert.Equal(lens[i], table.KvLength(i));
                Assert.True(table.Indices[table.Indptr[i]..table.Indptr[i + 1]].SequenceEqual(blocks.AsSpan(i * maxBlocks, used)),
                    $"sequence {i}: pages [{string.Join(", ", table.Indices[table.Indptr[i]..table.Indptr[i + 1]].ToArray())}], blocks [{string.Join(", ", blocks.AsSpan(i * maxBlocks, used).ToArray())}]");
            }
            Count("converted, matched the block tables");
        });

    [Fact]
    public void PageCopies_RandomLists_ThrowArgumentErrorsOrCopyInOrder()
    {
        using var cpu = new CpuBackend();
        Fuzz("page copies (CPU)", 300, 9, rng => PageCopies(cpu, rng));
        Fuzz("page copies (GPU, CPU accelerator)", 60, 10, rng => PageCopies(fixture.Backend, rng));
    }

    /// <summary><c>CopyPages</c>, <c>SwapIn</c> or <c>SwapOut</c> with a random list of copies (chains and repeats included,
    /// ids past either pool now and then) and, one time in eight, a host pool of another format: an allowed exception with
    /// both pools unchanged, or both pools equal to the copies applied one after another on the host.</summary>
    private static void PageCopies(IKernelBackend backend, Random rng)
    {
        var ops = (IPagedAttentionOps)backend;
        var c = Draw(rng, maxLen: 20);
        using var _ = c;
        var cache = c.Cache;
        using var host = rng.Next(8) == 0 ? AttentionTestData.Build(new AttentionTestData.CacheSpec([3], cache.PageSize + 1, cache.KvHeads,
            cache.HeadDim, DType.F16, KvLayout.Nhd, KvScaleMode.None, rng.Next()), extraPages: 1).Cache : Clone(cache);
        FillRandom(host, rng, 2);
        int op = rng.Next(3); // 0: CopyPages within the cache, 1: SwapIn host → cache, 2: SwapOut cache → host
        int srcPages = op == 1 ? host.NumPages : cache.NumPages, dstPages = op == 2 ? host.NumPages : cache.NumPages;
        var copies = Enumerable.Range(0, rng.Next(0, 6)).Select(_ => new PageCopy(
            rng.Next(10) == 0 ? Pick(rng, -1, srcPages, int.MaxValue, int.MinValue) : rng.Next(srcPages),
            rng.Next(10) == 0 ? Pick(rng, -1, dstPages, int.MaxValue) : rng.Next(dstPages))).ToArray();
        using var expectedCache = Clone(cache);
        using var expectedHost = Clone(host);
        byte[] cacheBefore = Snapshot(cache), hostBefore = Snapshot(host);
        using var kv = ops.UploadKvCache(cache);
        var error = Attempt(() =>
        {
            switch (op)
            {
                case 0: ops.CopyPages(kv, copies); break;
                case 1: kv.SwapIn(host, copies); break;
                default: kv.SwapOut(host, copies); break;
            }
            backend.Synchronize();
        });
        kv.Download(); // the device's pages into the host cache (nothing to do on the CPU)
        if (error is not null)
        {
            Allowed(error, "copy");
            Assert.True(Snapshot(cache).SequenceEqual(cacheBefore) && Snapshot(host).SequenceEqual(hostBefore), "a rejected copy changed a pool");
            return;
        }
        foreach (var copy in copies)
            switch (op)
            {
                case 0: expectedCache.CopyPage(copy.Source, copy.Destination); break;
                case 1: expectedCache.CopyPageFrom(host, copy.Source, copy.Destination); break;
                default: expectedHost.CopyPageFrom(expectedCache, copy.Source, copy.Destination); break;
            }
        Assert.True(Snapshot(cache).SequenceEqual(Snapshot(expectedCache)), $"op {op}: the cache differs from the copies applied in order");
        Assert.True(Snapshot(host).SequenceEqual(Snapshot(expectedHost)), $"op {op}: the host pool differs from the copies applied in order");
        Count(op == 0 ? "copied in order" : op == 1 ? "swapped in, in order" : "swapped out, in order");
    }

    [Fact]
    public void Backends_MergeAppendRope_CorruptedTensors_ThrowArgumentErrorsOrMatchTheOracle()
    {
        using var cpu = new CpuBackend();
        foreach (var (backend, name, count) in new (IKernelBackend, string, int)[] { (cpu, "CPU", 300), (fixture.Backend, "GPU, CPU accelerator", 60) })
        {
            Fuzz($"merge states ({name})", count, 11, rng => MergeStates(backend, rng));
            Fuzz($"K/V append ({name})", count, 12, rng => AppendKv(backend, rng));
            Fuzz($"RoPE ({name})", count, 13, rng => ApplyRope(backend, rng));
        }
    }

    /// <summary><c>MergeStates</c> on [rows, heads, d] states with dimensions off by one now and then, and one time in eight a
    /// tensor passed twice (v as other, lse as otherLse, or v as lse): an allowed exception with nothing changed, or the
    /// oracle's merge row by row.</summary>
    private static void MergeStates(IKernelBackend backend, Random rng)
    {
        var ops = (IPagedAttentionOps)backend;
        int rows = rng.Next(0, 5), heads = rng.Next(1, 4), d = Pick(rng, 1, 16, 32, 64);
        int Off(int n) => rng.Next(8) == 0 ? Math.Max(0, n + Pick(rng, -1, 1)) : n;
        int[] vDims = [rows, heads, d], lDims = [Off(rows), heads], oDims = [rows, Off(heads), d], olDims = [rows, Off(heads)];
        float[] vh = RandomFloats(rng, rows * heads * d), oh = RandomFloats(rng, oDims[0] * oDims[1] * oDims[2]);
        float[] lh = Lses(rng, lDims[0] * lDims[1]), olh = Lses(rng, olDims[0] * olDims[1]);
        using var v = Tensor(backend, vh, vDims);
        using var l = Tensor(backend, lh, lDims);
        using var o = Tensor(backend, oh, oDims);
        using var ol = Tensor(backend, olh, olDims);
        var (other, otherLse, lse) = rng.Next(8) switch
        {
            0 => (v, ol, l),   // v merged with itself
            1 => (o, l, l),    // lse merged with itself
            2 => (o, ol, v),   // v's own values as its lse
            _ => (o, ol, l),
        };
        float[] vBefore = v.ToArray(), lBefore = l.ToArray(), oBefore = o.ToArray(), olBefore = ol.ToArray();
        var error = Attempt(() =>
        {
            ops.MergeStates(v, lse, other, otherLse);
            backend.Synchronize();
        });
        if (error is not null)
        {
            Allowed(error, "merge");
            Assert.True(v.ToArray().SequenceEqual(vBefore) && l.ToArray().SequenceEqual(lBefore) && o.ToArray().SequenceEqual(oBefore)
                && ol.ToArray().SequenceEqual(olBefore), "a rejected merge changed a state");
            return;
        }
        // Accepted: the oracle on copies of the accepted arguments, as if none were shared.
        float[] ev = (float[])vBefore.Clone(), el = lse == v ? (float[])vBefore.Clone() : (float[])lBefore.Clone();
        float[] eo = other == v ? vBefore : oBefore, eol = otherLse == l ? lBefore : olBefore;
        int n = el.Length;
        Assert.True(ev.Length == n * d && eo.Length == ev.Length && eol.Length == n, $"merge accepted v {ev.Length}, lse {n}, other {eo.Length}, otherLse {eol.Length} at head_dim {d}");
        for (int r = 0; r < n; r++) AttentionState.MergeInPlace(ev.AsSpan(r * d, d), ref el[r], eo.AsSpan(r * d, d), eol[r]);
        Compare(ev, v.ToArray(), "merged values");
        Compare(el, lse.ToArray(), "merged lse");
        Count("merged, matched the oracle");
    }

    private static float[] Lses(Random rng, int n) =>
        Enumerable.Range(0, n).Select(_ => rng.Next(10) == 0 ? float.NegativeInfinity : (float)(rng.NextDouble() * 6 - 3)).ToArray();

    /// <summary><c>AppendKv</c> with a slot-mapping plan (now and then for another page size or a larger pool) and key/value
    /// tensors whose dimensions are off by one now and then: an allowed exception with the cache unchanged, or the cache the
    /// host's <c>WriteToken</c> calls give.</summary>
    private static void AppendKv(IKernelBackend backend, Random rng)
    {
        var ops = (IPagedAttentionOps)backend;
        var c = Draw(rng, maxLen: 20);
        using var _ = c;
        var cache = c.Cache;
        long slots = (long)cache.NumPages * cache.PageSize;
        var seen = new HashSet<long>();
        long[] mapping = Enumerable.Range(0, rng.Next(0, 5)).Select(_ => rng.Next(5) == 0 ? -1L : rng.NextInt64(0, slots)).Where(x => x < 0 || seen.Add(x)).ToArray();
        int pageSize = rng.Next(10) == 0 ? cache.PageSize + 1 : cache.PageSize, numPages = rng.Next(10) == 0 ? cache.NumPages + 1 : cache.NumPages;
        var plan = KvAppendPlan.FromSlotMapping(mapping, pageSize, numPages);
        int Off(int n) => rng.Next(10) == 0 ? Math.Max(1, n + Pick(rng, -1, 1)) : n;
        int[] kDims = [plan.Tokens == 0 ? 0 : Off(plan.Tokens), Off(cache.KvHeads), Off(cache.HeadDim)];
        if (plan.Tokens == 0) kDims = [0, cache.KvHeads, cache.HeadDim]; // an empty tensor of the right shape
        int[] vDims = rng.Next(10) == 0 ? [kDims[0], kDims[1], kDims[2] + 1] : kDims;
        float[] kh = RandomFloats(rng, kDims[0] * kDims[1] * kDims[2]), vh = RandomFloats(rng, vDims[0] * vDims[1] * vDims[2]);
        using var expected = Clone(cache);
        var before = Snapshot(cache);
        using var kv = ops.UploadKvCache(cache);
        using var kt = Tensor(backend, kh, kDims);
        using var vt = Tensor(backend, vh, vDims);
        var error = Attempt(() =>
        {
            ops.AppendKv(plan, kt, vt, kv);
            backend.Synchronize();
        });
        kv.Download();
        if (error is not null)
        {
            Allowed(error, "append");
            Assert.True(Snapshot(cache).SequenceEqual(before), "a rejected append changed the cache");
            return;
        }
        int row = cache.KvHeads * cache.HeadDim;
        Assert.True(pageSize == cache.PageSize && numPages <= cache.NumPages && kh.Length == plan.Tokens * row && vh.Length == kh.Length,
            $"append accepted a plan for page size {pageSize} and {numPages} pages, keys {string.Join('×', kDims)}, values {string.Join('×', vDims)}");
        for (int i = 0; i < plan.Tokens; i++)
            if (plan.Pages[i] >= 0) expected.WriteToken(plan.Pages[i], plan.Slots[i], kh.AsSpan(i * row, row), vh.AsSpan(i * row, row));
        Assert.True(Snapshot(cache).SequenceEqual(Snapshot(expected)), "AppendKv wrote other bytes than WriteToken");
        Count("appended, matched WriteToken");
    }

    /// <summary><c>ApplyRope</c> (out of place or in place) with positions past the table now and then, a table for another
    /// head_dim, or x/output dimensions off by one: an allowed exception with the output unchanged, or the oracle's
    /// rotation.</summary>
    private static void ApplyRope(IKernelBackend backend, Random rng)
    {
        var ops = (IRopeOps)backend;
        int tokens = rng.Next(0, 5), heads = rng.Next(1, 4), d = Pick(rng, 8, 32, 64), maxPositions = rng.Next(1, 40);
        int rotary = Pick(rng, 0, 0, d / 2, 4);
        var table = new RopeTable(new RopeOptions { RotaryDim = rotary, Interleaved = rng.Next(2) == 0, Theta = Pick(rng, 1e4, 5e5) },
            rng.Next(10) == 0 ? d + 8 : d, maxPositions);
        int[] positions = Enumerable.Range(0, tokens).Select(_ => rng.Next(10) == 0 ? Pick(rng, -1, maxPositions, int.MaxValue, int.MinValue) : rng.Next(maxPositions)).ToArray();
        int Off(int n) => rng.Next(10) == 0 ? Math.Max(1, n + Pick(rng, -1, 1)) : n;
        int[] xDims = [tokens == 0 ? 0 : Off(tokens), heads, Off(d)];
        if (tokens == 0) xDims = [0, heads, d];
        int[] oDims = rng.Next(10) == 0 ? [xDims[0], xDims[1] + 1, xDims[2]] : xDims;
        float[] xh = RandomFloats(rng, xDims[0] * xDims[1] * xDims[2]);
        bool inPlace = rng.Next(3) == 0;
        using var pt = backend.Allocate<int>(positions.Length);
        pt.CopyFrom(positions);
        using var xt = Tensor(backend, xh, xDims);
        using var ot = Tensor(backend, Enumerable.Repeat(Sentinel, oDims[0] * oDims[1] * oDims[2]).ToArray(), oDims);
        var error = Attempt(() =>
        {
            ops.ApplyRope(table, pt, xt, inPlace ? xt : ot);
            backend.Synchronize();
        });
        float[] x = xt.ToArray(), o = ot.ToArray();
        if (error is not null)
        {
            Allowed(error, "rope");
            Assert.True(x.SequenceEqual(xh) && o.All(z => z == Sentinel), "a rejected rotation wrote its output");
            return;
        }
        var e = new float[xh.Length];
        RopeReference.Apply(table.Options, table.HeadDim, positions, xh, e);
        Assert.True(positions.All(p => p >= 0 && p < maxPositions), "ApplyRope accepted a position past the table");
        Compare(e, inPlace ? x : o, "rotated");
        if (!inPlace) Assert.True(x.SequenceEqual(xh), "an out-of-place rotation changed x");
        Count(inPlace ? "rotated in place, matched the oracle" : "rotated, matched the oracle");
    }

    private static void BackendDecode(IKernelBackend backend, Random rng)
    {
        var ops = (IPagedAttentionOps)backend;
        var c = Draw(rng, maxLen: 20);
        using var _ = c;
        if (TableAndShape(c) is not var (table, shape)) return;
        if (Stage(() => DecodePlanner.Plan(table, shape, c.NumPagesArg, new AttentionWorkspace(), c.Options, c.FixedChunk, false, c.Target), "plan") is not { } plan)
            return;
        int rows = table.BatchSize, hq = shape.QoHeads, d = shape.HeadDim;
        int Dim(int n) => rng.Next(8) == 0 ? Math.Max(1, n + Pick(rng, -1, 1)) : Math.Max(1, n);
        int[] qDims = [Dim(rows), Dim(hq), Dim(d)], oDims = [Dim(rows), Dim(hq), Dim(d)];
        int[] lDims = [Dim(rows), Dim(hq)];
        float[] q = RandomFloats(rng, qDims[0] * qDims[1] * qDims[2]);
        using var kv = ops.UploadKvCache(c.RunCache);
        using var qt = Tensor(backend, q, qDims);
        using var ot = Tensor(backend, Enumerable.Repeat(Sentinel, oDims[0] * oDims[1] * oDims[2]).ToArray(), oDims);
        using var lt = Tensor(backend, Enumerable.Repeat(Sentinel, lDims[0] * lDims[1]).ToArray(), lDims);
        bool withLse = rng.Next(4) != 0, qAsOutput = rng.Next(10) == 0; // q passed as the output too: must be rejected
        var error = Attempt(() =>
        {
            ops.Attention(plan, qt, kv, qAsOutput ? qt : ot, withLse ? lt : null);
            backend.Synchronize();
        });
        float[] o = ot.ToArray(), l = lt.ToArray();
        Assert.True(qt.ToArray().AsSpan().SequenceEqual(q), "attention changed q");
        Assert.True(!qAsOutput || error is not null, "attention accepted q as its output");
        if (error is not null)
        {
            Allowed(error, "attention");
            Assert.True(o.All(x => x == Sentinel) && l.All(x => x == Sentinel), "a rejected call wrote its output");
            return;
        }
        Assert.True(qDims.SequenceEqual([rows, hq, d]) && oDims.SequenceEqual([rows, hq, d]) && (!withLse || lDims.SequenceEqual([rows, hq])),
            $"attention accepted q {string.Join('×', qDims)}, output {string.Join('×', oDims)}, lse {string.Join('×', lDims)} for a plan of {rows} rows × {hq} heads × {d}");
        var e = new float[rows * hq * d];
        var le = new float[rows * hq];
        AttentionReference.Decode(q, c.RunCache, table, shape, c.Options, e, le);
        Compare(e, o, "output");
        if (withLse) Compare(le, l, "lse");
        Count("ran, matched the oracle");
    }

    internal static DeviceTensor<float> Tensor(IKernelBackend backend, float[] data, int[] dims)
    {
        var t = backend.Allocate<float>(dims);
        t.CopyFrom(data);
        return t;
    }

    private void Fuzz(string what, int count, int stream, Action<Random> body) => Fuzz(output, what, count, stream, body);

    /// <summary>Runs <paramref name="count"/> cases (or <c>KERNELS_FUZZ_CASES</c>), each from its own seed of the
    /// <paramref name="stream"/>, prints how they ended (<see cref="Count"/>) and reports every failure with its seed.</summary>
    internal static void Fuzz(ITestOutputHelper output, string what, int count, int stream, Action<Random> body)
    {
        count = CombinedOptionsFuzzTests.CaseCount(count);
        var master = new Random(20261203 * 7 + stream);
        var failures = new List<string>();
        t_outcomes = [];
        for (int n = 0; n < count; n++)
        {
            int seed = master.Next();
            try
            {
                body(new Random(seed));
            }
            catch (Exception e)
            {
                failures.Add($"case {n} (seed {seed}): {e.GetType().Name}: {e.Message}");
            }
        }
        output.WriteLine($"{what}: {count} cases, {failures.Count} failures ({string.Join(", ", t_outcomes.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} {kv.Value}"))})");
        t_outcomes = null;
        Assert.True(failures.Count == 0, $"{what}:\n" + string.Join("\n", failures.Take(10)));
    }

    /// <summary>Runs an attention call on q/output/lse buffers of drawn lengths (usually the expected ones), then checks the
    /// outcome: an allowed exception with the buffers untouched, or the oracle's values with nothing written past them.</summary>
    private static void RunAndCheck(PagedKvCache cache, Random rng, int rows, AttentionShape shape, RunFn run, RunFn oracle)
    {
        int hq = shape.QoHeads, d = shape.HeadDim;
        long qn = (long)rows * hq * d, ln = (long)rows * hq;
        if (qn > 1 << 20) return; // a corrupted shape; the plan accepted it, but the buffers would be huge
        float[] q = Lengthen(rng, RandomFloats(rng, (int)qn), d);
        float[] o = Enumerable.Repeat(Sentinel, (int)Math.Max(0, qn + (rng.Next(6) == 0 ? Pick(rng, -1, 1, d) : 0))).ToArray();
        float[] lse = rng.Next(4) == 0 ? [] : Enumerable.Repeat(Sentinel, (int)Math.Max(0, ln + (rng.Next(6) == 0 ? Pick(rng, -1, 1, 5) : 0))).ToArray();
        float[] q0 = (float[])q.Clone();
        var cacheBefore = Snapshot(cache);
        var error = Attempt(() => run(q, o, lse));
        Assert.True(q.AsSpan().SequenceEqual(q0), "attention changed q");
        Assert.True(Snapshot(cache).SequenceEqual(cacheBefore), "attention changed the cache");
        if (error is not null)
        {
            Allowed(error, "run");
            Assert.True(o.All(x => x == Sentinel) && lse.All(x => x == Sentinel), "a rejected call wrote its output");
            return;
        }
        Assert.True(q.Length == qn, $"the run took {q.Length} queries for {qn}");
        Assert.True(o.Length >= qn && (lse.Length == 0 || lse.Length >= ln), $"the run took output {o.Length} / lse {lse.Length} for {qn} / {ln}");
        var e = new float[qn];
        var le = new float[ln];
        oracle(q, e, le);
        Compare(e, o.AsSpan(0, (int)qn), "output");
        Assert.True(o.AsSpan((int)qn).IndexOfAnyExcept(Sentinel) < 0, "the run wrote past the output");
        if (lse.Length > 0)
        {
            Compare(le, lse.AsSpan(0, (int)ln), "lse");
            Assert.True(lse.AsSpan((int)ln).IndexOfAnyExcept(Sentinel) < 0, "the run wrote past the lse");
        }
        Count("ran, matched the oracle");
    }

    private delegate void RunFn(float[] q, float[] output, float[] lse);

    /// <summary>One drawn configuration: a small random cache (every KV format and layout), the raw page-table arrays of its
    /// sequences, the shape, pool size, options and plan parameters, and the cache the run is given; usually valid, with one
    /// or two entries corrupted in about half the cases.</summary>
    private sealed class Case : IDisposable
    {
        public required PagedKvCache Cache { get; init; }
        public required PagedKvCache RunCache { get; init; }
        public required int[] Indptr { get; init; }
        public required int[] Indices { get; init; }
        public required int[] Last { get; init; }
        public required int TablePageSize { get; init; }
        public required int QoHeads { get; init; }
        public required int KvHeads { get; init; }
        public required int HeadDim { get; init; }
        public required int NumPagesArg { get; init; }
        public required AttentionOptions Options { get; init; }
        public required int? FixedChunk { get; init; }
        public required int Target { get; init; }

        public void Dispose()
        {
            Cache.Dispose();
            if (!ReferenceEquals(RunCache, Cache)) RunCache.Dispose();
        }
    }

    /// <summary>The drawn table and shape, or null when either constructor rejected its arguments.</summary>
    private static (PageTable, AttentionShape)? TableAndShape(Case c) =>
        Stage(() => new PageTable(c.Indptr, c.Indices, c.Last, c.TablePageSize), "table") is { } table
        && Stage(() => new AttentionShape(c.QoHeads, c.KvHeads, c.HeadDim), "shape") is { } shape ? (table, shape) : null;

    private static Case Draw(Random rng, int maxLen = 40)
    {
        var spec = CombinedOptionsFuzzTests.Cache(rng, maxLen, [32, 64]);
        var (cache, table) = AttentionTestData.Build(spec, extraPages: rng.Next(1, 3)); // ≥ 1: a pool has pages
        int[] indptr = table.Indptr.ToArray(), indices = table.Indices.ToArray(), last = table.LastPageLen.ToArray();
        int pageSize = cache.PageSize, numPages = cache.NumPages;
        bool corrupt = rng.Next(3) == 0;
        for (int m = corrupt ? rng.Next(1, 3) : 0; m > 0; m--)
            switch (rng.Next(7))
            {
                case 0: indptr = Corrupt(rng, indptr, 1); break;
                case 1: indptr = Resize(rng, indptr); break;
                case 2: indices = indices.Length == 0 ? [Pick(rng, -1, numPages)] : Corrupt(rng, indices, 1, numPages, numPages + 5); break;
                case 3: indices = Resize(rng, indices); break;
                case 4: last = last.Length == 0 ? [1] : Corrupt(rng, last, 1, pageSize, pageSize + 1); break;
                case 5: last = Resize(rng, last); break;
                default: pageSize = Pick(rng, 0, -1, pageSize + 1, 2 * pageSize, Math.Max(1, pageSize - 1)); break;
            }
        int group = Pick(rng, 1, 2, 4, 5), kvHeads = cache.KvHeads, d = cache.HeadDim, qo = kvHeads * group;
        if (rng.Next(12) == 0) qo += Pick(rng, -1, 1);
        if (rng.Next(12) == 0) kvHeads = Pick(rng, kvHeads + 1, Math.Max(1, kvHeads - 1), 0, -1);
        if (rng.Next(12) == 0) d = Pick(rng, d + 32, d - 32, 48, 0, -1, 288);
        int numPagesArg = rng.Next(8) == 0 ? Pick(rng, 0, -1, numPages - 1, numPages + 1) : numPages;
        var options = AttentionOptions.Default;
        if (rng.Next(6) == 0) options = options with { SmScale = Pick<float?>(rng, float.NaN, float.PositiveInfinity, 0f, -0.5f, 0.3f, null) };
        if (rng.Next(6) == 0) options = options with { LogitsSoftCap = Pick(rng, -1f, float.NaN, float.PositiveInfinity, 0f, 5f) };
        if (rng.Next(6) == 0) options = options with { WindowLeft = Pick(rng, -2, -1, 0, 3, int.MaxValue) };
        if (rng.Next(8) == 0) options = options with { AlibiSlopes = Slopes(rng, qo) };
        if (rng.Next(8) == 0) options = options with { AttentionSinks = Slopes(rng, qo) };
        int? fixedChunk = rng.Next(6) == 0 ? Pick<int?>(rng, 1, 2, 0, -1, int.MaxValue) : null;
        int target = rng.Next(6) == 0 ? Pick(rng, 1, 0, -1, int.MaxValue) : Pick(rng, 8, 64);
        // One time in eight the run gets another cache: fewer pages, another page size, head count, head_dim or format.
        var runCache = cache;
        if (rng.Next(8) == 0)
        {
            var other = spec with { SeqLens = rng.Next(2) == 0 ? [1] : spec.SeqLens, Seed = rng.Next() };
            other = rng.Next(4) switch
            {
                0 => other with { PageSize = other.PageSize + 1 },
                1 => other with { KvHeads = other.KvHeads + 1 },
                2 => other with { HeadDim = other.HeadDim == 32 ? 64 : 32 },
                _ => other with { DType = other.DType == DType.F16 ? DType.F32 : DType.F16, Mode = KvScaleMode.None },
            };
            runCache = AttentionTestData.Build(other, extraPages: 1).Cache;
        }
        return new Case
        {
            Cache = cache, RunCache = runCache, Indptr = indptr, Indices = indices, Last = last, TablePageSize = pageSize,
            QoHeads = qo, KvHeads = kvHeads, HeadDim = d, NumPagesArg = numPagesArg, Options = options, FixedChunk = fixedChunk, Target = target,
        };
    }

    /// <summary>Slopes or sink logits for qo heads, one time in three with the wrong count or a non-finite entry.</summary>
    private static float[] Slopes(Random rng, int qo)
    {
        int n = Math.Max(0, rng.Next(3) == 0 ? qo + Pick(rng, -1, 1) : qo);
        var s = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        if (n > 0 && rng.Next(3) == 0) s[rng.Next(n)] = Pick(rng, float.NaN, float.NegativeInfinity);
        return s;
    }

    /// <summary>Sequences [first, first + count) of a table as a table of their own.</summary>
    private static PageTable Sub(PageTable t, int first, int count)
    {
        int p0 = t.Indptr[first];
        int[] indptr = Enumerable.Range(0, count + 1).Select(i => t.Indptr[first + i] - p0).ToArray();
        return new PageTable(indptr, t.Indices[p0..t.Indptr[first + count]], t.LastPageLen.Slice(first, count), t.PageSize);
    }

    /// <summary>One time in <paramref name="oneIn"/> (always when 1) a copy with one entry replaced by an edge value.</summary>
    private static int[] Corrupt(Random rng, int[] xs, int oneIn, params int[] near)
    {
        if (xs.Length == 0 || rng.Next(oneIn) != 0) return xs;
        var ys = (int[])xs.Clone();
        int i = rng.Next(ys.Length);
        int[] edges = [.. IntEdges, .. near, ys[i] + 1, ys[i] - 1];
        ys[i] = edges[rng.Next(edges.Length)];
        return ys;
    }

    /// <summary>A copy one entry shorter or longer.</summary>
    private static int[] Resize(Random rng, int[] xs) =>
        xs.Length > 0 && rng.Next(2) == 0 ? xs[..^1] : [.. xs, xs.Length == 0 ? 0 : xs[^1] + rng.Next(0, 2)];

    /// <summary>One time in six a copy shorter or longer by one element or one row of <paramref name="row"/>.</summary>
    private static float[] Lengthen(Random rng, float[] xs, int row)
    {
        if (rng.Next(6) != 0) return xs;
        int n = Math.Max(0, xs.Length + Pick(rng, -1, 1, row, -row));
        var ys = RandomFloats(rng, n);
        xs.AsSpan(0, Math.Min(n, xs.Length)).CopyTo(ys);
        return ys;
    }

    /// <summary>Writes random keys and values in [−scale, scale] into every slot of every page.</summary>
    private static void FillRandom(PagedKvCache cache, Random rng, float scale)
    {
        var k = new float[cache.KvHeads * cache.HeadDim];
        var v = new float[k.Length];
        for (int p = 0; p < cache.NumPages; p++)
            for (int t = 0; t < cache.PageSize; t++)
            {
                for (int i = 0; i < k.Length; i++)
                {
                    k[i] = scale * (float)(rng.NextDouble() * 2 - 1);
                    v[i] = scale * (float)(rng.NextDouble() * 2 - 1);
                }
                cache.WriteToken(p, t, k, v);
            }
    }

    internal static float[] RandomFloats(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

    private static T Pick<T>(Random rng, params T[] xs) => CombinedOptionsFuzzTests.Pick(rng, xs);

    /// <summary>Every byte of both pools and every scale and zero point.</summary>
    private static byte[] Snapshot(PagedKvCache cache)
    {
        var bytes = new List<byte>();
        for (int p = 0; p < cache.NumPages; p++)
        {
            bytes.AddRange(cache.GetPageKeys(p).ToArray());
            bytes.AddRange(cache.GetPageValues(p).ToArray());
        }
        foreach (var s in new[] { cache.KeyScales.ToArray(), cache.ValueScales.ToArray(), cache.KeyZeros.ToArray(), cache.ValueZeros.ToArray() })
            foreach (float x in s) bytes.AddRange(BitConverter.GetBytes(x));
        return [.. bytes];
    }

    private static PagedKvCache Clone(PagedKvCache c)
    {
        var copy = c.ScaleMode == KvScaleMode.PerHead
            ? new PagedKvCache(c.NumPages, c.PageSize, c.KvHeads, c.HeadDim, c.DType, c.Layout, c.ScaleMode, c.KeyScales.ToArray(), c.ValueScales.ToArray())
            : new PagedKvCache(c.NumPages, c.PageSize, c.KvHeads, c.HeadDim, c.DType, c.Layout, c.ScaleMode);
        for (int p = 0; p < c.NumPages; p++) copy.CopyPageFrom(c, p, p);
        return copy;
    }

    private static Exception? Attempt(Action a)
    {
        try
        {
            a();
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    /// <summary>The value of <paramref name="f"/>, or null after an allowed exception (a clear rejection); any other exception
    /// propagates as a failure of the case.</summary>
    private static T? Stage<T>(Func<T> f, string stage) where T : class
    {
        var box = default(T);
        var error = Attempt(() => box = f());
        if (error is not null) Allowed(error, stage);
        return box;
    }

    private static void Allowed(Exception e, string stage)
    {
        if (e is ArgumentException or NotSupportedException)
        {
            Count($"rejected by {stage}");
            return;
        }
        throw new Xunit.Sdk.XunitException($"{stage} threw {e.GetType().Name} (expected ArgumentException or NotSupportedException): {e.Message}\n{e.StackTrace}");
    }

    /// <summary>Equal NaN positions and infinities; finite values within 2e-3 absolute + 2e-3 relative (the inputs are in
    /// [−1, 1] and the sequences short: a wrong page, head or row shows up as an O(0.1) difference).</summary>
    private static void Compare(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            float e = expected[i], a = actual[i];
            bool ok = float.IsNaN(e) ? float.IsNaN(a) : float.IsFinite(e) ? Math.Abs(e - a) <= 2e-3f + 2e-3f * Math.Abs(e) : e == a;
            if (!ok) throw new Xunit.Sdk.XunitException($"{what}[{i}]: expected {e}, got {a}");
        }
    }
}
