using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Quant.Reference;

namespace Kernels.Cpu.Fpx;

/// <summary>
/// W6A8's per-token int8 activation quantization, vectorized, with the reference's exact results
/// (<see cref="FpxReference.QuantizeActivations"/>): <c>s = max|x| / 127</c> in fp32 (1 for an all-zero token), then
/// <c>clamp(roundHalfEven(x / (double)s), −127, 127)</c>, the division and rounding in double as the reference does them
/// (an fp32 quotient can land on the other side of a half).
/// </summary>
/// <remarks>The reference ran single-threaded in front of the parallel GEMM: 78–85 µs for one 8192-wide token, 0.6–0.7 ms
/// for eight, 2.5 ms for 32 (scratch timings, 2026-12-02), about 6 % of an 8192² GEMV and 10 % of the n = 8 GEMM. This takes 8 doubles per instruction (AVX-512), 4 (AVX2)
/// or 2 (128-bit).</remarks>
internal static class ActivationQuantizer
{
    /// <summary>Quantizes <c>scales.Length</c> tokens of <paramref name="k"/> activations each.</summary>
    /// <exception cref="ArgumentException">An activation is NaN or ±Inf (the message names it, as the reference's does).</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs once per call: no tier-0 pass
    public static void Quantize(IsaPath isa, ReadOnlySpan<float> x, int k, Span<sbyte> quantized, Span<float> scales)
    {
        if (isa == IsaPath.Scalar)
        {
            FpxReference.QuantizeActivations(x, k, quantized, scales);
            return;
        }
        for (int j = 0; j < scales.Length; j++)
        {
            ReadOnlySpan<float> row = x.Slice(j * k, k);
            float amax = AbsMax(row, out bool finite);
            if (!finite)
            {
                // The reference finds the first NaN/±Inf and names it (x[j, c]); tokens before j give it the same bits again.
                FpxReference.QuantizeActivations(x[..((j + 1) * k)], k, quantized[..((j + 1) * k)], scales[..(j + 1)]);
                throw new InvalidOperationException("unreachable: the reference throws for a non-finite activation");
            }
            float s = amax / 127f;
            if (s == 0) s = 1;
            scales[j] = s;
            Round(isa, row, s, quantized.Slice(j * k, k));
        }
    }

    /// <summary>max |x| over the row, and whether every element is finite.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs once per call: no tier-0 pass
    private static float AbsMax(ReadOnlySpan<float> row, out bool finite)
    {
        ref float r = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(row);
        var inf = Vector128.Create(float.PositiveInfinity);
        Vector128<float> m = Vector128<float>.Zero, bad = Vector128<float>.Zero;
        int c = 0;
        if (Vector256.IsHardwareAccelerated && row.Length >= 8)
        {
            Vector256<float> m8 = Vector256<float>.Zero, bad8 = Vector256<float>.Zero, inf8 = Vector256.Create(float.PositiveInfinity);
            for (; c <= row.Length - 8; c += 8)
            {
                var a = Vector256.Abs(Vector256.LoadUnsafe(ref r, (nuint)c));
                bad8 |= ~Vector256.LessThan(a, inf8); // NaN and ±Inf
                m8 = Vector256.Max(m8, a);
            }
            m = Vector128.Max(m8.GetLower(), m8.GetUpper());
            bad = bad8.GetLower() | bad8.GetUpper();
        }
        for (; c <= row.Length - 4; c += 4)
        {
            var a = Vector128.Abs(Vector128.LoadUnsafe(ref r, (nuint)c));
            bad |= ~Vector128.LessThan(a, inf);
            m = Vector128.Max(m, a);
        }
        float amax = MathF.Max(MathF.Max(m[0], m[1]), MathF.Max(m[2], m[3]));
        finite = bad == Vector128<float>.Zero;
        for (; c < row.Length; c++)
        {
            float a = Math.Abs(row[c]);
            finite &= float.IsFinite(a);
            amax = Math.Max(amax, a);
        }
        return amax;
    }

    /// <summary><c>clamp(roundHalfEven(x / (double)s), −127, 127)</c> element by element. The conversions to int32 round to
    /// nearest even (the default rounding mode), which is the reference's <c>Math.Round(…, ToEven)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs once per call: no tier-0 pass
    private static unsafe void Round(IsaPath isa, ReadOnlySpan<float> row, float s, Span<sbyte> dst)
    {
        int c = 0, k = row.Length;
        double sd = s;
        fixed (float* x = row)
        fixed (sbyte* q = dst)
        {
            if (isa == IsaPath.Avx512 && Avx512F.IsSupported)
            {
                var div = Vector512.Create(sd);
                var lo = Vector512.Create(-127);
                var hi = Vector512.Create(127);
                for (; c <= k - 16; c += 16)
                {
                    var f = Vector512.Load(x + c);
                    var i0 = Avx512F.ConvertToVector256Int32(Avx512F.ConvertToVector512Double(f.GetLower()) / div);
                    var i1 = Avx512F.ConvertToVector256Int32(Avx512F.ConvertToVector512Double(f.GetUpper()) / div);
                    var i = Vector512.Min(Vector512.Max(Vector512.Create(i0, i1), lo), hi);
                    Avx512F.ConvertToVector128SByte(i).Store(q + c); // vpmovdb: exact in [−127, 127]
                }
            }
            if (isa is IsaPath.Avx512 or IsaPath.Avx2 && Avx2.IsSupported)
            {
                var div = Vector256.Create(sd);
                var lo = Vector128.Create((short)-127);
                var hi = Vector128.Create((short)127);
                for (; c <= k - 8; c += 8)
                {
                    var f = Vector256.Load(x + c);
                    var i0 = Avx.ConvertToVector128Int32(Avx.ConvertToVector256Double(f.GetLower()) / div);
                    var i1 = Avx.ConvertToVector128Int32(Avx.ConvertToVector256Double(f.GetUpper()) / div);
                    var h = Vector128.Min(Vector128.Max(Sse2.PackSignedSaturate(i0, i1), lo), hi);
                    *(ulong*)(q + c) = Sse2.PackSignedSaturate(h, h).AsUInt64().ToScalar();
                }
            }
            if (isa != IsaPath.Scalar)
            {
                var div = Vector128.Create(sd);
                var lo = Vector128.Create(-127.0);
                var hi = Vector128.Create(127.0);
                for (; c <= k - 4; c += 4)
                {
                    var f = Vector128.Load(x + c);
                    var i = Vector128.Narrow(
                        Vector128.ConvertToInt64(Vector128.Min(Vector128.Max(Vector128.Round(Vector128.WidenLower(f) / div), lo), hi)),
                        Vector128.ConvertToInt64(Vector128.Min(Vector128.Max(Vector128.Round(Vector128.WidenUpper(f) / div), lo), hi)));
                    for (int e = 0; e < 4; e++) q[c + e] = (sbyte)i[e]; // Vector128.Round: half to even, as Math.Round
                }
            }
        }
        for (; c < k; c++)
            dst[c] = (sbyte)Math.Clamp(Math.Round(row[c] / sd, MidpointRounding.ToEven), -127, 127);
    }

    /// <summary>Σ v (exact), for W6A8's per-group offset corrections.</summary>
    public static int Sum(ReadOnlySpan<sbyte> v)
    {
        ref sbyte r = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(v);
        var acc = Vector128<int>.Zero;
        int c = 0;
        for (; c <= v.Length - 16; c += 16)
        {
            var b = Vector128.LoadUnsafe(ref r, (nuint)c);
            var (lo, hi) = Vector128.Widen(b);
            var (a0, a1) = Vector128.Widen(lo + hi); // |lo + hi| ≤ 256: no short overflow
            acc += a0 + a1;
        }
        int sum = Vector128.Sum(acc);
        for (; c < v.Length; c++) sum += v[c];
        return sum;
    }
}
