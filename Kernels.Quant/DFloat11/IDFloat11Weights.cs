namespace Kernels.Quant.DFloat11;

/// <summary>DFloat11 weights resident on a backend (created by <see cref="IDFloat11Ops.Upload"/>; dispose to free).</summary>
public interface IDFloat11Weights : IDisposable
{
    /// <summary>The logical bf16 shape.</summary>
    TensorShape Shape { get; }

    /// <summary>The compressed tensor these weights were made from.</summary>
    DFloat11Tensor Source { get; }
}
