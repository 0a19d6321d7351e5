namespace Kernels.Quant.DFloat11;

/// <summary>DFloat11 operations, the same on the CPU and GPU backends.</summary>
/// <remarks>
/// A runtime uploads each compressed weight once, then per layer either decompresses into a reused bf16 buffer
/// (<see cref="Decompress"/>, DFloat11's per-transformer-block pattern) or runs the fused product (<see cref="Gemm"/>).
/// Decompression is bit-exact; <see cref="Gemm"/> equals the dense bf16 GEMM of the decompressed weights up to that
/// kernel's summation order.
/// </remarks>
public interface IDFloat11Ops
{
    /// <summary>Makes a compressed tensor usable on this backend (GPU: copies its arrays to the device).</summary>
    /// <param name="tensor">The tensor (validated at construction).</param>
    /// <returns>Backend-owned weights; the caller disposes them.</returns>
    IDFloat11Weights Upload(DFloat11Tensor tensor);

    /// <summary>Decompresses into <paramref name="destination"/> (exactly the tensor's element count; its shape may differ).</summary>
    /// <param name="weights">Weights from this backend's <see cref="Upload"/>.</param>
    /// <param name="destination">The bf16 output, overwritten.</param>
    /// <exception cref="ArgumentException">Wrong element count, or objects from another backend.</exception>
    /// <exception cref="InvalidDataException">(CPU) The stream does not line up with its block metadata.</exception>
    void Decompress(IDFloat11Weights weights, DeviceTensor<BFloat16> destination);

    /// <summary>Computes <c>y = x · Wᵀ</c> for the rank-2 <c>[m, k]</c> compressed W.</summary>
    /// <param name="weights">Weights from this backend's <see cref="Upload"/>, rank 2.</param>
    /// <param name="x"><c>[n, k]</c> activations.</param>
    /// <param name="y"><c>[n, m]</c> output.</param>
    /// <exception cref="ArgumentException">Shapes do not match (named in the message), or objects from another backend.</exception>
    void Gemm(IDFloat11Weights weights, DeviceTensor<float> x, DeviceTensor<float> y);
}
