using Kernels.Attention.Masks;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Attention.Positional;
using Kernels.Cpu.Attention;

namespace Kernels.Tests.Attention;

/// <summary>Boundary checks of the paged-attention public API at the limits of its integer sizes and ranges: each input
/// here used to crash, overflow or give a silently wrong result.</summary>
public class AttentionBoundaryTests
{
    [Fact]
    public void PageTable_KvLengthPastIntMax_Throws()
    {
        // 2 pages of 2^30 tokens, the last full: 2^31 tokens, which KvLength used to wrap to int.MinValue (and ForDecode skipped).
        var e = Assert.Throws<ArgumentException>(() => new PageTable([0, 2], [0, 1], [1 << 30], 1 << 30));
        Assert.Contains("2147483648 tokens", e.Message);
        Assert.Equal(int.MaxValue, new PageTable([0, 2], [0, 1], [(1 << 30) - 1], 1 << 30).KvLength(0)); // the largest still fits
    }

    [Fact]
    public void KvAppendPlan_ForAppend_TotalPastArrayLimit_Throws()
    {
        // Two sequences of 2^30 tokens, both appended whole: 2^31 tokens used to overflow an int (OverflowException).
        var t = new PageTable([0, 1, 2], [0, 1], [1 << 30, 1 << 30], 1 << 30);
        var e = Assert.Throws<ArgumentException>(() => KvAppendPlan.ForAppend(t, [1 << 30, 1 << 30], 2));
        Assert.Contains("2147483648", e.Message);
    }

    [Fact]
    public void PageAllocator_RefCount_PageOutsidePool_Throws()
    {
        using var cache = new PagedKvCache(4, 4, 1, 32, DType.F32);
        var alloc = new PageAllocator(cache);
        Assert.Equal(0, alloc.RefCount(3));
        Assert.Contains("4 pages", Assert.Throws<ArgumentOutOfRangeException>(() => alloc.RefCount(4)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => alloc.RefCount(-1));
    }

    [Fact]
    public void PageAllocator_Reserve_PastIntMaxTokens_ThrowsAndKeepsTheSequence()
    {
        PagedKvCache cache;
        try { cache = new PagedKvCache(2, 1 << 30, 1, 1, DType.F8E4M3); } // 2 GiB per pool, untouched (calloc)
        catch (OutOfMemoryException) { return; } // no address space for the pool here
        using (cache)
        {
            var alloc = new PageAllocator(cache);
            int s = alloc.Create();
            alloc.Reserve(s, int.MaxValue, copyOnHost: false);
            // One more token used to wrap the length to int.MinValue without allocating anything.
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => alloc.Reserve(s, 1, copyOnHost: false));
            Assert.Contains("2147483647 tokens", e.Message);
            Assert.Equal(int.MaxValue, alloc.Length(s));
            Assert.Equal(int.MaxValue, alloc.BuildPageTable([s]).KvLength(0));
        }
    }

    [Fact]
    public void Decode_LseOverlappingOutput_Throws()
    {
        using var cache = new PagedKvCache(2, 4, 1, 32, DType.F32);
        var alloc = new PageAllocator(cache);
        int s = alloc.Create();
        var k = Enumerable.Range(0, 6 * 32).Select(i => (float)Math.Sin(i)).ToArray();
        alloc.Append(s, k, k, 6);
        var plan = DecodePlanner.Plan(alloc.BuildPageTable([s]), new AttentionShape(1, 1, 32), cache.NumPages, new AttentionWorkspace());
        var q = new float[32];
        var output = new float[32];
        // The lse used to be written over the first output value: a silently wrong output.
        Assert.Throws<ArgumentException>(() => PagedDecode.Run(plan, q, cache, output, output.AsSpan(0, 1)));
        PagedDecode.Run(plan, q, cache, output, new float[1]);
    }

    [Fact]
    public void BlockSparseMask_ContainsAndColumnLength_OutOfRange_Throw()
    {
        var m = new BlockSparseMask([0, 1], [0], 4, 4, 4, 4);
        Assert.True(m.Contains(3, 3));
        // Contains(-1, -1) used to answer true (−1 / 4 = 0 is block 0); Contains(8, 0) threw IndexOutOfRangeException.
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Contains(-1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Contains(0, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Contains(8, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Contains(0, 4));
        Assert.Equal(4, m.ColumnLength(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.ColumnLength(5)); // used to return −16
    }

    [Fact]
    public void RopeTable_OptionsGivingNonFiniteAngles_Throw()
    {
        // A positive, finite but tiny scale makes position/scale infinite: the table used to hold NaN cos/sin.
        var e = Assert.Throws<ArgumentException>(() => new RopeTable(new RopeOptions { Scale = 1e-310 }, 32, 4));
        Assert.Contains("position 1", e.Message);
        Assert.True(new RopeTable(new RopeOptions(), 32, 4).CosSin.ToArray().All(float.IsFinite));
    }

    [Fact]
    public void PagedKvCache_HeadDimWhoseRowBytesOverflow_Throws()
    {
        // 4·(2^30 + 1) wrapped to RowBytes 4: a 4-byte pool for a row of 2^30 + 1 floats.
        Assert.Throws<ArgumentOutOfRangeException>(() => new PagedKvCache(1, 1, 1, (1 << 30) + 1, DType.F32));
    }

    [Fact]
    public void PrefillPlan_QueryRowsPastTheLargestSpan_Throws()
    {
        // qoIndptr[^1] = 2^31 − 1 used to plan tiles for every row before anything noticed that no q span could hold them:
        // the input fuzz's case ran the 24 GB test machine out of memory.
        var table = new PageTable([0, 1], [0], [1], 16);
        var shape = new AttentionShape(4, 1, 32);
        var e = Assert.Throws<ArgumentException>(() => PrefillPlanner.Plan([0, int.MaxValue], table, shape, 1, new AttentionOptions { Causal = false }));
        Assert.Contains("2147483647 query rows × 4 heads × head_dim 32", e.Message);
        // A plan within the limit is still made.
        Assert.NotNull(PrefillPlanner.Plan([0, 1], table, shape, 1));
    }

    [Fact]
    public void CustomMask_QueryRowsPastTheArrayLimit_Throws()
    {
        // 2^31 − 1 rows with no keys needs no mask words, but its per-row arrays cannot be allocated (OutOfMemoryException before).
        var e = Assert.Throws<ArgumentException>(() => CustomMask.Create([0, int.MaxValue], [0], (_, _, _) => true));
        Assert.Contains("2147483647 query rows", e.Message);
    }

    [Fact]
    public void MergeStates_ValuesPassedAsLse_Throws_StateMergedWithItselfIsAccepted()
    {
        // With head_dim 1 the element counts of v and lse agree, so v passed as its own lse used to be merged (wrong values).
        using var cpu = new Kernels.Cpu.CpuBackend();
        using var v = cpu.Upload<float>([0.5f, -1f, 2f], 3, 1);
        using var l = cpu.Upload<float>([0.1f, 0.2f, 0.3f], 3);
        using var o = cpu.Upload<float>([1f, 1f, 1f], 3, 1);
        var e = Assert.Throws<ArgumentException>(() => cpu.MergeStates(v, v, o, l));
        Assert.Contains("lse is the same tensor as v", e.Message);
        Assert.Throws<ArgumentException>(() => cpu.MergeStates(v, l, o, o));
        // A state merged with itself: every value stays, every lse grows by ln 2.
        cpu.MergeStates(v, l, v, l);
        Assert.Equal([0.5f, -1f, 2f], v.ToArray());
        Assert.Equal([0.1f + MathF.Log(2), 0.2f + MathF.Log(2), 0.3f + MathF.Log(2)], l.ToArray(), (a, b) => Math.Abs(a - b) < 1e-6f);
    }
}
