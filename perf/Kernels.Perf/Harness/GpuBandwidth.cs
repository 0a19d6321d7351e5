using ILGPU;
using ILGPU.Runtime;
using Kernels.Gpu;

namespace Kernels.Perf.Harness;

/// <summary>Measures the GPU's device-memory read bandwidth: a grid-stride sum over a 2 GiB buffer read as 8-byte words.</summary>
public static class GpuBandwidth
{
    private static void ReadKernel(ArrayView<ulong> data, ArrayView<ulong> sink)
    {
        ulong acc = 0;
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < data.Length; i += stride) acc ^= data[i];
        if (acc == 0x5EED) sink[0] = acc; // never true for zeroed memory: keeps the loads alive without a write per thread
    }

    /// <summary>Best of several passes, bytes/s.</summary>
    public static double MeasureRead(GpuBackend gpu, long bytes = 2L << 30, int passes = 10)
    {
        var acc = gpu.Accelerator;
        using var data = acc.Allocate1D<ulong>(bytes / 8);
        using var sink = acc.Allocate1D<ulong>(1);
        data.MemSetToZero();
        var kernel = acc.LoadKernel<ArrayView<ulong>, ArrayView<ulong>>(ReadKernel);
        var config = new KernelConfig(acc.NumMultiprocessors * 8, 256);
        kernel(acc.DefaultStream, config, data.View, sink.View);
        acc.Synchronize();
        double best = 0;
        for (int p = 0; p < passes; p++)
        {
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            kernel(acc.DefaultStream, config, data.View, sink.View);
            acc.Synchronize();
            best = Math.Max(best, bytes / System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        return best;
    }
}
