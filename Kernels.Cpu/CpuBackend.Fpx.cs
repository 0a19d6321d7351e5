using Kernels.Cpu.Fpx;
using Kernels.Quant.Fpx;

namespace Kernels.Cpu;

public sealed partial class CpuBackend : IFpxOps
{
    /// <inheritdoc/>
    public PreparedFpxWeights Prepare(FpxWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ThrowIfDisposed();
        return new CpuPreparedFpx(this, weights, null);
    }

    /// <inheritdoc/>
    public PreparedFpxWeights Prepare(Int6Weights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ThrowIfDisposed();
        return new CpuPreparedFpx(this, null, weights);
    }

    /// <inheritdoc/>
    public void Gemm(PreparedFpxWeights weights, DeviceTensor<float> x, DeviceTensor<float> y, Int6Mode mode = Int6Mode.W6A16)
    {
        ArgumentNullException.ThrowIfNull(weights);
        int n = weights.Validate(this, x, y);
        ThrowIfDisposed();
        ReadOnlySpan<float> xs = ((CpuTensor<float>)x).Span;
        Span<float> ys = ((CpuTensor<float>)y).Span;
        if (weights.Fpx is { } f) FpxGemm.Gemm(f, xs, ys, n, Options);
        else if (mode == Int6Mode.W6A8) Int6Gemm.GemmW6A8(weights.Int6!, xs, ys, n, Options);
        else Int6Gemm.GemmW6A16(weights.Int6!, xs, ys, n, Options);
    }

    /// <summary>Host weights referenced in place (the CPU kernels read the packed planes directly).</summary>
    private sealed class CpuPreparedFpx(CpuBackend backend, FpxWeights? fpx, Int6Weights? int6) : PreparedFpxWeights(backend, fpx, int6)
    {
        protected override void Release()
        {
        }
    }
}
