using Kernels.Attention;
using Kernels.Attention.Positional;
using Kernels.Cpu.Attention;

namespace Kernels.Cpu;

public sealed partial class CpuBackend : IRopeOps
{
    /// <inheritdoc/>
    /// <remarks>Runs <see cref="RopeKernel.Apply"/> on the tensors' memory with this backend's <see cref="Options"/>;
    /// output may be the same tensor as x.</remarks>
    public void ApplyRope(RopeTable table, DeviceTensor<int> positions, DeviceTensor<float> x, DeviceTensor<float> output)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(positions);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(output);
        ThrowIfDisposed();
        RopeKernel.Apply(table, AsCpu(positions, nameof(positions)).Span, AsCpu(x, nameof(x)).Span, AsCpu(output, nameof(output)).Span, Options);
    }
}
