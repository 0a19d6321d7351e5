using ILGPU;
using ILGPU.Runtime;
using Kernels.Gpu.Fpx;
using Kernels.Quant.Fpx;

namespace Kernels.Gpu;

public sealed partial class GpuBackend : IFpxOps
{
    private FpxGemmLauncher? _fpx;

    // Loaded once per backend on first use; launchers hold no device memory.
    private FpxGemmLauncher FpxLauncher => _fpx ??= new FpxGemmLauncher(Accelerator);

    /// <inheritdoc/>
    public PreparedFpxWeights Prepare(FpxWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Wrap(() => new GpuPreparedFpx(this, weights, null, weights.HighBits, weights.LowBits, weights.Scales));
    }

    /// <inheritdoc/>
    public PreparedFpxWeights Prepare(Int6Weights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Wrap(() => new GpuPreparedFpx(this, null, weights, weights.HighBits, weights.LowBits, weights.Scales));
    }

    /// <inheritdoc/>
    public void Gemm(PreparedFpxWeights weights, DeviceTensor<float> x, DeviceTensor<float> y, Int6Mode mode = Int6Mode.W6A16)
    {
        ArgumentNullException.ThrowIfNull(weights);
        int n = weights.Validate(this, x, y);
        ThrowIfDisposed();
        DenseGemmContract.ThrowIfSameTensor(x, y, nameof(x), nameof(y));
        int m = weights.Rows, k = weights.Columns;
        if (m == 0 || n == 0) return;
        var w = (GpuPreparedFpx)weights;
        var xv = ((GpuTensor<float>)x).View;
        var yv = ((GpuTensor<float>)y).View;
        int kPad = FpxPacking.PaddedColumns(k);
        Wrap(() =>
        {
            if (w.Fpx is { } f)
            {
                FpxLauncher.Gemm(Stream, w.High.View, w.Low.View, w.Scales.View, xv, w.ExponentScratch(n), yv, m, k, kPad, n,
                    f.Format == FpxFormat.Fp5E2M2 ? 1 : 0, 64);
            }
            else if (mode == Int6Mode.W6A16)
            {
                FpxLauncher.Gemm(Stream, w.High.View, w.Low.View, w.Scales.View, xv, w.ExponentScratch(1), yv, m, k, kPad, n, 2, w.Int6!.GroupSize);
            }
            else
            {
                var (xq, xs) = w.ActivationScratch(n * k, n);
                FpxLauncher.GemmW6A8(Stream, w.High.View, w.Low.View, w.Scales.View, xv, xq, xs, yv, m, k, kPad, n, w.Int6!.GroupSize);
            }
            return 0;
        });
    }

    private sealed class GpuPreparedFpx : PreparedFpxWeights
    {
        private readonly GpuBackend _gpu;
        private MemoryBuffer1D<sbyte, Stride1D.Dense>? _xq;
        private MemoryBuffer1D<float, Stride1D.Dense>? _xs;
        private MemoryBuffer1D<int, Stride1D.Dense>? _exps;

        public GpuPreparedFpx(GpuBackend gpu, FpxWeights? fpx, Int6Weights? int6, ReadOnlySpan<byte> high, ReadOnlySpan<byte> low, ReadOnlySpan<float> scales)
            : base(gpu, fpx, int6)
        {
            _gpu = gpu;
            var acc = gpu.Accelerator;
            High = acc.Allocate1D<byte>(Math.Max(1, high.Length));
            Low = acc.Allocate1D<byte>(Math.Max(1, low.Length));
            Scales = acc.Allocate1D<float>(Math.Max(1, scales.Length));
            if (!high.IsEmpty) High.View.SubView(0, high.Length).CopyFromCPU(gpu.Stream, high);
            if (!low.IsEmpty) Low.View.SubView(0, low.Length).CopyFromCPU(gpu.Stream, low);
            if (!scales.IsEmpty) Scales.View.SubView(0, scales.Length).CopyFromCPU(gpu.Stream, scales);
            gpu.Stream.Synchronize();
        }

        public MemoryBuffer1D<byte, Stride1D.Dense> High { get; }

        public MemoryBuffer1D<byte, Stride1D.Dense> Low { get; }

        public MemoryBuffer1D<float, Stride1D.Dense> Scales { get; }

        // Int8 activations and their scales for W6A8, grown on demand and reused across calls (no per-call allocation in steady state).
        public (ArrayView<sbyte>, ArrayView<float>) ActivationScratch(int values, int tokens)
        {
            if (_xq is null || _xq.Length < values)
            {
                _gpu.Stream.Synchronize();
                _xq?.Dispose();
                _xq = _gpu.Accelerator.Allocate1D<sbyte>(Math.Max(1, values));
            }
            if (_xs is null || _xs.Length < tokens)
            {
                _gpu.Stream.Synchronize();
                _xs?.Dispose();
                _xs = _gpu.Accelerator.Allocate1D<float>(Math.Max(1, tokens));
            }
            return (_xq.View, _xs.View);
        }

        // FP6/FP5 per-token activation exponents (n ints), grown on demand and reused across calls.
        public ArrayView<int> ExponentScratch(int tokens)
        {
            if (_exps is null || _exps.Length < tokens)
            {
                _gpu.Stream.Synchronize();
                _exps?.Dispose();
                _exps = _gpu.Accelerator.Allocate1D<int>(Math.Max(1, tokens));
            }
            return _exps.View;
        }

        protected override void Release()
        {
            if (_gpu._disposed) return; // the accelerator already released its buffers
            _gpu.Stream.Synchronize();
            High.Dispose();
            Low.Dispose();
            Scales.Dispose();
            _xq?.Dispose();
            _xs?.Dispose();
            _exps?.Dispose();
        }
    }
}
