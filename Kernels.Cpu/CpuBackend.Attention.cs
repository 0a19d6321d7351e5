using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Attention.Planning;
using Kernels.Cpu.Attention;

namespace Kernels.Cpu;

public sealed partial class CpuBackend : IPagedAttentionOps
{
    private sealed class HostKvCache(PagedKvCache source) : DeviceKvCache(source)
    {
        public override void Update()
        {
        }
    }

    /// <inheritdoc/>
    public DeviceKvCache UploadKvCache(PagedKvCache cache) => new HostKvCache(cache);

    /// <inheritdoc/>
    public void Attention(AttentionPlan plan, DeviceTensor<float> q, DeviceKvCache cache, DeviceTensor<float> output, DeviceTensor<float>? lse)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(cache);
        ObjectDisposedException.ThrowIf(cache.IsDisposed, cache);
        var qs = ((CpuTensor<float>)q).Span;
        var os = ((CpuTensor<float>)output).Span;
        var ls = lse is null ? default : ((CpuTensor<float>)lse).Span;
        switch (plan)
        {
            case DecodePlan d: PagedDecode.Run(d, qs, cache.Source, os, ls, Options); break;
            case PrefillPlan p: PagedPrefill.Run(p, qs, cache.Source, os, ls, Options); break;
            default: throw new NotSupportedException($"Plan type {plan.GetType().Name} is not supported; use DecodePlanner or PrefillPlanner.");
        }
    }
}
