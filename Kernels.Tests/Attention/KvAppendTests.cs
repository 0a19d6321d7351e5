using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Cpu;
using Kernels.Gpu;
using Kernels.Gpu.Attention;
using Kernels.Tests.Gpu;

namespace Kernels.Tests.Attention;

/// <summary>Appending K/V by plan (FlashInfer's <c>append_paged_kv_cache</c>): the plan's targets and checks, the host
/// <see cref="PagedKvCache.WriteTokens"/>, and the GPU kernel on the CPU accelerator against the host's conversion and
/// quantization, value for value, in every format.</summary>
[Collection(GpuCollection.Name)]
public class KvAppendTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    public static TheoryData<DType, KvScaleMode> Formats => new()
    {
        { DType.F32, KvScaleMode.None }, { DType.F16, KvScaleMode.None }, { DType.BF16, KvScaleMode.None },
        { DType.F8E4M3, KvScaleMode.None }, { DType.F8E5M2, KvScaleMode.None }, { DType.F8E4M3, KvScaleMode.PerHead },
        { DType.I8, KvScaleMode.PerToken }, { DType.I8, KvScaleMode.PerHead }, { DType.I4, KvScaleMode.None },
    };

    private static PagedKvCache NewCache(DType dtype, KvScaleMode mode, int pages = 7, int pageSize = 4, KvLayout layout = KvLayout.Nhd)
    {
        float[] heads = [0.05f, 0.2f];
        return mode == KvScaleMode.PerHead
            ? new PagedKvCache(pages, pageSize, 2, 64, dtype, layout, mode, heads, heads)
            : new PagedKvCache(pages, pageSize, 2, 64, dtype, layout, mode);
    }

    /// <summary>Random rows with edge values: ±0, subnormals, values past every format's range, ±Inf, NaN, and a constant row.</summary>
    private static float[] Rows(int tokens, int seed)
    {
        var rng = new Random(seed);
        float[] edge = [0f, -0f, 1e-40f, -3e-8f, 6e-5f, 500f, -70000f, 1e30f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, 447f, 464f, 57344f];
        var x = new float[tokens * 2 * 64];
        for (int i = 0; i < x.Length; i++) x[i] = rng.Next(12) == 0 ? edge[rng.Next(edge.Length)] : (float)(rng.NextDouble() * 4 - 2);
        if (tokens > 1) Array.Fill(x, 0.75f, 64, 64); // token 0, head 1: a constant row (int4: s = |c|)
        return x;
    }

    private static void AssertSameContents(PagedKvCache expected, PagedKvCache actual, string what)
    {
        var e = new float[64];
        var a = new float[64];
        for (int p = 0; p < expected.NumPages; p++)
        {
            for (int t = 0; t < expected.PageSize; t++)
                for (int h = 0; h < 2; h++)
                {
                    expected.ReadKey(p, t, h, e);
                    actual.ReadKey(p, t, h, a);
                    Assert.True(e.AsSpan().SequenceEqual(a) || e.Zip(a).All(z => z.First.Equals(z.Second)), $"{what}: K page {p} slot {t} head {h}: [{string.Join(',', e)}] vs [{string.Join(',', a)}]");
                    expected.ReadValue(p, t, h, e);
                    actual.ReadValue(p, t, h, a);
                    Assert.True(e.Zip(a).All(z => z.First.Equals(z.Second)), $"{what}: V page {p} slot {t} head {h}");
                }
            Assert.Equal(expected.NonFinitePageArray[p], actual.NonFinitePageArray[p]);
        }
    }

    [Fact]
    public void Plan_TargetsAndChecks()
    {
        // Sequences of 6, 0 and 9 tokens in 4-token pages (after the append).
        var table = new PageTable([0, 2, 2, 5], [5, 1, 0, 6, 3], [2, 0, 1], 4);
        var decode = KvAppendPlan.ForDecode(table, 7);
        Assert.Equal([1, 3], decode.Pages.ToArray());  // sequence 0 token 5 → page 1 slot 1; sequence 2 token 8 → page 3 slot 0
        Assert.Equal([1, 0], decode.Slots.ToArray());
        var append = KvAppendPlan.ForAppend(table, [3, 0, 2], 7);
        Assert.Equal([5, 1, 1, 6, 3], append.Pages.ToArray());
        Assert.Equal([3, 0, 1, 3, 0], append.Slots.ToArray());
        var any = KvAppendPlan.Create(table, [2, 0], [0, 4], 7);
        Assert.Equal([0, 1], any.Pages.ToArray());

        Assert.Contains("batchIndices[0] = 3", Assert.Throws<ArgumentException>(() => KvAppendPlan.Create(table, [3], [0], 7)).Message);
        Assert.Contains("positions[0] = 6", Assert.Throws<ArgumentException>(() => KvAppendPlan.Create(table, [0], [6], 7)).Message);
        Assert.Contains("positions[0] = 0", Assert.Throws<ArgumentException>(() => KvAppendPlan.Create(table, [1], [0], 7)).Message); // empty sequence
        Assert.Contains("page 6, past the pool's 6 pages", Assert.Throws<ArgumentException>(() => KvAppendPlan.Create(table, [2], [5], 6)).Message);
        Assert.Contains("earlier token", Assert.Throws<ArgumentException>(() => KvAppendPlan.Create(table, [0, 0], [2, 2], 7)).Message);
        Assert.Contains("appendLengths[0] = 7", Assert.Throws<ArgumentException>(() => KvAppendPlan.ForAppend(table, [7, 0, 0], 7)).Message);
        Assert.Throws<ArgumentException>(() => KvAppendPlan.ForAppend(table, [1, 0], 7));
        Assert.Throws<ArgumentException>(() => KvAppendPlan.Create(table, [0, 0], [1], 7));

        var cache = NewCache(DType.F16, KvScaleMode.None);
        Assert.Contains("pages of 8 tokens", Assert.Throws<ArgumentException>(() => cache.WriteTokens(KvAppendPlan.ForDecode(new PageTable([0, 1], [0], [3], 8), 7), new float[128], new float[128])).Message);
        Assert.Contains("pool of 9 pages", Assert.Throws<ArgumentException>(() => cache.WriteTokens(KvAppendPlan.ForDecode(table, 9), new float[256], new float[256])).Message);
        Assert.Throws<ArgumentException>(() => cache.WriteTokens(decode, new float[255], new float[256]));
    }

    [Fact]
    public void FromSlotMapping_TargetsAndChecks()
    {
        // vLLM's flat slots (page·page_size + slot), −1 for padding: the same targets as the (sequence, position) plan.
        var table = new PageTable([0, 2, 2, 5], [5, 1, 0, 6, 3], [2, 0, 1], 4);
        var byPosition = KvAppendPlan.ForAppend(table, [6, 0, 5], 7);
        var slots = new List<long>();
        for (int i = 0; i < byPosition.Tokens; i++)
        {
            if (i % 4 == 1) slots.Add(-1);
            slots.Add((long)byPosition.Pages[i] * 4 + byPosition.Slots[i]);
        }
        var plan = KvAppendPlan.FromSlotMapping(slots.ToArray(), 4, 7);
        Assert.Equal(slots.Count, plan.Tokens);
        Assert.Equal(slots.Select(x => x < 0 ? -1 : (int)(x / 4)), plan.Pages.ToArray());
        Assert.Equal(slots.Select(x => x < 0 ? 0 : (int)(x % 4)), plan.Slots.ToArray());
        Assert.Equal(byPosition.Pages.ToArray(), plan.Pages.ToArray().Where(p => p >= 0));
        Assert.Contains("slotMapping[1] = 28 is past the pool's 28 slots (7 pages of 4)",
            Assert.Throws<ArgumentException>(() => KvAppendPlan.FromSlotMapping([0, 28], 4, 7)).Message);
        Assert.Contains("slotMapping[2] = 5 (page 1, slot 1) is also targeted",
            Assert.Throws<ArgumentException>(() => KvAppendPlan.FromSlotMapping([5, -1, 5], 4, 7)).Message);
        Assert.Equal(0, KvAppendPlan.FromSlotMapping([], 4, 7).Tokens);
        Assert.Throws<ArgumentOutOfRangeException>(() => KvAppendPlan.FromSlotMapping([0], 0, 7));
    }

    [Theory]
    [InlineData(DType.F16, KvScaleMode.None, 3)]
    [InlineData(DType.I8, KvScaleMode.PerToken, 3)]
    [InlineData(DType.I4, KvScaleMode.None, 3)]
    [InlineData(DType.F16, KvScaleMode.None, 600)]
    public void FromSlotMapping_PaddingRowsAreNotRead_OnEveryBackend(DType dtype, KvScaleMode mode, int pad)
    {
        // The plan of the 11 real tokens, and a slot mapping that interleaves `pad` padding tokens (−1) whose K/V rows are NaN:
        // every backend must write exactly what the padding-free plan writes (600 pads: the host's parallel path).
        var table = new PageTable([0, 2, 2, 5], [5, 1, 0, 6, 3], [2, 0, 1], 4);
        var plan = KvAppendPlan.ForAppend(table, [6, 0, 5], 7);
        float[] k = Rows(plan.Tokens, 3), v = Rows(plan.Tokens, 4);
        var rng = new Random(pad);
        var slots = new List<long>();
        var kp = new List<float>();
        var vp = new List<float>();
        int real = 0;
        while (real < plan.Tokens || slots.Count < plan.Tokens + pad)
        {
            bool padding = slots.Count - real < pad && (real == plan.Tokens || rng.Next(2) == 0);
            if (padding)
            {
                slots.Add(-1 - rng.Next(3));
                kp.AddRange(Enumerable.Repeat(float.NaN, 128));
                vp.AddRange(Enumerable.Repeat(float.NaN, 128));
                continue;
            }
            slots.Add((long)plan.Pages[real] * 4 + plan.Slots[real]);
            kp.AddRange(k.AsSpan(real * 128, 128).ToArray());
            vp.AddRange(v.AsSpan(real * 128, 128).ToArray());
            real++;
        }
        var mapped = KvAppendPlan.FromSlotMapping(slots.ToArray(), 4, 7);
        using var expected = NewCache(dtype, mode);
        expected.WriteTokens(plan, k, v);

        using var host = NewCache(dtype, mode);
        host.WriteTokens(mapped, kp.ToArray(), vp.ToArray());
        AssertSameContents(expected, host, $"{dtype} host");
        foreach (IPagedAttentionOps ops in new IPagedAttentionOps[] { new CpuBackend(), _gpu })
        {
            var backend = (IKernelBackend)ops;
            using var viaBackend = NewCache(dtype, mode);
            using (var dc = ops.UploadKvCache(viaBackend))
            using (var kt = backend.Allocate<float>(mapped.Tokens, 2, 64))
            using (var vt = backend.Allocate<float>(mapped.Tokens, 2, 64))
            {
                kt.CopyFrom(kp.ToArray());
                vt.CopyFrom(vp.ToArray());
                ops.AppendKv(mapped, kt, vt, dc);
                backend.Synchronize();
                dc.Download();
            }
            AssertSameContents(expected, viaBackend, $"{dtype} {backend.Name}");
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void WriteTokens_EqualsWriteTokenPerToken_AndTheGpuKernelEqualsBoth(DType dtype, KvScaleMode mode)
    {
        foreach (var layout in new[] { KvLayout.Nhd, KvLayout.Hnd })
        {
            var table = new PageTable([0, 2, 2, 5], [5, 1, 0, 6, 3], [2, 0, 1], 4);
            var plan = KvAppendPlan.ForAppend(table, [6, 0, 5], 7);
            float[] k = Rows(plan.Tokens, 1), v = Rows(plan.Tokens, 2);
            using var byToken = NewCache(dtype, mode, layout: layout);
            for (int i = 0; i < plan.Tokens; i++)
                byToken.WriteToken(plan.Pages[i], plan.Slots[i], k.AsSpan(i * 128, 128), v.AsSpan(i * 128, 128));
            using var batched = NewCache(dtype, mode, layout: layout);
            batched.WriteTokens(plan, k, v);
            AssertSameContents(byToken, batched, $"{dtype}/{mode} {layout} host");

            // The CPU backend's AppendKv is the host write.
            using var viaCpu = NewCache(dtype, mode, layout: layout);
            var cpu = new CpuBackend();
            using (var dc = cpu.UploadKvCache(viaCpu))
            using (var kt = cpu.Upload(k, plan.Tokens, 2, 64))
            using (var vt = cpu.Upload(v, plan.Tokens, 2, 64))
                cpu.AppendKv(plan, kt, vt, dc);
            AssertSameContents(byToken, viaCpu, $"{dtype}/{mode} {layout} cpu backend");

            // The GPU kernel writes the device pools; Download brings them back (with the non-finite page flags).
            using var viaGpu = NewCache(dtype, mode, layout: layout);
            using (var dc = _gpu.UploadKvCache(viaGpu))
            using (var kt = _gpu.Upload(k, plan.Tokens, 2, 64))
            using (var vt = _gpu.Upload(v, plan.Tokens, 2, 64))
            {
                _gpu.AppendKv(plan, kt, vt, dc);
                _gpu.Synchronize();
                dc.Download();
            }
            AssertSameContents(byToken, viaGpu, $"{dtype}/{mode} {layout} gpu");
        }
    }

    [Theory]
    [InlineData(DType.F16, KvScaleMode.None)]
    [InlineData(DType.F8E5M2, KvScaleMode.None)]
    [InlineData(DType.I4, KvScaleMode.None)]
    public void WriteTokens_LargeAppend_TakesTheParallelPath_AndEqualsWriteToken(DType dtype, KvScaleMode mode)
    {
        // 512 tokens × 2 heads × 64 = 65,536 values per pool: the size from which WriteTokens writes tokens on every core.
        const int tokens = 512, pageSize = 4;
        int pages = tokens / pageSize;
        var table = new PageTable([0, pages], Enumerable.Range(0, pages).Reverse().ToArray(), [pageSize], pageSize);
        var plan = KvAppendPlan.ForAppend(table, [tokens], pages);
        float[] k = Rows(tokens, 40), v = Rows(tokens, 41);
        using var byToken = NewCache(dtype, mode, pages, pageSize);
        for (int i = 0; i < plan.Tokens; i++)
            byToken.WriteToken(plan.Pages[i], plan.Slots[i], k.AsSpan(i * 128, 128), v.AsSpan(i * 128, 128));
        using var batched = NewCache(dtype, mode, pages, pageSize);
        batched.WriteTokens(plan, k, v);
        AssertSameContents(byToken, batched, $"{dtype} parallel append");
    }

    [Theory]
    [InlineData(DType.F16, KvScaleMode.None, false)]
    [InlineData(DType.I4, KvScaleMode.None, false)]
    [InlineData(DType.F8E4M3, KvScaleMode.None, true)]
    [InlineData(DType.I8, KvScaleMode.PerToken, true)]
    public void DeviceServingLoop_ReserveCopyPagesAppendKv_EqualsHostAppend(DType dtype, KvScaleMode mode, bool gpu)
    {
        // The host path: PageAllocator.Append writes K/V (and copies shared partial pages) in the host cache. The device path:
        // the allocator only reserves slots (copyOnHost: false), the copy-on-write copies are replayed by CopyPages and the
        // K/V written by AppendKv on the backend's cache; read back, the two caches must hold the same rows.
        using var hostCache = NewCache(dtype, mode, pages: 24);
        using var deviceHost = NewCache(dtype, mode, pages: 24);
        var host = new PageAllocator(hostCache);
        var dev = new PageAllocator(deviceHost);
        IPagedAttentionOps ops = gpu ? _gpu : new CpuBackend();
        var backend = (IKernelBackend)ops;
        using var device = ops.UploadKvCache(deviceHost);
        int seed = 10;
        void Step(Func<PageAllocator, int> pick, int tokens)
        {
            float[] k = Rows(tokens, seed++), v = Rows(tokens, seed++);
            host.Append(pick(host), k, v, tokens);
            int seq = pick(dev);
            if (dev.Reserve(seq, tokens, copyOnHost: false) is { } copy) ops.CopyPages(device, [copy]);
            var plan = KvAppendPlan.ForAppend(dev.BuildPageTable([seq]), [tokens], deviceHost.NumPages);
            using DeviceTensor<float> kt = backend is GpuBackend g ? g.Upload(k, tokens, 2, 64) : ((CpuBackend)backend).Upload(k, tokens, 2, 64);
            using DeviceTensor<float> vt = backend is GpuBackend g2 ? g2.Upload(v, tokens, 2, 64) : ((CpuBackend)backend).Upload(v, tokens, 2, 64);
            ops.AppendKv(plan, kt, vt, device);
        }
        int a = 0, b = 0, c = 0;
        Step(x => a = x.Create(), 9);              // a prompt of 9 tokens (4-token pages: the last one partial)
        Step(x => { b = x.Fork(a); return b; }, 2);  // a fork writes into the shared partial page: copy-on-write
        Step(_ => a, 1);                           // the parent's partial page is now its own: no copy
        Step(x => { c = x.Fork(b); return c; }, 5);
        Step(_ => b, 3);
        backend.Synchronize();
        device.Download();
        Assert.Equal(host.BuildPageTable([a, b, c]).Indices.ToArray(), dev.BuildPageTable([a, b, c]).Indices.ToArray());
        var table = host.BuildPageTable([a, b, c]);
        var e = new float[64];
        var g3 = new float[64];
        for (int sq = 0; sq < 3; sq++)
            for (int t = 0; t < table.KvLength(sq); t++)
            {
                int page = table.Indices[table.Indptr[sq] + t / 4];
                for (int h = 0; h < 2; h++)
                {
                    hostCache.ReadKey(page, t % 4, h, e);
                    deviceHost.ReadKey(page, t % 4, h, g3);
                    Assert.True(e.Zip(g3).All(z => z.First.Equals(z.Second)), $"sequence {sq} token {t} head {h} K");
                    hostCache.ReadValue(page, t % 4, h, e);
                    deviceHost.ReadValue(page, t % 4, h, g3);
                    Assert.True(e.Zip(g3).All(z => z.First.Equals(z.Second)), $"sequence {sq} token {t} head {h} V");
                }
            }
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => ops.CopyPages(device, [new PageCopy(0, 24)]));
        Assert.Contains("(0 → 24)", ex.Message);
    }

    [Theory]
    [InlineData(DType.F16, KvScaleMode.None)]
    [InlineData(DType.I4, KvScaleMode.None)]
    public void UpdatePages_CopiesTheGivenPagesOnly(DType dtype, KvScaleMode mode)
    {
        using var cache = NewCache(dtype, mode);
        using var before = NewCache(dtype, mode);
        using var after = NewCache(dtype, mode);
        var all = KvAppendPlan.ForAppend(new PageTable([0, 7], [0, 1, 2, 3, 4, 5, 6], [4], 4), [28], 7);
        cache.WriteTokens(all, Rows(28, 30), Rows(28, 31));
        for (int p = 0; p < 7; p++) before.CopyPageFrom(cache, p, p);
        using var device = _gpu.UploadKvCache(cache);
        var some = KvAppendPlan.Create(new PageTable([0, 3], [2, 3, 5], [4], 4), [0, 0, 0, 0, 0, 0], [0, 1, 4, 7, 8, 11], 7);
        cache.WriteTokens(some, Rows(6, 32), Rows(6, 33));   // pages 2, 3 and 5 change on the host
        for (int p = 0; p < 7; p++) after.CopyPageFrom(cache, p, p);
        device.Update([2, 5]);                               // page 3 is left out
        device.Download();
        var e = new float[64];
        var a = new float[64];
        for (int p = 0; p < 7; p++)
        {
            var expected = p is 2 or 5 ? after : before;
            for (int t = 0; t < 4; t++)
                for (int h = 0; h < 2; h++)
                {
                    expected.ReadKey(p, t, h, e);
                    cache.ReadKey(p, t, h, a);
                    Assert.True(e.Zip(a).All(z => z.First.Equals(z.Second)), $"page {p} slot {t} head {h} K");
                    expected.ReadValue(p, t, h, e);
                    cache.ReadValue(p, t, h, a);
                    Assert.True(e.Zip(a).All(z => z.First.Equals(z.Second)), $"page {p} slot {t} head {h} V");
                }
        }
        Assert.Contains("pages[1] = 7", Assert.Throws<ArgumentOutOfRangeException>(() => device.Update([0, 7])).Message);
    }

    [Fact]
    public void GpuConversions_MatchTheHostsBitForBit()
    {
        // The kernel's fp32 → fp16/bf16/fp8 conversions (integer RNE) against System.Half, BFloat16 and Float8, on random bit
        // patterns and on the codes' midpoints; NaN payloads may differ for fp16 only (both stay NaN).
        var midpoints = Enumerable.Range(0, 0x7BFF).Select(h => ((float)BitConverter.UInt16BitsToHalf((ushort)h) + (float)BitConverter.UInt16BitsToHalf((ushort)(h + 1))) / 2);
        foreach (float x in midpoints.Concat([65504f, 65519.99f, 65520f, 6.1035156e-5f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f]))
            Assert.Equal(BitConverter.HalfToUInt16Bits((Half)x), (ushort)KvAppendKernels.FloatToHalfBits(x));
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).Select(BitConverter.Int32BitsToSingle).ToArbitrary(), x =>
        {
            ushort h = BitConverter.HalfToUInt16Bits((Half)x);
            bool half = float.IsNaN(x) ? float.IsNaN((float)BitConverter.UInt16BitsToHalf((ushort)KvAppendKernels.FloatToHalfBits(x))) : h == KvAppendKernels.FloatToHalfBits(x);
            return half && ((BFloat16)x).Bits == KvAppendKernels.FloatToBf16Bits(x)
                && Float8.SingleToE4M3(x) == KvAppendKernels.FloatToE4M3(x) && Float8.SingleToE5M2(x) == KvAppendKernels.FloatToE5M2(x);
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(20000));
        for (int c = 0; c < 256; c++)
        {
            float e4 = Float8.E4M3ToSingle((byte)c), e5 = Float8.E5M2ToSingle((byte)c);
            if (!float.IsNaN(e4)) Assert.Equal(Float8.SingleToE4M3(e4), KvAppendKernels.FloatToE4M3(e4));
            if (!float.IsNaN(e5)) Assert.Equal(Float8.SingleToE5M2(e5), KvAppendKernels.FloatToE5M2(e5));
            if (c < 255 && !float.IsNaN(e4) && !float.IsNaN(Float8.E4M3ToSingle((byte)(c + 1))) && (c & 0x7F) != 0x7F)
            {
                float mid = (e4 + Float8.E4M3ToSingle((byte)(c + 1))) / 2; // a tie: to the even code
                Assert.Equal(Float8.SingleToE4M3(mid), KvAppendKernels.FloatToE4M3(mid));
            }
            if (c < 255 && float.IsFinite(e5) && float.IsFinite(Float8.E5M2ToSingle((byte)(c + 1))))
            {
                float mid = (e5 + Float8.E5M2ToSingle((byte)(c + 1))) / 2;
                Assert.Equal(Float8.SingleToE5M2(mid), KvAppendKernels.FloatToE5M2(mid));
            }
        }
    }
}
