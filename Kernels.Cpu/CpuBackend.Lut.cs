using Kernels.Cpu.Lut;
using Kernels.Quant.Lut;

namespace Kernels.Cpu;

public sealed partial class CpuBackend : ILutGemmOps
{
    /// <inheritdoc/>
    public ILutPreparedWeights PrepareLut(LutWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ThrowIfDisposed();
        return new CpuLutWeights(this, weights);
    }

    /// <inheritdoc/>
    public void LutGemm(ILutPreparedWeights weights, DeviceTensor<float> x, DeviceTensor<float> y, LutGemmOptions? options = null)
    {
        int n = LutGemmContract.Validate(this, weights, x, y);
        var w = (CpuLutWeights)weights;
        ObjectDisposedException.ThrowIf(w.IsDisposed, w);
        ThrowIfDisposed();
        Lut.LutGemm.Gemm(w.Weights, ((CpuTensor<float>)x).Span, ((CpuTensor<float>)y).Span, n, options, Options);
    }

    /// <summary>LUT weights on the CPU: a reference to the packed host arrays (no copy).</summary>
    private sealed class CpuLutWeights(CpuBackend backend, LutWeights weights) : ILutPreparedWeights
    {
        public LutWeights Weights { get; } = weights;

        public bool IsDisposed { get; private set; }

        public IKernelBackend Backend => backend;

        public LutFormat Format => Weights.Format;

        public int M => Weights.M;

        public int K => Weights.K;

        public void Dispose() => IsDisposed = true;
    }
}
