namespace Kernels;

/// <summary>Dense matrix products: the baseline every low-bit format is measured against.</summary>
/// <remarks>
/// Layout: <c>weights</c> is <c>[m, k]</c> row-major (F32 or BF16); <c>x</c> is <c>[n, k]</c> (n activation vectors,
/// each contiguous, i.e. the k×n operand stored column-major); <c>y</c> is <c>[n, m]</c>.
/// <c>y[j, r] = Σ_c weights[r, c] · x[j, c]</c>, accumulated in fp32. This is <c>nn.Linear</c>'s <c>Y = X·Wᵀ</c>.
/// </remarks>
public interface IDenseOps
{
    /// <summary>Computes <c>y = x · weightsᵀ</c> (GEMV when n = 1).</summary>
    /// <param name="weights"><c>[m, k]</c>, F32 or BF16.</param>
    /// <param name="x"><c>[n, k]</c> activations.</param>
    /// <param name="y"><c>[n, m]</c> output, overwritten.</param>
    /// <exception cref="ArgumentException">Shapes or dtypes do not match (the message names them), or a tensor belongs to another backend.</exception>
    /// <exception cref="ObjectDisposedException">A tensor was disposed.</exception>
    void Gemm(DeviceTensor weights, DeviceTensor<float> x, DeviceTensor<float> y);
}

/// <summary>Shape checks shared by every implementation of <see cref="IDenseOps"/>.</summary>
public static class DenseGemmContract
{
    /// <summary>Validates a dense GEMM call and returns (m, k, n).</summary>
    /// <param name="backend">The backend the call runs on.</param>
    /// <param name="weights">Weights <c>[m, k]</c>, F32 or BF16.</param>
    /// <param name="x">Activations <c>[n, k]</c>.</param>
    /// <param name="y">Output <c>[n, m]</c>.</param>
    /// <returns>The problem size.</returns>
    /// <exception cref="ArgumentException">A rank, shape, dtype or backend mismatch.</exception>
    public static (int M, int K, int N) Validate(IKernelBackend backend, DeviceTensor weights, DeviceTensor x, DeviceTensor y)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(y);
        RequireBackend(backend, weights, nameof(weights));
        RequireBackend(backend, x, nameof(x));
        RequireBackend(backend, y, nameof(y));
        if (weights.DType is not (DType.F32 or DType.BF16))
            ThrowHelper.Argument(nameof(weights), $"weights must be F32 or BF16; got {weights.DType}.");
        var size = Validate(weights.Shape, x.Shape, y.Shape);
        ThrowIfSameTensor(weights, y, nameof(weights), nameof(y));
        ThrowIfSameTensor(x, y, nameof(x), nameof(y));
        return size;
    }

    /// <summary>Throws if the output <paramref name="destination"/> is the same tensor as the input <paramref name="input"/>
    /// (two backend tensors never share memory otherwise): kernels never write over their inputs.</summary>
    /// <param name="input">The input tensor.</param>
    /// <param name="destination">The output tensor.</param>
    /// <param name="inputName">The input's parameter name.</param>
    /// <param name="destinationName">The output's parameter name (the exception's <see cref="ArgumentException.ParamName"/>).</param>
    /// <exception cref="ArgumentException">The two are one tensor (and not empty).</exception>
    public static void ThrowIfSameTensor(DeviceTensor input, DeviceTensor destination, string inputName, string destinationName)
    {
        if (ReferenceEquals(input, destination) && destination.Shape.ElementCount > 0)
            ThrowHelper.Argument(destinationName, $"{destinationName} overlaps {inputName}; kernels never write over their inputs.");
    }

    /// <summary>Validates GEMM shapes: weights <c>[m, k]</c>, x <c>[n, k]</c>, y <c>[n, m]</c>.</summary>
    /// <param name="weights">Weights shape.</param>
    /// <param name="x">Activation shape.</param>
    /// <param name="y">Output shape.</param>
    /// <returns>The problem size.</returns>
    /// <exception cref="ArgumentException">A rank or shape mismatch, naming both shapes.</exception>
    public static (int M, int K, int N) Validate(TensorShape weights, TensorShape x, TensorShape y)
    {
        if (weights.Rank != 2) ThrowHelper.Argument(nameof(weights), $"weights must be rank 2 [m, k]; got {weights}.");
        if (x.Rank != 2) ThrowHelper.Argument(nameof(x), $"x must be rank 2 [n, k]; got {x}.");
        if (y.Rank != 2) ThrowHelper.Argument(nameof(y), $"y must be rank 2 [n, m]; got {y}.");
        int m = weights[0], k = weights[1], n = x[0];
        if (x[1] != k) ThrowHelper.Argument(nameof(x), $"x is {x} but weights are {weights}: x must be [n, {k}].");
        if (y[0] != n || y[1] != m) ThrowHelper.Argument(nameof(y), $"y is {y}; weights {weights} and x {x} need y = [{n}, {m}].");
        return (m, k, n);
    }

    /// <summary>Throws if <paramref name="tensor"/> belongs to another backend or was disposed.</summary>
    /// <param name="backend">The backend running the op.</param>
    /// <param name="tensor">The tensor.</param>
    /// <param name="name">Its parameter name.</param>
    public static void RequireBackend(IKernelBackend backend, DeviceTensor tensor, string name)
    {
        tensor.ThrowIfDisposed();
        if (!ReferenceEquals(tensor.Backend, backend))
            ThrowHelper.Argument(name, $"{name} lives on backend '{tensor.Backend.Name}' but the op runs on '{backend.Name}'; copy it explicitly.");
    }

    /// <summary>Returns <paramref name="tensor"/> as the backend's own tensor type after <see cref="RequireBackend(IKernelBackend, DeviceTensor, string)"/>.</summary>
    /// <typeparam name="TTensor">The backend's tensor type.</typeparam>
    /// <param name="backend">The backend running the op.</param>
    /// <param name="tensor">The tensor.</param>
    /// <param name="name">Its parameter name.</param>
    /// <returns>The tensor, typed.</returns>
    /// <exception cref="ArgumentException">The tensor belongs to another backend, or is not of the backend's tensor type.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public static TTensor RequireBackend<TTensor>(IKernelBackend backend, DeviceTensor tensor, string name) where TTensor : DeviceTensor
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        RequireBackend(backend, tensor, name);
        return tensor as TTensor ?? throw new ArgumentException($"{name} ({tensor}) is not a {typeof(TTensor).Name} of backend '{backend.Name}'.", name);
    }
}
