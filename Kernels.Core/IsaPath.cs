namespace Kernels;

/// <summary>The CPU instruction-set path a kernel runs.</summary>
/// <remarks>
/// <see cref="Auto"/> picks the widest supported path: AVX-512 (when <c>Vector512.IsHardwareAccelerated</c>), then AVX2,
/// then Vector128 (SSE/NEON), then scalar. The runtime's own switches (<c>DOTNET_EnableAVX512=0</c>,
/// <c>DOTNET_EnableAVX2=0</c>, <c>DOTNET_EnableHWIntrinsic=0</c>, <c>DOTNET_PreferredVectorBitWidth=256</c>) narrow what
/// <see cref="Auto"/> sees; the library reads no environment variables of its own.
/// </remarks>
public enum IsaPath
{
    /// <summary>The widest path this process supports.</summary>
    Auto,
    /// <summary>Portable scalar code (the reference's arithmetic, no intrinsics).</summary>
    Scalar,
    /// <summary>128-bit vectors (SSE4/AVX on x64, AdvSimd on Arm64).</summary>
    Vector128,
    /// <summary>256-bit AVX2 + FMA.</summary>
    Avx2,
    /// <summary>512-bit AVX-512 (F, BW, VL).</summary>
    Avx512,
}
