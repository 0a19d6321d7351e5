using System.Runtime.InteropServices;

namespace Kernels.Attention.Paging;

/// <summary>A zero-initialised, 64-byte aligned block of native memory that may exceed 2 GB (a managed array may not),
/// freed by <see cref="SafeHandle.Dispose()"/> or, if the owner forgets, by the finalizer.</summary>
/// <remarks><see cref="NativeMemory.AllocZeroed(nuint)"/> (calloc) rather than an aligned allocation plus a clear: large
/// blocks come from the OS already zeroed and are not touched until used, so a multi-GB pool costs nothing up front.</remarks>
internal sealed unsafe class NativePool : SafeHandle
{
    /// <summary>Allocates <paramref name="bytes"/> (≥ 1) zeroed bytes.</summary>
    /// <exception cref="OutOfMemoryException">The allocation failed.</exception>
    public NativePool(long bytes) : base(IntPtr.Zero, ownsHandle: true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        Length = bytes;
        void* p = NativeMemory.AllocZeroed((nuint)bytes + 63);
        SetHandle((IntPtr)p);
        _aligned = (byte*)(((nuint)p + 63) & ~(nuint)63);
        GC.AddMemoryPressure(bytes);
    }

    private readonly byte* _aligned;

    /// <summary>Bytes.</summary>
    public long Length { get; }

    /// <summary>The first byte; throws once disposed.</summary>
    public byte* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return _aligned;
        }
    }

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc />
    protected override bool ReleaseHandle()
    {
        NativeMemory.Free((void*)handle);
        GC.RemoveMemoryPressure(Length);
        return true;
    }
}
