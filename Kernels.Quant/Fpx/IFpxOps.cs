namespace Kernels.Quant.Fpx;

/// <summary>How INT6 weights meet the activations.</summary>
public enum Int6Mode
{
    /// <summary>W6A16: fp32 activations, fp32 multiply-add of the dequantized weights.</summary>
    W6A16,

    /// <summary>W6A8: activations quantized per token to int8 (<c>scale = max|x|/127</c>), exact integer group dots.</summary>
    W6A8,
}

/// <summary>FP6/FP5 and INT6 weight-only quantized GEMM on a backend (CPU or GPU), behind one interface.</summary>
/// <remarks>
/// Weights are uploaded once with <see cref="Prepare(FpxWeights)"/> / <see cref="Prepare(Int6Weights)"/>; the returned object
/// is owned by the caller and must be disposed before the backend. Layout as in <see cref="IDenseOps"/>: x <c>[n, k]</c>,
/// y <c>[n, m]</c>. Semantics and error bounds are those of <c>FpxGemm</c> / <c>Int6Gemm</c> (CPU) and the oracle
/// <see cref="Reference.FpxReference"/>.
/// </remarks>
public interface IFpxOps
{
    /// <summary>Uploads FP6/FP5 weights to the backend (the CPU backend keeps a reference, zero copy).</summary>
    /// <param name="weights">The packed weights.</param>
    /// <returns>Backend-owned prepared weights; dispose them when done.</returns>
    PreparedFpxWeights Prepare(FpxWeights weights);

    /// <summary>Uploads INT6 weights to the backend.</summary>
    /// <param name="weights">The packed weights.</param>
    /// <returns>Backend-owned prepared weights; dispose them when done.</returns>
    PreparedFpxWeights Prepare(Int6Weights weights);

    /// <summary>Computes <c>y = x · Wᵀ</c>.</summary>
    /// <param name="weights">Prepared weights <c>[m, k]</c> from this backend.</param>
    /// <param name="x"><c>[n, k]</c> activations.</param>
    /// <param name="y"><c>[n, m]</c> output, overwritten.</param>
    /// <param name="mode">For INT6 weights: W6A16 or W6A8 (ignored for FP6/FP5).</param>
    /// <exception cref="ArgumentException">Shapes do not match, or a tensor or the weights belong to another backend.</exception>
    /// <exception cref="ObjectDisposedException">The weights or a tensor were disposed.</exception>
    void Gemm(PreparedFpxWeights weights, DeviceTensor<float> x, DeviceTensor<float> y, Int6Mode mode = Int6Mode.W6A16);
}

/// <summary>FP6/FP5 or INT6 weights resident on a backend. Created by <see cref="IFpxOps.Prepare(FpxWeights)"/>.</summary>
public abstract class PreparedFpxWeights : IDisposable
{
    /// <summary>Creates the handle.</summary>
    /// <param name="backend">The owning backend.</param>
    /// <param name="fpx">FP6/FP5 weights, or null.</param>
    /// <param name="int6">INT6 weights, or null.</param>
    protected PreparedFpxWeights(IKernelBackend backend, FpxWeights? fpx, Int6Weights? int6)
    {
        Backend = backend;
        Fpx = fpx;
        Int6 = int6;
        Rows = fpx?.Rows ?? int6!.Rows;
        Columns = fpx?.Columns ?? int6!.Columns;
    }

    /// <summary>The backend holding the weights.</summary>
    public IKernelBackend Backend { get; }

    /// <summary>The host FP6/FP5 weights (null for INT6).</summary>
    public FpxWeights? Fpx { get; }

    /// <summary>The host INT6 weights (null for FP6/FP5).</summary>
    public Int6Weights? Int6 { get; }

    /// <summary>Output features (m).</summary>
    public int Rows { get; }

    /// <summary>Reduction length (k).</summary>
    public int Columns { get; }

    /// <summary>True after <see cref="Dispose"/>.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Validates a GEMM call against these weights and returns n.</summary>
    /// <param name="backend">The backend running the op.</param>
    /// <param name="x">Activations <c>[n, k]</c>.</param>
    /// <param name="y">Output <c>[n, m]</c>.</param>
    /// <returns>The number of activation vectors.</returns>
    /// <exception cref="ArgumentException">A shape or backend mismatch.</exception>
    /// <exception cref="ObjectDisposedException">Something was disposed.</exception>
    public int Validate(IKernelBackend backend, DeviceTensor<float> x, DeviceTensor<float> y)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(y);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (!ReferenceEquals(Backend, backend))
            ThrowHelper.Argument("weights", $"weights were prepared on backend '{Backend.Name}' but the op runs on '{backend.Name}'.");
        DenseGemmContract.RequireBackend(backend, x, nameof(x));
        DenseGemmContract.RequireBackend(backend, y, nameof(y));
        var (_, _, n) = DenseGemmContract.Validate(new TensorShape(Rows, Columns), x.Shape, y.Shape);
        return n;
    }

    /// <summary>Releases the device copy (idempotent).</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Release();
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees backend resources.</summary>
    protected abstract void Release();
}
