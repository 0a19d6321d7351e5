using ILGPU;
using ILGPU.Runtime;
using Kernels.Gpu.Lut;
using Kernels.Quant.Lut;

namespace Kernels.Gpu;

public sealed partial class GpuBackend : ILutGemmOps
{
    private LutGemmLauncher? _lut;

    /// <inheritdoc/>
    public ILutPreparedWeights PrepareLut(LutWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Wrap(() => new GpuLutWeights(this, weights));
    }

    /// <inheritdoc/>
    public void LutGemm(ILutPreparedWeights weights, DeviceTensor<float> x, DeviceTensor<float> y, LutGemmOptions? options = null)
    {
        int n = LutGemmContract.Validate(this, weights, x, y);
        var w = (GpuLutWeights)weights;
        ObjectDisposedException.ThrowIf(w.IsDisposed, w);
        ThrowIfDisposed();
        DenseGemmContract.ThrowIfSameTensor(x, y, nameof(x), nameof(y));
        if (w.M == 0 || n == 0) return;
        _lut ??= new LutGemmLauncher(Accelerator, IsCpuSimulator);
        bool int8 = (options ?? LutGemmOptions.Default).TableMode == LutTableMode.Int8;
        Wrap(() =>
        {
            _lut.Launch(Stream, w.Planes.View, w.Scales.View, w.Offsets.View, ((GpuTensor<float>)x).View, ((GpuTensor<float>)y).View, w.Tiles, n, w.M, w.K, w.Format.Bits, w.Format.GroupSize, int8);
            return 0;
        });
    }

    /// <summary>LUT weights in device memory: the packed planes, scales and offsets, uploaded once.</summary>
    private sealed class GpuLutWeights : ILutPreparedWeights
    {
        public GpuLutWeights(GpuBackend backend, LutWeights weights)
        {
            Backend = backend;
            Format = weights.Format;
            M = weights.M;
            K = weights.K;
            Tiles = weights.Tiles;
            var acc = backend.Accelerator;
            Planes = acc.Allocate1D<byte>(Math.Max(1, weights.Planes.LongLength));
            Scales = acc.Allocate1D<ushort>(Math.Max(1, weights.Scales.LongLength));
            Offsets = acc.Allocate1D<ushort>(Math.Max(1, weights.Offsets.LongLength));
            if (weights.Planes.Length > 0) Planes.View.SubView(0, weights.Planes.LongLength).CopyFromCPU(backend.Stream, weights.Planes);
            if (weights.Scales.Length > 0)
            {
                Scales.View.SubView(0, weights.Scales.LongLength).CopyFromCPU(backend.Stream, System.Runtime.InteropServices.MemoryMarshal.Cast<BFloat16, ushort>(weights.Scales.AsSpan()));
                Offsets.View.SubView(0, weights.Offsets.LongLength).CopyFromCPU(backend.Stream, System.Runtime.InteropServices.MemoryMarshal.Cast<BFloat16, ushort>(weights.Offsets.AsSpan()));
            }
            backend.Stream.Synchronize();
        }

        public MemoryBuffer1D<byte, Stride1D.Dense> Planes { get; }

        public MemoryBuffer1D<ushort, Stride1D.Dense> Scales { get; }

        public MemoryBuffer1D<ushort, Stride1D.Dense> Offsets { get; }

        public int Tiles { get; }

        public bool IsDisposed { get; private set; }

        public IKernelBackend Backend { get; }

        public LutFormat Format { get; }

        public int M { get; }

        public int K { get; }

        public void Dispose()
        {
            if (IsDisposed) return;
            IsDisposed = true;
            Planes.Dispose();
            Scales.Dispose();
            Offsets.Dispose();
        }
    }
}
