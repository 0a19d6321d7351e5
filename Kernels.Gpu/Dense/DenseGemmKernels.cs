using ILGPU;
using ILGPU.Runtime;

namespace Kernels.Gpu.Dense;

/// <summary>ILGPU kernels for dense GEMM: y[j, r] = Σ_c w[r, c]·x[j, c] (fp32 accumulation).</summary>
/// <remarks>
/// One warp per output row, <see cref="WarpsPerGroup"/> rows per group, grid Y = activation vector j. Lanes stride over k
/// (coalesced), then a shuffle-down tree reduces the warp; lane 0 writes. Summation order differs from the CPU paths.
/// </remarks>
internal static class DenseGemmKernels
{
    public const int WarpsPerGroup = 4;

    public static void F32(ArrayView<float> w, ArrayView<float> x, ArrayView<float> y, int m, int k)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j = Grid.IdxY;
        if (r >= m) return;
        long wBase = (long)r * k, xBase = (long)j * k;
        float acc = 0;
        for (int c = Warp.LaneIdx; c < k; c += Warp.WarpSize) acc += w[wBase + c] * x[xBase + c];
        acc = WarpSum(acc);
        if (Warp.IsFirstLane) y[(long)j * m + r] = acc;
    }

    public static void Bf16(ArrayView<ushort> w, ArrayView<float> x, ArrayView<float> y, int m, int k)
    {
        int r = Grid.IdxX * WarpsPerGroup + Warp.WarpIdx;
        int j = Grid.IdxY;
        if (r >= m) return;
        long wBase = (long)r * k, xBase = (long)j * k;
        float acc = 0;
        for (int c = Warp.LaneIdx; c < k; c += Warp.WarpSize)
            acc += Interop.IntAsFloat((uint)w[wBase + c] << 16) * x[xBase + c];
        acc = WarpSum(acc);
        if (Warp.IsFirstLane) y[(long)j * m + r] = acc;
    }

    public static float WarpSum(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1) v += Warp.ShuffleDown(v, offset);
        return v;
    }
}

/// <summary>Loads the dense GEMM kernels once and launches them.</summary>
internal sealed class DenseGemmLauncher
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _f32;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, int, int> _bf16;
    private readonly int _groupSize;

    public DenseGemmLauncher(Accelerator accelerator)
    {
        _f32 = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(DenseGemmKernels.F32);
        _bf16 = accelerator.LoadKernel<ArrayView<ushort>, ArrayView<float>, ArrayView<float>, int, int>(DenseGemmKernels.Bf16);
        _groupSize = DenseGemmKernels.WarpsPerGroup * accelerator.WarpSize;
    }

    public void Launch(AcceleratorStream stream, DeviceTensor weights, ArrayView<float> x, ArrayView<float> y, int m, int k, int n)
    {
        var config = new KernelConfig(new Index2D((m + DenseGemmKernels.WarpsPerGroup - 1) / DenseGemmKernels.WarpsPerGroup, n), new Index2D(_groupSize, 1));
        if (weights is GpuTensor<float> wf) _f32(stream, config, wf.View, x, y, m, k);
        else _bf16(stream, config, ((ArrayView<BFloat16>)((GpuTensor<BFloat16>)weights).View).Cast<ushort>(), x, y, m, k);
    }
}
