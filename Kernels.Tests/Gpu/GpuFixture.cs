using Kernels.Gpu;

namespace Kernels.Tests.Gpu;

/// <summary>One ILGPU CPU-accelerator backend shared by all GPU tests (creating one compiles kernels, which is slow).</summary>
public sealed class GpuFixture : IDisposable
{
    public GpuBackend Backend { get; } = GpuBackend.CreateCpuSimulator();

    public void Dispose() => Backend.Dispose();
}

[CollectionDefinition(Name)]
public sealed class GpuCollection : ICollectionFixture<GpuFixture>
{
    public const string Name = "ILGPU CPU accelerator";
}
