using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Cpu;
using Kernels.Tests.TestUtilities;
using static Kernels.Tests.Attention.AttentionTestData;

namespace Kernels.Tests.Attention;

/// <summary>Split-KV in prefill, block-sparse and cascade-level plans: the planner's rule, and the kernels against the oracle
/// when the rule (not a forced chunk size) splits long keys. The random properties of <see cref="PagedPrefillTests"/>,
/// <see cref="CustomMaskTests"/> and the GPU tests also draw forced splits.</summary>
public class PrefillSplitKvTests
{
    private static readonly AttentionShape Llama = new(32, 8, 128);

    /// <summary>One request of <paramref name="kvLen"/> keys in 16-token pages, pages in order.</summary>
    private static PageTable OneRequest(int kvLen)
    {
        int pages = (kvLen + 15) / 16;
        return new PageTable([0, pages], Enumerable.Range(0, pages).ToArray(), [kvLen - (pages - 1) * 16], 16);
    }

    [Fact]
    public void Plan_FewItemsOverLongKeys_SplitsTowardsTheTarget()
    {
        // 4 query rows over 8192 keys (512 pages), 8 kv heads: 8 items unsplit; 64 wanted: chunks of 512·8/64 = 64 pages.
        var table = OneRequest(8192);
        var workspace = new AttentionWorkspace();
        var plan = PrefillPlanner.Plan([0, 4], table, Llama, 512, null, null, workspace, targetItems: 64);
        Assert.Equal(64, plan.ChunkPages);
        Assert.Equal(64, plan.WorkItemCount);
        Assert.Equal(4 * 8, plan.PartialSlots);
        Assert.True(workspace.Capacity >= plan.WorkspaceFloats && plan.WorkspaceFloats == 32L * 32 * (128 + 1));
        Assert.Same(workspace, plan.Workspace);
        foreach (var it in plan.Items)
        {
            int chunk = it.PageBegin / 64;
            Assert.Equal(64, it.PageEnd - it.PageBegin);
            Assert.Equal(chunk * 4, it.PartialSlot); // row r of chunk c: slot c·4 + r
            Assert.Equal(4, it.QueryRows);
        }

        var whole = PrefillPlanner.Plan([0, 4], table, Llama, 512);
        Assert.Equal((8, 0, 0), (whole.WorkItemCount, whole.PartialSlots, whole.ChunkPages));
        Assert.Null(whole.Workspace);
        var enough = PrefillPlanner.Plan([0, 4], table, Llama, 512, null, null, new AttentionWorkspace(), targetItems: 8);
        Assert.Equal((8, 0), (enough.WorkItemCount, enough.PartialSlots)); // already 8 items: not split
    }

    [Fact]
    public void Plan_ChunksOfATile_AreBalanced()
    {
        // 2 rows over 133 pages, 8 items unsplit, 16 wanted: chunks of at most ceil(133·8/16) = 67 pages: 67 + 66. Forced chunks of at
        // most 129 pages are also cut 67 + 66, not 129 + 4.
        var plan = PrefillPlanner.Plan([0, 2], OneRequest(133 * 16), Llama, 133, null, null, new AttentionWorkspace(), targetItems: 16);
        Assert.Equal(67, plan.ChunkPages);
        Assert.Equal([66, 67], plan.Items.ToArray().Select(it => it.PageEnd - it.PageBegin).Distinct().Order());
        var forced = PrefillPlanner.Plan([0, 2], OneRequest(133 * 16), Llama, 133, null, null, new AttentionWorkspace(), fixedChunkPages: 129);
        Assert.Equal([66, 67], forced.Items.ToArray().Select(it => it.PageEnd - it.PageBegin).Distinct().Order());
    }

    [Fact]
    public void Plan_SlidingWindow_SplitsOnlyTheLivePages()
    {
        // Rows see keys 7187…8191 at most: pages 449…511 (63 pages) are live; 63·8/64 → the 16-page minimum: 4 chunks.
        var table = OneRequest(8192);
        var plan = PrefillPlanner.Plan([0, 4], table, Llama, 512, new AttentionOptions { WindowLeft = 1000 }, null, new AttentionWorkspace(), targetItems: 64);
        Assert.Equal(16, plan.ChunkPages);
        Assert.Equal(4 * 8, plan.WorkItemCount);
        Assert.All(plan.Items.ToArray(), it => Assert.True(it.PageBegin >= 449 && it.PageEnd <= 512 && it.PageEnd > it.PageBegin));
        Assert.Equal(449, plan.Items.ToArray().Min(it => it.PageBegin));
    }

    [Fact]
    public void PlanBlockSparse_OneRowOverManyBlocks_Splits()
    {
        // Block-sparse decode: 1 query over 128 kept blocks of 64 keys. Planned with a workspace, a one-row request takes
        // every kv head per item, as decode: 1 item unsplit, so chunks of max(256 tokens = 4 blocks, 128/64): 32 items of
        // 8 kv heads each. Without one, the 8 kv heads are the items.
        var mask = new BlockSparseMask([0, 128], Enumerable.Range(0, 128).ToArray(), 1, 8192, 1, 64);
        var plan = PrefillPlanner.PlanBlockSparse(mask, Llama, 128, new AttentionOptions { Causal = false }, null, new AttentionWorkspace(), targetItems: 64);
        Assert.Equal((4, 32, 32), (plan.ChunkPages, plan.WorkItemCount, plan.PartialSlots));
        Assert.All(plan.Items.ToArray(), it => Assert.Equal((0, 8, 4), (it.KvHead, it.KvHeads, it.GroupHeads)));
        var whole = PrefillPlanner.PlanBlockSparse(mask, Llama, 128, new AttentionOptions { Causal = false });
        Assert.Equal((8, 1), (whole.WorkItemCount, whole.Items[0].KvHeads));
    }

    [Fact]
    public void Plan_OneRowRequests_WithAWorkspace_TakeEveryKvHeadPerItem()
    {
        // A mixed batch: a 3-row prefill request and two decode steps (one row each) over 300 keys. With a workspace the
        // one-row requests are planned as decode (every kv head that fits 64 queries per item, then split-KV); the 3-row
        // request keeps one kv head per item.
        var table = new PageTable([0, 19, 38, 57], Enumerable.Range(0, 57).ToArray(), [12, 12, 12], 16);
        var shape = new AttentionShape(32, 8, 128);
        var plan = PrefillPlanner.Plan([0, 3, 4, 5], table, shape, 57, null, null, new AttentionWorkspace(), targetItems: 1);
        Assert.All(plan.Items.ToArray(), it => Assert.Equal(it.QueryRows == 1 ? 8 : 1, it.KvHeads));
        Assert.Equal(8 + 1 + 1, plan.WorkItemCount);
        var noWorkspace = PrefillPlanner.Plan([0, 3, 4, 5], table, shape, 57);
        Assert.All(noWorkspace.Items.ToArray(), it => Assert.Equal(1, it.KvHeads));
        Assert.Equal(24, noWorkspace.WorkItemCount);
    }

    [Fact]
    public void Plan_SplitOptionsOutOfRange_Throw()
    {
        var table = OneRequest(100);
        Assert.Throws<ArgumentOutOfRangeException>(() => PrefillPlanner.Plan([0, 1], table, Llama, 7, null, null, new AttentionWorkspace(), targetItems: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => PrefillPlanner.Plan([0, 1], table, Llama, 7, null, null, new AttentionWorkspace(), fixedChunkPages: 0));
        Assert.Contains("workspace", Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, 1], table, Llama, 7, fixedChunkPages: 2)).Message);
        var mask = new BlockSparseMask([0, 1], [0], 1, 16, 1, 16);
        Assert.Throws<ArgumentException>(() => PrefillPlanner.PlanBlockSparse(mask, Llama, 1, null, null, null, fixedChunkPages: 1));
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void TreeVerify_LongPrompts_SplitByTheRule_EachIsa_MatchesReference(IsaPath isa)
    {
        // Two token trees (5 and 3 draft tokens) on prompts of 700 and 300 tokens, one kv head: 2 items unsplit, so the
        // planner cuts the prompts into 16-page chunks (3 and 2). Random masks inside the trees, NaN-free bf16 and int4.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        foreach (var (dtype, mode) in new[] { (DType.BF16, KvScaleMode.None), (DType.I4, KvScaleMode.None), (DType.I8, KvScaleMode.PerToken) })
        {
            var c = new PagedPrefillTests.PrefillCase(new CacheSpec([705, 303], 16, 1, 64, dtype, KvLayout.Nhd, mode, 5), [5, 3], 4, true, -1, 0f, SplitPages: -1);
            PagedPrefillTests.Check(c, options, maskOf: new CustomMaskTests.MaskSpec(-1, 9).Make);
            PagedPrefillTests.Check(c with { Window = 400, SoftCap = 4f }, options);
        }
        var (cache, table) = Build(new CacheSpec([705, 303], 16, 1, 64, DType.BF16, KvLayout.Nhd, KvScaleMode.None, 5));
        var plan = PrefillPlanner.Plan([0, 5, 8], table, new AttentionShape(4, 1, 64), cache.NumPages, null, null, new AttentionWorkspace());
        Assert.Equal((16, 5 * 3 + 3 * 2), (plan.ChunkPages, plan.PartialSlots));
    }

    [Theory]
    [MemberData(nameof(IsaMatrix.Paths), MemberType = typeof(IsaMatrix))]
    public void Cascade_LongSharedPrompt_SplitsTheSharedLevel_EachIsa_MatchesReference(IsaPath isa)
    {
        // 3 sequences on a 600-token shared prompt: the shared level (one tile, two kv heads) is split like decode.
        if (IsaMatrix.OptionsOrSkip(isa) is not { } options) return;
        var c = new CascadeTests.CascadeCase(new CacheSpec([600, 0, 4, 9, 1], 16, 2, 64, DType.F16, KvLayout.Nhd, KvScaleMode.None, 13), [3, 0], 4, 0f, 64);
        var (cache, prefixes, suffixes, groupIndptr) = CascadeTests.BuildCascade(c);
        var plan = CascadePlanner.Plan(groupIndptr, prefixes, suffixes, new AttentionShape(8, 2, 64), cache.NumPages, new AttentionWorkspace());
        Assert.True(plan.Prefix.PartialSlots > 0 && plan.Prefix.ChunkPages == 16, $"{plan.Prefix.PartialSlots} slots, chunks of {plan.Prefix.ChunkPages}");
        CascadeTests.Check(c, options);
        CascadeTests.Check(c, options, window: 300);
    }
}
