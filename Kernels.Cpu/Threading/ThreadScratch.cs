using System.Runtime.CompilerServices;

namespace Kernels.Cpu.Threading;

/// <summary>A per-thread float scratch buffer for kernels that decode rows before using them: pinned, grown on demand and
/// kept, and 64-byte aligned so that 512-bit loads and stores never split a cache line.</summary>
/// <remarks>One buffer per thread, shared by every kernel that uses it: a caller must be done with it before it calls
/// another kernel that does. The FP6/FP5 and INT6 GEMMs use it; neither calls the other while its buffer is live.</remarks>
internal static unsafe class ThreadScratch
{
    [ThreadStatic] private static float[]? t_buffer;

    /// <summary>At least <paramref name="floats"/> floats (64 at the least), 64-byte aligned, valid until this thread asks again.</summary>
    public static float* Floats(int floats)
    {
        float[]? s = t_buffer;
        floats = Math.Max(floats, 64) + 16; // + one line for the alignment
        if (s is null || s.Length < floats)
        {
            s = GC.AllocateUninitializedArray<float>(floats, pinned: true);
            t_buffer = s;
        }
        return (float*)(((nint)Unsafe.AsPointer(ref s[0]) + 63) & ~(nint)63);
    }
}
