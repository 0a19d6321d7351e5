using ILGPU;
using ILGPU.Runtime;
using Kernels.Gpu.DFloat11;
using Kernels.Quant.DFloat11;

namespace Kernels.Gpu;

public sealed partial class GpuBackend : IDFloat11Ops
{
    private DFloat11Launcher? _dfloat11;

    /// <inheritdoc/>
    /// <remarks>Copies LUTs, stream (with its zero padding), sign/mantissa bytes, positions and gaps to the device. The
    /// tensor was validated when it was created, so the kernel can trust the sizes and LUT structure.</remarks>
    public IDFloat11Weights Upload(DFloat11Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Wrap(() => new GpuDFloat11Weights(this, tensor));
    }

    /// <inheritdoc/>
    public void Decompress(IDFloat11Weights weights, DeviceTensor<BFloat16> destination)
    {
        var w = OwnDFloat11Weights(weights);
        ArgumentNullException.ThrowIfNull(destination);
        DenseGemmContract.RequireBackend(this, destination, nameof(destination));
        ThrowHelper.ThrowIfLengthMismatch(nameof(destination), destination.Shape.ElementCount, w.ElementCount);
        if (w.ElementCount == 0) return;
        _dfloat11 ??= Own(new DFloat11Launcher(Accelerator));
        Wrap(() =>
        {
            _dfloat11.Launch(Stream, w, ((ArrayView<BFloat16>)((GpuTensor<BFloat16>)destination).View).Cast<ushort>());
            return 0;
        });
    }

    /// <inheritdoc/>
    /// <remarks>Decompresses into one launcher-owned bf16 buffer (grown to the largest weight seen, reused across calls and
    /// layers, as DFloat11 does per transformer block), then runs the dense bf16 GEMM kernel on it.</remarks>
    public void Gemm(IDFloat11Weights weights, DeviceTensor<float> x, DeviceTensor<float> y)
    {
        var w = OwnDFloat11Weights(weights);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(y);
        DenseGemmContract.RequireBackend(this, x, nameof(x));
        DenseGemmContract.RequireBackend(this, y, nameof(y));
        var (m, k, n) = DenseGemmContract.Validate(w.Shape, x.Shape, y.Shape);
        DenseGemmContract.ThrowIfSameTensor(x, y, nameof(x), nameof(y));
        if (m == 0 || n == 0) return;
        _dfloat11 ??= Own(new DFloat11Launcher(Accelerator));
        Wrap(() =>
        {
            _dfloat11.LaunchGemm(Stream, w, ((GpuTensor<float>)x).View, ((GpuTensor<float>)y).View, m, k, n);
            return 0;
        });
    }

    /// <summary>For tests: lets the DFloat11 decoder stage outputs in shared memory (default) or write directly.</summary>
    internal bool DFloat11AllowStaging
    {
        get => _dfloat11?.AllowStaging ?? true;
        set => (_dfloat11 ??= Own(new DFloat11Launcher(Accelerator))).AllowStaging = value;
    }

    private GpuDFloat11Weights OwnDFloat11Weights(IDFloat11Weights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        if (weights is not GpuDFloat11Weights w || !ReferenceEquals(w.Backend, this))
            throw new ArgumentException("weights were uploaded to another backend; upload them to this one.", nameof(weights));
        ObjectDisposedException.ThrowIf(w.IsDisposed, w);
        ThrowIfDisposed();
        return w;
    }
}

/// <summary>A DFloat11 tensor's arrays in device memory.</summary>
internal sealed class GpuDFloat11Weights : IDFloat11Weights
{
    public GpuDFloat11Weights(GpuBackend backend, DFloat11Tensor source)
    {
        Backend = backend;
        Source = source;
        var acc = backend.Accelerator;
        Luts = acc.Allocate1D(source.Luts.ToArray());
        Codes = acc.Allocate1D(source.PaddedEncodedExponents.ToArray());
        SignMantissa = acc.Allocate1D(source.ElementCount == 0 ? new byte[1] : source.SignMantissa.ToArray());
        Positions = acc.Allocate1D(source.OutputPositions.ToArray());
        Gaps = acc.Allocate1D(source.Gaps.Length == 0 ? new byte[1] : source.Gaps.ToArray());
        var p = source.OutputPositions;
        for (int b = 0; b + 1 < p.Length; b++) MaxBlockElements = Math.Max(MaxBlockElements, (int)(p[b + 1] - p[b]));
    }

    /// <summary>The most elements any block decodes (sizes the shared-memory staging buffer).</summary>
    public int MaxBlockElements { get; }

    public GpuBackend Backend { get; }

    public DFloat11Tensor Source { get; }

    public TensorShape Shape => Source.Shape;

    public int ElementCount => Source.ElementCount;

    public int BlockCount => Source.BlockCount;

    public int LutBytes => Source.Luts.Length;

    public int EncodedBytes => Source.EncodedByteCount;

    public MemoryBuffer1D<byte, Stride1D.Dense> Luts { get; }

    public MemoryBuffer1D<byte, Stride1D.Dense> Codes { get; }

    public MemoryBuffer1D<byte, Stride1D.Dense> SignMantissa { get; }

    public MemoryBuffer1D<uint, Stride1D.Dense> Positions { get; }

    public MemoryBuffer1D<byte, Stride1D.Dense> Gaps { get; }

    public bool IsDisposed { get; private set; }

    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Luts.Dispose();
        Codes.Dispose();
        SignMantissa.Dispose();
        Positions.Dispose();
        Gaps.Dispose();
    }
}
