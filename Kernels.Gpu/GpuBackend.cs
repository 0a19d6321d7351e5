using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using Kernels.Gpu.Dense;

namespace Kernels.Gpu;

/// <summary>The ILGPU backend: owns the ILGPU context, one accelerator and one stream, and the loaded kernels.</summary>
/// <remarks>
/// Kernels are compiled and loaded once per backend (by the launchers, lazily, on first use) and never per call.
/// Ops are queued on <see cref="Stream"/> and run asynchronously; <see cref="Synchronize"/> and the tensors' copies wait.
/// Dispose order: tensors, then the backend (launchers, stream, accelerator, context). Failures inside ILGPU are
/// wrapped in <see cref="KernelException"/> naming the device.
/// </remarks>
public sealed partial class GpuBackend : IKernelBackend, IDenseOps
{
    private readonly Context _context;
    private readonly bool _ownsContext;
    private DenseGemmLauncher? _dense;
    private bool _disposed;
    private readonly List<IDisposable> _owned = [];

    /// <summary>Registers a launcher or buffer the backend disposes before the accelerator (families' partial files use this).</summary>
    /// <typeparam name="T">Resource type.</typeparam>
    /// <param name="resource">The resource.</param>
    /// <returns>The same resource.</returns>
    internal T Own<T>(T resource) where T : IDisposable
    {
        _owned.Add(resource);
        return resource;
    }

    private GpuBackend(Context context, Accelerator accelerator, bool ownsContext)
    {
        _context = context;
        _ownsContext = ownsContext;
        Accelerator = accelerator;
        Stream = accelerator.DefaultStream;
    }

    /// <summary>The accelerator.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>The stream every op is queued on.</summary>
    public AcceleratorStream Stream { get; }

    /// <summary>True when the accelerator is ILGPU's CPU simulator (tests), false on a real GPU.</summary>
    public bool IsCpuSimulator => Accelerator.AcceleratorType == AcceleratorType.CPU;

    /// <inheritdoc/>
    public string Name => Accelerator.AcceleratorType switch
    {
        AcceleratorType.Cuda => "cuda",
        AcceleratorType.CPU => "ilgpu-cpu",
        var t => t.ToString().ToLowerInvariant(),
    };

    /// <summary>Creates a backend on the first CUDA device.</summary>
    /// <returns>The backend.</returns>
    /// <exception cref="KernelException">No CUDA device is present.</exception>
    public static GpuBackend CreateCuda()
    {
        var context = Context.Create(b => b.Cuda().EnableAlgorithms());
        if (context.GetCudaDevices().Count == 0)
        {
            context.Dispose();
            throw new KernelException("No CUDA device found (ILGPU saw none; a driver with libcuda is required).");
        }
        return new GpuBackend(context, context.CreateCudaAccelerator(0), ownsContext: true);
    }

    /// <summary>Creates a backend on ILGPU's CPU accelerator (warp 32, groups up to 1024): for tests, slow.</summary>
    /// <returns>The backend.</returns>
    public static GpuBackend CreateCpuSimulator()
    {
        var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).EnableAlgorithms());
        return new GpuBackend(context, context.CreateCPUAccelerator(0), ownsContext: true);
    }

    /// <summary>True when ILGPU finds a CUDA device in this process.</summary>
    /// <returns>Whether <see cref="CreateCuda"/> would succeed.</returns>
    public static bool IsCudaAvailable()
    {
        try
        {
            using var context = Context.Create(b => b.Cuda());
            return context.GetCudaDevices().Count > 0;
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>True once <see cref="Dispose"/> has run: the accelerator and every buffer on it are gone.</summary>
    internal bool IsDisposed => _disposed;

    /// <summary>Throws <see cref="ObjectDisposedException"/> once the backend is disposed.</summary>
    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <inheritdoc/>
    /// <exception cref="ObjectDisposedException">The backend was disposed.</exception>
    public BackendInfo Describe()
    {
        ThrowIfDisposed();
        string path = Accelerator is CudaAccelerator cuda
            ? $"CUDA {cuda.Architecture}, PTX ISA {cuda.InstructionSet}"
            : $"{Accelerator.AcceleratorType} (warp {Accelerator.WarpSize})";
        return new BackendInfo(Name, Accelerator.Name, path, Accelerator.NumMultiprocessors,
            $"memory {Accelerator.MemorySize / (1 << 20)} MiB, max group {Accelerator.MaxNumThreadsPerGroup}, ILGPU {typeof(Context).Assembly.GetName().Version}");
    }

    /// <inheritdoc/>
    public DeviceTensor<T> Allocate<T>(params ReadOnlySpan<int> lengths) where T : unmanaged
    {
        ThrowIfDisposed();
        var shape = new TensorShape(lengths);
        return Wrap(() => new GpuTensor<T>(this, shape));
    }

    /// <summary>Allocates a tensor and copies <paramref name="data"/> into it (host → device).</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="data">Row-major elements.</param>
    /// <param name="lengths">Dimension lengths.</param>
    /// <returns>The tensor.</returns>
    /// <exception cref="ArgumentException">The element count differs from the shape's.</exception>
    public GpuTensor<T> Upload<T>(ReadOnlySpan<T> data, params ReadOnlySpan<int> lengths) where T : unmanaged
    {
        var t = (GpuTensor<T>)Allocate<T>(lengths);
        t.CopyFrom(data);
        return t;
    }

    /// <inheritdoc/>
    /// <remarks>Also frees the device metadata of attention plans evicted from the plan cache.</remarks>
    public void Synchronize() => Wrap(() =>
    {
        ThrowIfDisposed();
        Stream.Synchronize();
        _attention?.FreeRetired(Stream, synchronized: true);
        return 0;
    });

    /// <inheritdoc/>
    public void Gemm(DeviceTensor weights, DeviceTensor<float> x, DeviceTensor<float> y)
    {
        var (m, k, n) = DenseGemmContract.Validate(this, weights, x, y);
        ThrowIfDisposed();
        if (m == 0 || n == 0) return;
        _dense ??= new DenseGemmLauncher(Accelerator);
        Wrap(() =>
        {
            _dense.Launch(Stream, weights, ((GpuTensor<float>)x).View, ((GpuTensor<float>)y).View, m, k, n);
            return 0;
        });
    }

    /// <summary>Returns <paramref name="tensor"/> as this backend's tensor, or throws naming the parameter.</summary>
    /// <exception cref="ArgumentException">The tensor was allocated by another backend.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    private GpuTensor<T> AsGpu<T>(DeviceTensor<T> tensor, string name) where T : unmanaged =>
        DenseGemmContract.RequireBackend<GpuTensor<T>>(this, tensor, name);

    /// <summary>Runs <paramref name="action"/>, wrapping ILGPU failures in <see cref="KernelException"/> with the device name.</summary>
    /// <typeparam name="TResult">Result type.</typeparam>
    /// <param name="action">The backend call.</param>
    /// <returns>The call's result.</returns>
    internal TResult Wrap<TResult>(Func<TResult> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is AcceleratorException or InternalCompilerException or NotSupportedException or InvalidOperationException && e is not ObjectDisposedException)
        {
            throw new KernelException($"{Name} device '{Accelerator.Name}' failed: {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var d in _owned) d.Dispose();
        Accelerator.Dispose();
        if (_ownsContext) _context.Dispose();
    }
}
