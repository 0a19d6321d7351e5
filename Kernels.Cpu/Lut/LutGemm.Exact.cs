using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Quant.Lut;

namespace Kernels.Cpu.Lut;

public static unsafe partial class LutGemm
{
    /// <summary>The AVX-512 exact (fp32 table) path: <c>vpermps</c> looks up 16 positions at once in a 16-float table.</summary>
    /// <remarks>Per plane and position the fp32 sums are formed in the same order as <see cref="ScalarExact"/> (low nibble,
    /// then high nibble, pair by pair) and combined and scaled by the same scalar epilogue, so the result is bit-identical
    /// to it.</remarks>
    [SkipLocalsInit]
    internal static void Avx512Exact(ref LutArgs a, int tileStart, int tileCount)
    {
        Debug.Assert(Avx512F.IsSupported);
        int b = a.Bits, pairs = a.GroupSize / 8, groups = a.Groups, kgPerGroup = a.GroupSize / 4;
        int* posOf = stackalloc int[64];
        for (int p = 0; p < 64; p++) posOf[BitPlanePacking.RowOfPosition(p)] = p;
        Vector512<float>* sums = stackalloc Vector512<float>[16]; // [plane][16 positions]
        float* dot = stackalloc float[64];                        // Σ_i 2^i·S_i per position
        float* acc = stackalloc float[64];                        // per row
        long tileBytes = (long)groups * pairs * b * 64;
        var nibble = Vector512.Create(15);
        for (int t = tileStart; t < tileStart + tileCount; t++)
            for (int j = 0; j < a.N; j++)
            {
                float* tab = (float*)a.Tables + (long)j * (a.K / 4) * 16;
                byte* wp = a.Planes + t * tileBytes;
                new Span<float>(acc, 64).Clear();
                for (int g = 0; g < groups; g++)
                {
                    for (int v = 0; v < b * 4; v++) sums[v] = default;
                    float* tg = tab + g * kgPerGroup * 16;
                    for (int p = 0; p < pairs; p++)
                    {
                        Vector512<float> tLo = Vector512.Load(tg + p * 32), tHi = Vector512.Load(tg + p * 32 + 16);
                        for (int i = 0; i < b; i++, wp += 64)
                            for (int c = 0; c < 4; c++)
                            {
                                Vector512<int> v = Avx512F.ConvertToVector512Int32(System.Runtime.Intrinsics.Vector128.Load(wp + c * 16)); // vpmovzxbd
                                Vector512<float> s = sums[i * 4 + c];
                                s += Avx512F.PermuteVar16x32(tLo, v & nibble);                                    // vpermps: T_2p[lo]
                                s += Avx512F.PermuteVar16x32(tHi, Vector512.ShiftRightLogical(v, 4));             // T_2p+1[hi]
                                sums[i * 4 + c] = s;
                            }
                    }
                    for (int c = 0; c < 4; c++)
                    {
                        Vector512<float> d = default;
                        for (int i = 0; i < b; i++) d += sums[i * 4 + c] * Vector512.Create((float)(1 << i));
                        d.Store(dot + c * 16);
                    }
                    long si = ((long)t * groups + g) * 64;
                    float xs = a.GroupSum[j * groups + g];
                    for (int r = 0; r < 64; r++)
                    {
                        float v = MathF.FusedMultiplyAdd(dot[posOf[r]], Bf16(a.Scales[si + r]) * 0.5f, acc[r]);
                        acc[r] = MathF.FusedMultiplyAdd(Bf16(a.Offsets[si + r]), xs, v);
                    }
                }
                StoreTile(ref a, t, j, acc);
            }
    }
}
