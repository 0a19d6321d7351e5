using System.Runtime.CompilerServices;
using Kernels.Quant.Lut;

namespace Kernels.Cpu.Lut;

public static unsafe partial class LutGemm
{
    /// <summary>The scalar int8-table path over tiles <c>[tileStart, tileStart + tileCount)</c>: the same integer sums and
    /// fp32 epilogue as the SIMD paths, one byte at a time.</summary>
    [SkipLocalsInit]
    internal static void Scalar(ref LutArgs a, int tileStart, int tileCount)
    {
        int b = a.Bits, pairs = a.GroupSize / 8, groups = a.Groups, kgPerGroup = a.GroupSize / 4;
        int* rowOf = stackalloc int[64];
        for (int p = 0; p < 64; p++) rowOf[p] = BitPlanePacking.RowOfPosition(p);
        int* sums = stackalloc int[64];
        float* acc = stackalloc float[64];
        long tileBytes = (long)groups * pairs * b * 64;
        for (int t = tileStart; t < tileStart + tileCount; t++)
            for (int j = 0; j < a.N; j++)
            {
                sbyte* tab = (sbyte*)a.Tables + (long)j * (a.K / 4) * 16;
                byte* wp = a.Planes + t * tileBytes;
                new Span<float>(acc, 64).Clear();
                for (int g = 0; g < groups; g++)
                {
                    new Span<int>(sums, 64).Clear();
                    sbyte* tg = tab + g * kgPerGroup * 16;
                    for (int p = 0; p < pairs; p++)
                    {
                        sbyte* tLo = tg + p * 32, tHi = tLo + 16;
                        for (int i = 0; i < b; i++, wp += 64)
                            for (int pos = 0; pos < 64; pos++)
                            {
                                int v = wp[pos];
                                sums[rowOf[pos]] += (tLo[v & 15] + tHi[v >> 4]) << i;
                            }
                    }
                    Epilogue(ref a, t, j, g, sums, acc);
                }
                StoreTile(ref a, t, j, acc);
            }
    }

    /// <summary><c>acc[r] = fma(float(sum[r]), s[r]·½lutScale, acc[r]); acc[r] = fma(o[r], X_g, acc[r])</c>, as the vector paths do.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Epilogue(ref LutArgs a, int t, int j, int g, int* sums, float* acc)
    {
        float hl = a.HalfLutScale[j * a.Groups + g], xs = a.GroupSum[j * a.Groups + g];
        long si = ((long)t * a.Groups + g) * 64;
        for (int r = 0; r < 64; r++)
        {
            float v = MathF.FusedMultiplyAdd(sums[r], Bf16(a.Scales[si + r]) * hl, acc[r]);
            acc[r] = MathF.FusedMultiplyAdd(Bf16(a.Offsets[si + r]), xs, v);
        }
    }

    /// <summary>The exact (fp32 table) path, shared by every ISA: per row and group,
    /// <c>acc = fma(Σ_i 2^i·S_i, s·½, acc); acc = fma(o, X_g, acc)</c> with <c>S_i</c> summed in 4-group order.</summary>
    [SkipLocalsInit]
    internal static void ScalarExact(ref LutArgs a, int tileStart, int tileCount)
    {
        int b = a.Bits, pairs = a.GroupSize / 8, groups = a.Groups, kgPerGroup = a.GroupSize / 4;
        int* rowOf = stackalloc int[64];
        for (int p = 0; p < 64; p++) rowOf[p] = BitPlanePacking.RowOfPosition(p);
        float* planeSums = stackalloc float[64 * 4];
        float* acc = stackalloc float[64];
        long tileBytes = (long)groups * pairs * b * 64;
        for (int t = tileStart; t < tileStart + tileCount; t++)
            for (int j = 0; j < a.N; j++)
            {
                float* tab = (float*)a.Tables + (long)j * (a.K / 4) * 16;
                byte* wp = a.Planes + t * tileBytes;
                new Span<float>(acc, 64).Clear();
                for (int g = 0; g < groups; g++)
                {
                    new Span<float>(planeSums, 64 * 4).Clear();
                    float* tg = tab + g * kgPerGroup * 16;
                    for (int p = 0; p < pairs; p++)
                    {
                        float* tLo = tg + p * 32, tHi = tLo + 16;
                        for (int i = 0; i < b; i++, wp += 64)
                            for (int pos = 0; pos < 64; pos++)
                            {
                                int v = wp[pos];
                                float* ps = planeSums + i * 64 + rowOf[pos];
                                *ps += tLo[v & 15];
                                *ps += tHi[v >> 4];
                            }
                    }
                    long si = ((long)t * groups + g) * 64;
                    float xs = a.GroupSum[j * groups + g];
                    for (int r = 0; r < 64; r++)
                    {
                        float dot = 0;
                        for (int i = 0; i < b; i++) dot += planeSums[i * 64 + r] * (1 << i);
                        float v = MathF.FusedMultiplyAdd(dot, Bf16(a.Scales[si + r]) * 0.5f, acc[r]);
                        acc[r] = MathF.FusedMultiplyAdd(Bf16(a.Offsets[si + r]), xs, v);
                    }
                }
                StoreTile(ref a, t, j, acc);
            }
    }
}
