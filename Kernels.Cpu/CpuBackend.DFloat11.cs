using Kernels.Cpu.DFloat11;
using Kernels.Quant.DFloat11;

namespace Kernels.Cpu;

public sealed partial class CpuBackend : IDFloat11Ops
{
    /// <inheritdoc/>
    /// <remarks>On the CPU the weights reference the tensor's arrays; nothing is copied.</remarks>
    public IDFloat11Weights Upload(DFloat11Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ThrowIfDisposed();
        return new CpuDFloat11Weights(this, tensor);
    }

    /// <inheritdoc/>
    public void Decompress(IDFloat11Weights weights, DeviceTensor<BFloat16> destination)
    {
        var w = OwnDFloat11(weights);
        ArgumentNullException.ThrowIfNull(destination);
        DenseGemmContract.RequireBackend(this, destination, nameof(destination));
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Shape.ElementCount, w.Source.ElementCount);
        DFloat11Decoder.Decompress(w.Source, ((CpuTensor<BFloat16>)destination).Span, Options);
    }

    /// <inheritdoc/>
    public void Gemm(IDFloat11Weights weights, DeviceTensor<float> x, DeviceTensor<float> y)
    {
        var w = OwnDFloat11(weights);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(y);
        DenseGemmContract.RequireBackend(this, x, nameof(x));
        DenseGemmContract.RequireBackend(this, y, nameof(y));
        var (m, k, n) = DenseGemmContract.Validate(w.Shape, x.Shape, y.Shape);
        DFloat11Decoder.Gemm(w.Source, ((CpuTensor<float>)x).Span, ((CpuTensor<float>)y).Span, m, k, n, Options);
    }

    private CpuDFloat11Weights OwnDFloat11(IDFloat11Weights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        if (weights is not CpuDFloat11Weights w || !ReferenceEquals(w.Backend, this))
            throw new ArgumentException("weights were uploaded to another backend; upload them to this one.", nameof(weights));
        ObjectDisposedException.ThrowIf(w.IsDisposed, w);
        ThrowIfDisposed();
        return w;
    }

    private sealed class CpuDFloat11Weights(CpuBackend backend, DFloat11Tensor source) : IDFloat11Weights
    {
        public CpuBackend Backend { get; } = backend;

        public DFloat11Tensor Source { get; } = source;

        public TensorShape Shape => Source.Shape;

        public bool IsDisposed { get; private set; }

        public void Dispose() => IsDisposed = true;
    }
}
