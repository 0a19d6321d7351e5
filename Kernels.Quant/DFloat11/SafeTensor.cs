namespace Kernels.Quant.DFloat11;

/// <summary>One bf16 tensor of a safetensors file.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="Shape">Its shape.</param>
/// <param name="Values">Its elements, row-major.</param>
public sealed record SafeTensor(string Name, TensorShape Shape, BFloat16[] Values);
