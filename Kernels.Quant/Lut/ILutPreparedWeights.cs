namespace Kernels.Quant.Lut;

/// <summary>Packed LUT weights prepared for (uploaded to) one backend. Dispose to free device memory.</summary>
public interface ILutPreparedWeights : IDisposable
{
    /// <summary>The backend that owns them.</summary>
    IKernelBackend Backend { get; }

    /// <summary>The format.</summary>
    LutFormat Format { get; }

    /// <summary>Rows.</summary>
    int M { get; }

    /// <summary>Columns.</summary>
    int K { get; }
}
