using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kernels.Cpu;

/// <summary>Which CPU ISA paths this process supports, and the choice the kernels make.</summary>
/// <remarks>
/// The checks are JIT-time constants (<c>IsSupported</c>, <c>IsHardwareAccelerated</c>), so the runtime's switches
/// (<c>DOTNET_EnableAVX512=0</c> and friends, <c>DOTNET_PreferredVectorBitWidth=256</c>) are honoured.
/// The 512-bit path requires <c>Vector512.IsHardwareAccelerated</c> plus AVX-512 F/BW/VL; the AVX2 path requires AVX2 and FMA.
/// </remarks>
public static class CpuIsa
{
    /// <summary>The widest supported path.</summary>
    public static IsaPath Best =>
        IsSupported(IsaPath.Avx512) ? IsaPath.Avx512 :
        IsSupported(IsaPath.Avx2) ? IsaPath.Avx2 :
        IsSupported(IsaPath.Vector128) ? IsaPath.Vector128 : IsaPath.Scalar;

    /// <summary>Whether <paramref name="path"/> can run in this process.</summary>
    /// <param name="path">The path.</param>
    /// <returns>True if supported (<see cref="IsaPath.Auto"/> and <see cref="IsaPath.Scalar"/> always are).</returns>
    public static bool IsSupported(IsaPath path) => path switch
    {
        IsaPath.Auto or IsaPath.Scalar => true,
        IsaPath.Vector128 => Vector128.IsHardwareAccelerated,
        IsaPath.Avx2 => Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported,
        IsaPath.Avx512 => Vector512.IsHardwareAccelerated && Avx512F.IsSupported && Avx512BW.IsSupported
                          && Avx512F.VL.IsSupported && Avx512BW.VL.IsSupported,
        _ => false,
    };

    /// <summary>Resolves the options' ISA choice to a concrete, supported path.</summary>
    /// <param name="options">Options; null means <see cref="KernelOptions.Default"/>.</param>
    /// <returns>The path the kernels will run.</returns>
    /// <exception cref="NotSupportedException">A forced path is not supported here; the message lists the supported ones.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The options' ISA is not an <see cref="IsaPath"/> value.</exception>
    public static IsaPath Resolve(KernelOptions? options)
    {
        IsaPath requested = options?.Isa ?? IsaPath.Auto;
        if ((uint)requested > (uint)IsaPath.Avx512) // not an IsaPath value (a cast integer)
        {
            throw new ArgumentOutOfRangeException(nameof(options), requested, $"options.Isa = {(int)requested} is not an IsaPath; use one of {string.Join(", ", Enum.GetNames<IsaPath>())}.");
        }
        if (requested == IsaPath.Auto) return Best;
        if (!IsSupported(requested))
        {
            throw new NotSupportedException($"ISA path {requested} is not supported in this process; supported: {string.Join(", ", Supported())}.");
        }
        return requested;
    }

    /// <summary>All concrete paths supported here, widest first.</summary>
    /// <returns>The supported paths.</returns>
    public static IReadOnlyList<IsaPath> Supported()
    {
        var list = new List<IsaPath>(4);
        foreach (var p in new[] { IsaPath.Avx512, IsaPath.Avx2, IsaPath.Vector128, IsaPath.Scalar })
            if (IsSupported(p)) list.Add(p);
        return list;
    }

    /// <summary>A one-line description of the hardware support, for logs.</summary>
    /// <returns>e.g. <c>best Avx512; Vector512 on, AVX-512 F/BW/VL on, AVX2 on, FMA on, Vector128 on</c>.</returns>
    public static string Describe() =>
        $"best {Best}; Vector512 {OnOff(Vector512.IsHardwareAccelerated)}, AVX-512 F/BW/VL {OnOff(Avx512F.IsSupported && Avx512BW.IsSupported && Avx512F.VL.IsSupported)}, " +
        $"AVX-512 VBMI {OnOff(Avx512Vbmi.IsSupported)}, AVX2 {OnOff(Avx2.IsSupported)}, FMA {OnOff(Fma.IsSupported)}, AVX-VNNI {OnOff(AvxVnni.IsSupported)}, Vector128 {OnOff(Vector128.IsHardwareAccelerated)}";

    private static string OnOff(bool b) => b ? "on" : "off";
}
