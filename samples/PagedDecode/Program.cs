using Kernels;
using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Positional;
using Kernels.Attention.Reference;
using Kernels.Cpu;
using Kernels.Gpu;

// A serving-style decode step over a paged KV cache (Llama-3-8B attention shape: 32 query heads, 8 kv heads, head_dim 128):
// a prompt is prefilled into pages, a second request forks it (shared prefix pages, copy-on-write), both grow, and one
// decode plan serves every layer. A cascade plan runs the same step reading the shared prompt pages once for both
// requests. Then a next step as a device-resident runtime runs it (slots reserved, copy-on-write replayed and K/V appended
// on the backend). Last, a speculative step: drafts scored by a causal prefill over the pages, the rejected ones truncated.
// The CPU results are checked against the double-precision oracle, and a GPU's when ILGPU finds one.
const int qoHeads = 32, kvHeads = 8, headDim = 128, pageSize = 16, layers = 2;
var shape = new AttentionShape(qoHeads, kvHeads, headDim);
var rng = new Random(1);
float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
float[] Row(int tokens) => Values(tokens * kvHeads * headDim); // K or V of `tokens` tokens, [tokens, kv_heads, head_dim]

// One pool and allocator per layer; the same operations on each give every layer the same page ids.
var caches = new PagedKvCache[layers];
var allocators = new PageAllocator[layers];
int a = 0, b = 0;
for (int layer = 0; layer < layers; layer++)
{
    caches[layer] = new PagedKvCache(numPages: 64, pageSize, kvHeads, headDim, DType.F16);
    var alloc = allocators[layer] = new PageAllocator(caches[layer]);
    a = alloc.Create();
    alloc.Append(a, Row(100), Row(100), 100);  // the prompt
    b = alloc.Fork(a);                          // a second request sharing the prompt's pages
    alloc.Append(b, Row(20), Row(20), 20);      // copies the shared partial last page first
    alloc.Append(a, Row(5), Row(5), 5);
}
var table = allocators[0].BuildPageTable([a, b]);
Console.WriteLine($"sequences: {table.KvLength(0)} and {table.KvLength(1)} tokens over {table.Indices.Length} page-table entries; " +
    $"{allocators[0].FreePages} of {caches[0].NumPages} pages free");

// Plan once per step (validates the table against the pool, splits long sequences), run it for every layer.
var plan = DecodePlanner.Plan(table, shape, caches[0].NumPages, new AttentionWorkspace());
Console.WriteLine($"plan: {plan.WorkItemCount} work items");

// The same step as a cascade: the pages both requests still share (the prompt's full pages; the partial one was copied on
// write) once for the pair, then each request's own pages, merged per head.
var (prefixes, suffixes) = allocators[0].BuildCascadeTables([a, b], [0, 2]);
var cascade = CascadePlanner.Plan([0, 2], prefixes, suffixes, shape, caches[0].NumPages, new AttentionWorkspace());
Console.WriteLine($"cascade: {prefixes.KvLength(0)} shared tokens, then {suffixes.KvLength(0)} and {suffixes.KvLength(1)} own tokens");
float[] q = Values(2 * qoHeads * headDim); // one query token per sequence, [2, qo_heads, head_dim]
using var cpu = new CpuBackend();
GpuBackend? gpu = GpuBackend.IsCudaAvailable() ? GpuBackend.CreateCuda() : null;
for (int layer = 0; layer < layers; layer++)
{
    float[] expected = new float[q.Length], expectedLse = new float[2 * qoHeads];
    AttentionReference.Decode(q, caches[layer], table, shape, AttentionOptions.Default, expected, expectedLse);
    foreach (IPagedAttentionOps ops in gpu is null ? [cpu] : new IPagedAttentionOps[] { cpu, gpu })
    {
        var backend = (IKernelBackend)ops;
        using var kv = ops.UploadKvCache(caches[layer]);   // the CPU backend wraps the pool; a GPU copies it once
        using DeviceTensor<float> qt = backend is GpuBackend g ? g.Upload(q, 2, qoHeads, headDim) : cpu.Upload(q, 2, qoHeads, headDim);
        using var output = backend.Allocate<float>(2, qoHeads, headDim);
        using var lse = backend.Allocate<float>(2, qoHeads);
        foreach (AttentionPlan step in new AttentionPlan[] { plan, cascade })
        {
            ops.Attention(step, qt, kv, output, lse);
            backend.Synchronize();
            double maxError = output.ToArray().Zip(expected, (x, y) => Math.Abs(x - (double)y)).Max();
            Console.WriteLine($"layer {layer}, {backend.Name}, {(step is CascadePlan ? "cascade" : "flat")}: max |output − oracle| = {maxError:E2}");
            if (!(maxError < 1e-4)) throw new InvalidOperationException($"{backend.Name} differs from the oracle by {maxError}");
        }
    }
}

// The next decode step as a runtime whose K/V come out of the model on the backend would run it: a third request forks
// the second, and each of the three gets one new token. The backend rotates the new token's q and k by its position
// (RoPE, Llama 3.1 frequencies); the allocator only reserves slots (the copy-on-write of the partial page the fork shares
// is returned, not done on the host); the backend replays the page copy (CopyPages) and writes the new K/V (AppendKv);
// attention runs over the grown sequences. Checked against the host path (RopeReference, PageAllocator.Append) and the oracle.
float[] newK = Row(3), newV = Row(3), q3 = Values(3 * qoHeads * headDim);
int row = kvHeads * headDim;
int[] positions = [105, 120, 120]; // each sequence's length before the new token
var rope = new RopeOptions { Theta = 500_000, Llama31 = Llama31Scaling.Llama31 };
var ropeTable = new RopeTable(rope, headDim, maxPositions: 8192);
float[] kRotated = new float[newK.Length], qRotated = new float[q3.Length];
RopeReference.Apply(rope, headDim, positions, newK, kRotated);
RopeReference.Apply(rope, headDim, positions, q3, qRotated);
(PagedKvCache Pool, PageAllocator Alloc, int[] Seqs) Replay()
{
    // Layer 0's pool and bookkeeping (same operations, same page ids), without rewriting its data.
    var pool = new PagedKvCache(caches[0].NumPages, pageSize, kvHeads, headDim, DType.F16);
    for (int p = 0; p < pool.NumPages; p++) pool.CopyPageFrom(caches[0], p, p);
    var alloc = new PageAllocator(pool);
    int x = alloc.Create();
    alloc.Reserve(x, 100, copyOnHost: false);
    int y = alloc.Fork(x);
    alloc.Reserve(y, 20, copyOnHost: false);
    alloc.Reserve(x, 5, copyOnHost: false);
    return (pool, alloc, [x, y, alloc.Fork(y)]);
}
var (hostPool, hostAlloc, hostSeqs) = Replay();
for (int i = 0; i < 3; i++) hostAlloc.Append(hostSeqs[i], kRotated.AsSpan(i * row, row), newV.AsSpan(i * row, row), 1);
float[] expected3 = new float[q3.Length];
AttentionReference.Decode(qRotated, hostPool, hostAlloc.BuildPageTable(hostSeqs), shape, AttentionOptions.Default, expected3, default);
foreach (IPagedAttentionOps ops in gpu is null ? [cpu] : new IPagedAttentionOps[] { cpu, gpu })
{
    var backend = (IKernelBackend)ops;
    var (pool, alloc, seqs) = Replay();
    using var kv = ops.UploadKvCache(pool);
    var copies = new List<PageCopy>();
    foreach (int seq in seqs)
        if (alloc.Reserve(seq, 1, copyOnHost: false) is { } copy) copies.Add(copy);
    ops.CopyPages(kv, copies.ToArray());
    var grown = alloc.BuildPageTable(seqs);
    DeviceTensor<float> Upload(float[] data, int rows, int heads) =>
        backend is GpuBackend g ? g.Upload(data, rows, heads, headDim) : cpu.Upload(data, rows, heads, headDim);
    using var kT = Upload(newK, 3, kvHeads);
    using var vT = Upload(newV, 3, kvHeads);
    using var qT = Upload(q3, 3, qoHeads);
    using DeviceTensor<int> posT = backend is GpuBackend gp ? gp.Upload(positions, 3) : cpu.Upload(positions, 3);
    var ropeOps = (IRopeOps)ops;
    ropeOps.ApplyRope(ropeTable, posT, kT, kT); // in place
    ropeOps.ApplyRope(ropeTable, posT, qT, qT);
    ops.AppendKv(KvAppendPlan.ForDecode(grown, pool.NumPages), kT, vT, kv);
    using var output = backend.Allocate<float>(3, qoHeads, headDim);
    ops.Attention(DecodePlanner.Plan(grown, shape, pool.NumPages, new AttentionWorkspace(), targetItems: ops.DecodeTargetItems), qT, kv, output, null);
    backend.Synchronize();
    double maxError = output.ToArray().Zip(expected3, (x, y) => Math.Abs(x - (double)y)).Max();
    Console.WriteLine($"next step, {backend.Name}: q/k rotated, {copies.Count} copy-on-write page copy, K/V appended on the backend; max |output − oracle| = {maxError:E2}");
    if (!(maxError < 1e-4)) throw new InvalidOperationException($"{backend.Name} differs from the oracle by {maxError}");
    pool.Dispose();
}
hostPool.Dispose();

// Speculative decoding: a draft model proposes 4 tokens; the target model appends their K/V and scores all 4 in one causal
// prefill pass over the paged cache (draft i sees the prompt and drafts 0..i); 2 are accepted, so the sequence is
// truncated to drop the rejected drafts' K/V, and the page only they used returns to the pool.
using (var specPool = new PagedKvCache(numPages: 8, pageSize, kvHeads, headDim, DType.F16))
{
    var specAlloc = new PageAllocator(specPool);
    int s = specAlloc.Create();
    specAlloc.Append(s, Row(30), Row(30), 30); // the prompt: 30 of the first two pages' 32 slots
    specAlloc.Append(s, Row(4), Row(4), 4);    // the drafts fill the second page and start a third
    var specTable = specAlloc.BuildPageTable([s]);
    int[] qoIndptr = [0, 4];
    float[] qDraft = Values(4 * qoHeads * headDim), expectedDraft = new float[qDraft.Length];
    AttentionReference.Prefill(qoIndptr, qDraft, specPool, specTable, shape, AttentionOptions.Default, expectedDraft, default);
    foreach (IPagedAttentionOps ops in gpu is null ? [cpu] : new IPagedAttentionOps[] { cpu, gpu })
    {
        var backend = (IKernelBackend)ops;
        using var kv = ops.UploadKvCache(specPool);
        using DeviceTensor<float> qT = backend is GpuBackend g ? g.Upload(qDraft, 4, qoHeads, headDim) : cpu.Upload(qDraft, 4, qoHeads, headDim);
        using var output = backend.Allocate<float>(4, qoHeads, headDim);
        var verify = PrefillPlanner.Plan(qoIndptr, specTable, shape, specPool.NumPages, workspace: new AttentionWorkspace(), targetItems: ops.DecodeTargetItems);
        ops.Attention(verify, qT, kv, output, null);
        backend.Synchronize();
        double maxError = output.ToArray().Zip(expectedDraft, (x, y) => Math.Abs(x - (double)y)).Max();
        Console.WriteLine($"speculative step, {backend.Name}: 4 drafts scored by one causal prefill over {specTable.KvLength(0)} keys; max |output − oracle| = {maxError:E2}");
        if (!(maxError < 1e-4)) throw new InvalidOperationException($"{backend.Name} differs from the oracle by {maxError}");
    }
    specAlloc.Truncate(s, 32); // 2 drafts accepted
    Console.WriteLine($"2 of 4 drafts accepted: {specAlloc.Length(s)} tokens on {specAlloc.Pages(s).Length} pages, {specAlloc.FreePages} of {specPool.NumPages} pages free");
    if (specAlloc.Pages(s).Length != 2 || specAlloc.FreePages != specPool.NumPages - 2)
        throw new InvalidOperationException("Truncate did not release the rejected drafts' page.");
}
gpu?.Dispose();
foreach (var c in caches) c.Dispose();
