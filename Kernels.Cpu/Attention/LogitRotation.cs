using System.Runtime.CompilerServices;

namespace Kernels.Cpu.Attention;

/// <summary>Marks the logit kernels that read K rows as they are (<see cref="Tile512"/>, <see cref="Tile256"/>): the JIT drops
/// every rotation instruction from their generic cores.</summary>
internal struct NoRotation;

/// <summary>Marks the logit kernels that rotate each K chunk pair by NeoX pairs over the whole row (in-kernel RoPE).</summary>
internal struct NeoxRotation;

/// <summary>What the rotating logit kernels of every width share.</summary>
internal static unsafe class LogitRotation
{
    /// <summary>The table row for tile token t, <c>d</c> floats per row from <paramref name="cos"/> (row tl for tokens outside
    /// [tl, th): their K rows are the zero row, and their own table rows may lie past the table).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float* AngleRow(float* cos, int t, int tl, int th, int d) => cos + (long)(t < tl || t >= th ? tl : t) * d;
}
