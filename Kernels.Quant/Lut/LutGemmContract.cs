namespace Kernels.Quant.Lut;

/// <summary>Argument checks shared by every implementation of <see cref="ILutGemmOps"/>.</summary>
public static class LutGemmContract
{
    /// <summary>Validates a LUT GEMM call and returns n.</summary>
    /// <param name="backend">The backend running the op.</param>
    /// <param name="weights">Prepared weights of that backend.</param>
    /// <param name="x">Activations <c>[n, k]</c>.</param>
    /// <param name="y">Output <c>[n, m]</c>.</param>
    /// <returns>The number of activation vectors n.</returns>
    /// <exception cref="ArgumentException">A rank, shape or backend mismatch (the message names both shapes).</exception>
    public static int Validate(IKernelBackend backend, ILutPreparedWeights weights, DeviceTensor x, DeviceTensor y)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(y);
        if (!ReferenceEquals(weights.Backend, backend))
            ThrowHelper.Argument(nameof(weights), $"weights were prepared on backend '{weights.Backend.Name}' but the op runs on '{backend.Name}'; prepare them on this backend.");
        DenseGemmContract.RequireBackend(backend, x, nameof(x));
        DenseGemmContract.RequireBackend(backend, y, nameof(y));
        if (x.Shape.Rank != 2 || x.Shape[1] != weights.K)
            ThrowHelper.Argument(nameof(x), $"x is {x.Shape}; weights are [{weights.M}, {weights.K}] so x must be [n, {weights.K}].");
        int n = x.Shape[0];
        if (y.Shape.Rank != 2 || y.Shape[0] != n || y.Shape[1] != weights.M)
            ThrowHelper.Argument(nameof(y), $"y is {y.Shape}; x {x.Shape} and weights [{weights.M}, {weights.K}] need y = [{n}, {weights.M}].");
        return n;
    }
}
