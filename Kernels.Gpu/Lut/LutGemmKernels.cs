using ILGPU;
using ILGPU.Runtime;

namespace Kernels.Gpu.Lut;

/// <summary>ILGPU LUT-GEMM kernel over the CPU's packed bit-plane layout (<see cref="Quant.Lut.BitPlanePacking"/>).</summary>
/// <remarks>
/// <para>One group per (64-row tile, activation vector), shaped <c>64 × S</c>: thread <c>(t, s)</c> owns byte position
/// <c>t</c> of every 64-byte vector, i.e. row <c>RowOfPosition(t)</c> (so each warp reads 32 consecutive bytes), for the
/// groups along k with <c>g mod S = s</c> (a k-split inside the group, S ≤ 16). Per round of S groups the threads of slice
/// s reduce their group's sum and table scale (one thread per 4-group, then a broadcast reduction from shared memory), build
/// its 16-entry tables in shared memory (fp32, or int8-quantized values with T-MAC's per-group scale), synchronise, then
/// look up 2 nibbles per byte. Sums are exact integers (int8 mode) or fp32 in lookup order (exact mode); the epilogue is
/// <c>acc += s·½lutScale·Σ + o·X_g</c> per group. At the end slice 0 adds the S partial results in slice order, so the
/// result is deterministic for a given S (rounding order differs from the CPU; the bound is the same).</para>
/// </remarks>
internal static class LutGemmKernels
{
    public const int TileRows = 64;
    public const int MaxSlices = 16;
    private const int MaxFourGroups = 128 / 4;
    private const int MaxTableEntries = MaxFourGroups * 16;

    public static void Gemm(ArrayView<byte> planes, ArrayView<ushort> scales, ArrayView<ushort> offsets,
        ArrayView<float> x, ArrayView<float> y, int m, int k, int bits, int groupSize, int int8)
    {
        // Sizes are separate ints: ILGPU's CPU accelerator cannot load an internal parameter struct.
        int groups = k / groupSize;
        var tables = SharedMemory.Allocate<float>(MaxSlices * MaxTableEntries);
        var partialSum = SharedMemory.Allocate<float>(MaxSlices * MaxFourGroups);
        var partialAbs = SharedMemory.Allocate<float>(MaxSlices * MaxFourGroups);
        var results = SharedMemory.Allocate<float>(MaxSlices * TileRows);
        int tile = Grid.IdxX, j = Grid.IdxY, pos = Group.IdxX, slice = Group.IdxY, slices = Group.DimY;
        int lane = pos >> 4, slot = pos & 15, h = slot & 7;
        int rowInTile = (slot >> 3) * 32 + (h & 1) * 16 + lane * 4 + (h >> 1);
        int pairs = groupSize / 8, kgPerGroup = groupSize / 4;
        int tb = slice * MaxTableEntries, pb = slice * MaxFourGroups;
        long xBase = (long)j * k;
        long wBase = (long)tile * groups * pairs * bits * 64;
        float acc = 0;
        for (int g0 = 0; g0 < groups; g0 += slices)
        {
            int g = g0 + slice;
            bool active = g < groups;
            long xg = xBase + (long)g * groupSize;
            Group.Barrier(); // the previous round's lookups are done before the tables are overwritten
            if (active && pos < kgPerGroup)
            {
                // One thread per 4-group: its sum and Σ|x_j| (coalesced loads).
                long c = xg + pos * 4;
                float x0 = x[c], x1 = x[c + 1], x2 = x[c + 2], x3 = x[c + 3];
                partialSum[pb + pos] = ((x0 + x1) + x2) + x3;
                partialAbs[pb + pos] = ((Abs(x0) + Abs(x1)) + Abs(x2)) + Abs(x3);
            }
            Group.Barrier();
            // Every thread of the slice reduces the ≤ 32 partials itself (broadcast reads), which saves a barrier.
            float groupSum = 0, maxAbs = 0;
            if (active)
            {
                for (int q = 0; q < kgPerGroup; q++)
                {
                    groupSum += partialSum[pb + q];
                    float a = partialAbs[pb + q];
                    if (a > maxAbs) maxAbs = a;
                }
            }
            float lutScale = maxAbs / 127f;
            float inv = lutScale == 0 ? 0 : 1f / lutScale;
            if (active)
            {
                for (int e = pos; e < kgPerGroup * 16; e += TileRows)
                {
                    int kg = e >> 4, idx = e & 15;
                    long c = xg + kg * 4;
                    float v = (idx & 1) != 0 ? x[c] : -x[c];
                    v += (idx & 2) != 0 ? x[c + 1] : -x[c + 1];
                    v += (idx & 4) != 0 ? x[c + 2] : -x[c + 2];
                    v += (idx & 8) != 0 ? x[c + 3] : -x[c + 3];
                    // inv is +Inf when lutScale < 2^-128 (tiny activations): divide then, as the CPU table builder does.
                    tables[tb + e] = int8 != 0 ? RoundClamp127(inv > float.MaxValue ? v / lutScale : v * inv) : v;
                }
            }
            Group.Barrier();
            if (active)
            {
                long gBase = wBase + (long)g * pairs * bits * 64 + pos;
                float dot = 0;
                int isum = 0;
                // Plane bytes e = pr·bits + i in order, eight loads issued before the first lookup (a loop of load then
                // lookup has one load in flight per thread: on an H100 this kernel, then with up to 8 slices, ran W4 GEMV
                // 4096² at 84.8 µs that way on 2026-11-22, 0.23× dense bf16). The lookups and sums keep their order, so results are unchanged.
                int total = pairs * bits, pr = 0, bit = 0, e = 0;
                for (; e + 8 <= total; e += 8)
                {
                    long b = gBase + (long)e * 64;
                    int v0 = planes[b], v1 = planes[b + 64], v2 = planes[b + 128], v3 = planes[b + 192];
                    int v4 = planes[b + 256], v5 = planes[b + 320], v6 = planes[b + 384], v7 = planes[b + 448];
                    Lookup(tables, tb, v0, int8, bits, ref pr, ref bit, ref dot, ref isum);
                    Lookup(tables, tb, v1, int8, bits, ref pr, ref bit, ref dot, ref isum);
                    Lookup(tables, tb, v2, int8, bits, ref pr, ref bit, ref dot, ref isum);
                    Lookup(tables, tb, v3, int8, bits, ref pr, ref bit, ref dot, ref isum);
                    Lookup(tables, tb, v4, int8, bits, ref pr, ref bit, ref dot, ref isum);
                    Lookup(tables, tb, v5, int8, bits, ref pr, ref bit, ref dot, ref isum);
                    Lookup(tables, tb, v6, int8, bits, ref pr, ref bit, ref dot, ref isum);
                    Lookup(tables, tb, v7, int8, bits, ref pr, ref bit, ref dot, ref isum);
                }
                for (; e < total; e++)
                    Lookup(tables, tb, planes[gBase + (long)e * 64], int8, bits, ref pr, ref bit, ref dot, ref isum);
                long si = ((long)tile * groups + g) * 64 + rowInTile;
                float s = Interop.IntAsFloat((uint)scales[si] << 16), o = Interop.IntAsFloat((uint)offsets[si] << 16);
                acc += int8 != 0 ? isum * (s * (0.5f * lutScale)) : dot * (s * 0.5f);
                acc += o * groupSum;
            }
        }
        results[slice * TileRows + pos] = acc;
        Group.Barrier();
        int row = tile * TileRows + rowInTile;
        if (slice == 0 && row < m)
        {
            float total = 0;
            for (int q = 0; q < slices; q++) total += results[q * TileRows + pos];
            y[(long)j * m + row] = total;
        }
    }

    /// <summary>Adds plane byte <paramref name="v"/> (bit plane <paramref name="bit"/> of 4-group pair <paramref name="pr"/>)
    /// looked up in the pair's two 16-entry tables, weighted 2^bit, then steps to the next (pair, bit).</summary>
    private static void Lookup(ArrayView<float> tables, int tb, int v, int int8, int bits, ref int pr, ref int bit, ref float dot, ref int isum)
    {
        float lo = tables[tb + pr * 32 + (v & 15)], hi = tables[tb + pr * 32 + 16 + (v >> 4)];
        if (int8 != 0) isum += ((int)lo + (int)hi) << bit;
        else dot += (lo + hi) * (1 << bit);
        if (++bit == bits)
        {
            bit = 0;
            pr++;
        }
    }

    private static float Abs(float v) => v < 0 ? -v : v;

    /// <summary>Round half to even, clamped to ±127 (matches the CPU's int8 table entries).</summary>
    private static float RoundClamp127(float v)
    {
        float r = (float)(int)(v + (v >= 0 ? 0.5f : -0.5f)); // round half away from zero
        float diff = r - v;
        if ((diff == 0.5f || diff == -0.5f) && ((int)r & 1) != 0) r -= diff > 0 ? 1 : -1; // ties → even
        return r > 127 ? 127 : r < -127 ? -127 : r;
    }
}

/// <summary>Loads the LUT kernel once and launches it.</summary>
internal sealed class LutGemmLauncher
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, int, int, int, int, int> _gemm;

    private LutGemmLauncher(Accelerator accelerator) =>
        _gemm = accelerator.LoadKernel<ArrayView<byte>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(LutGemmKernels.Gemm);

    private readonly int _maxSlices;

    /// <summary>k-slices per group: up to 16 on a GPU (1024 threads), 2 on the CPU simulator (one OS thread per GPU thread).</summary>
    public LutGemmLauncher(Accelerator accelerator, bool simulator) : this(accelerator) =>
        _maxSlices = simulator ? 2 : LutGemmKernels.MaxSlices;

    public void Launch(AcceleratorStream stream, ArrayView<byte> planes, ArrayView<ushort> scales, ArrayView<ushort> offsets,
        ArrayView<float> x, ArrayView<float> y, int tiles, int n, int m, int k, int bits, int groupSize, bool int8)
    {
        int slices = Math.Clamp(k / groupSize, 1, _maxSlices);
        _gemm(stream, new KernelConfig(new Index2D(tiles, n), new Index2D(LutGemmKernels.TileRows, slices)), planes, scales, offsets, x, y,
            m, k, bits, groupSize, int8 ? 1 : 0);
    }
}
