using System.Runtime.InteropServices;
using FsCheck;
using FsCheck.Fluent;
using Kernels.Cpu.Lut;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;
using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Lut;

public class LutFormatTests
{
    [Fact]
    public void RowOfPosition_IsAPermutationOf64Rows()
    {
        var rows = Enumerable.Range(0, 64).Select(BitPlanePacking.RowOfPosition).OrderBy(r => r).ToArray();
        Assert.Equal(Enumerable.Range(0, 64), rows);
        // Lane 0 low half: positions 0, 2, 4, 6 → rows 0..3 (even int16 lanes of accumulator A).
        Assert.Equal([0, 1, 2, 3], new[] { 0, 2, 4, 6 }.Select(BitPlanePacking.RowOfPosition));
        Assert.Equal(16, BitPlanePacking.RowOfPosition(1));
        Assert.Equal(32, BitPlanePacking.RowOfPosition(8));
        Assert.Equal(4, BitPlanePacking.RowOfPosition(16));
    }

    [Fact]
    public void Pack_Unpack_RoundTripsEveryFormat()
    {
        Prop.ForAll(LutGemmTests.Cases, c =>
        {
            var (q, w, _) = LutGemmTests.Make(c);
            var u = BitPlanePacking.Unpack(w);
            Assert.Equal(q.Codes, u.Codes);
            Assert.Equal(q.Scales, u.Scales);
            Assert.Equal(q.Offsets, u.Offsets);
            var row = new byte[c.K];
            int r = c.Seed % c.M;
            BitPlanePacking.UnpackRow(w, r, row);
            Assert.Equal(q.Codes.AsSpan(r * c.K, c.K).ToArray(), row);
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Pack_KnownVector_MatchesLayoutFormula()
    {
        // Row 0, codes 0..7 in the first 8 columns (2-bit codes wrap): idx(plane i, 4-group) = Σ_j bit_i(q_j) << j.
        var f = LutFormat.Asymmetric(2, 32);
        var codes = new byte[32];
        for (int c = 0; c < 8; c++) codes[c] = (byte)(c & 3);     // 0,1,2,3,0,1,2,3
        var q = new LutQuantizedMatrix(f, 1, 32, codes, [(BFloat16)1f], [(BFloat16)0f]);
        var w = BitPlanePacking.Pack(q);
        // Plane 0 bits: 0,1,0,1 | 0,1,0,1 → nibbles 0b1010 = 0xA, 0xA → byte 0xAA at position 0 (row 0).
        Assert.Equal(0xAA, w.Planes[BitPlanePacking.ByteIndex(f, 32, 0, 0, 0, 0, 0)]);
        // Plane 1 bits: 0,0,1,1 → 0b1100 = 0xC in both nibbles.
        Assert.Equal(0xCC, w.Planes[BitPlanePacking.ByteIndex(f, 32, 0, 0, 0, 1, 0)]);
        Assert.Equal(32 * 64 * 2 / 8, w.Planes.Length);
    }

    [Fact]
    public void LutTable_KnownVector_AndMirrorSymmetry()
    {
        Span<float> t = stackalloc float[16];
        LutTable.Build(1, 2, 3, 4, t);
        Assert.Equal(new float[] { -10, -8, -6, -4, -4, -2, 0, 2, -2, 0, 2, 4, 4, 6, 8, 10 }, t.ToArray());
        var rng = new Random(4);
        for (int n = 0; n < 200; n++)
        {
            LutTable.Build((float)rng.NextDouble() - 0.5f, (float)rng.NextDouble(), -(float)rng.NextDouble(), (float)rng.NextDouble() * 1e-3f, t);
            for (int i = 0; i < 16; i++) Assert.Equal(-t[15 - i], t[i]);
        }
    }

    [Fact]
    public unsafe void TableBuilder_VectorMatchesScalarBitExactly()
    {
        var rng = new Random(9);
        foreach (int len in new[] { 32, 64, 128 })
        {
            float[] x = Inputs.Floats(rng, len, 3f);
            x[5] = 0; x[17] = -0f; x[len - 1] = 1e-40f;
            var a = new sbyte[len / 4 * 16];
            var b = new sbyte[len / 4 * 16];
            float sa, sb, ma, mb;
            fixed (float* px = x)
            fixed (sbyte* pa = a, pb = b)
            {
                LutTableBuilder.Int8Scalar(px, pa, len / 4, out sa, out ma);
                LutTableBuilder.Int8Vector256(px, pb, len / 4, out sb, out mb);
            }
            Assert.Equal(a, b);
            Assert.Equal(sa, sb);
            Assert.Equal(ma, mb);
            if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
            {
                var c = new sbyte[len / 4 * 16];
                float sc, mc;
                fixed (float* px = x)
                fixed (sbyte* pc = c) LutTableBuilder.Int8Vector512(px, pc, len / 4, out sc, out mc);
                Assert.Equal(a, c);
                Assert.Equal(sa, sc);
                Assert.Equal(ma, mc);
            }
            Assert.Equal(LutTable.Int8Scale(x), sa);
            Assert.Equal(LutTable.GroupSum(x), ma);
            Assert.Contains(a, v => v == 127 || v == -127);
        }
    }

    [Theory]
    [InlineData(1, 0.5)]
    [InlineData(2, 0.5)]
    [InlineData(3, 0.5)]
    [InlineData(4, 0.5)]
    public void Quantize_Asymmetric_RoundTripWithinHalfStep(int bits, double halfStep)
    {
        var rng = new Random(bits);
        int m = 5, k = 256;
        float[] w = Inputs.Floats(rng, m * k, 1f);
        foreach (int gs in new[] { 32, 64, 128 })
        {
            var q = LutQuantizer.Quantize(w, m, k, LutFormat.Asymmetric(bits, gs));
            float[] d = LutReference.Dequantize(q);
            for (int r = 0; r < m; r++)
                for (int c = 0; c < k; c++)
                {
                    double s = (float)q.Scales[r * (k / gs) + c / gs];
                    // half a step plus bf16 rounding of the offset (2^-8 relative of |s·(c − z)| ≤ s·2^b)
                    double tol = halfStep * s * 1.02 + s * (1 << bits) / 256.0 + 1e-6;
                    Assert.True(Math.Abs(d[r * k + c] - w[r * k + c]) <= tol, $"b={bits} g={gs} r={r} c={c}: {w[r * k + c]} → {d[r * k + c]} (s={s})");
                }
        }
    }

    [Fact]
    public void Quantize_Symmetric_LevelsAreSymmetric()
    {
        float[] w = [-1f, -0.5f, 0.25f, 1f, .. new float[28]];
        var q = LutQuantizer.Quantize(w, 1, 32, LutFormat.Symmetric(2, 32));
        float[] d = LutReference.Dequantize(q);
        Assert.Equal(0f, (float)q.Offsets[0]);
        Assert.Equal(-1f, d[0], 2);
        Assert.Equal(1f, d[3], 2);
        Assert.Equal(d[0], -d[3]);
    }

    [Fact]
    public void Quantize_Ternary_IsAbsmeanBitNet()
    {
        float[] w = [0.9f, -0.04f, -2f, 0.4f, 0, 0, 0, 0];
        float[] wide = new float[32];
        w.CopyTo(wide, 0);
        var q = LutQuantizer.Quantize(wide, 1, 32, LutFormat.Ternary(32));
        double gamma = wide.Select(Math.Abs).Average();
        Assert.Equal((float)(BFloat16)(float)gamma, (float)q.Scales[0]);
        float[] d = LutReference.Dequantize(q);
        float s = (float)q.Scales[0];
        Assert.Equal(new[] { s, 0, -s, s, 0, 0, 0, 0 }, d.Take(8));
        // Per-row scopes differ per row.
        float[] two = [.. Enumerable.Repeat(1f, 32), .. Enumerable.Repeat(0.01f, 32)];
        var pr = LutQuantizer.Quantize(two, 2, 32, LutFormat.Ternary(32), TernaryScaleScope.PerRow);
        Assert.Equal(1f, (float)pr.Scales[0]);
        Assert.Equal(0.01f, (float)pr.Scales[1], 3);
    }

    [Fact]
    public void Quantize_ConstantGroup_IsExact()
    {
        float[] w = Enumerable.Repeat(0.375f, 64).ToArray();
        var q = LutQuantizer.Quantize(w, 1, 64, LutFormat.Asymmetric(3, 64));
        Assert.All(LutReference.Dequantize(q), v => Assert.Equal(0.375f, v));
    }

    [Fact]
    public void Quantize_RejectsBadShapesAndValues()
    {
        var ex = Assert.Throws<ArgumentException>(() => LutQuantizer.Quantize(new float[100], 1, 100, LutFormat.Asymmetric(2, 32)));
        Assert.Contains("multiple of the group size 32", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => LutQuantizer.Quantize([float.NaN, .. new float[31]], 1, 32, LutFormat.Asymmetric(2, 32)));
        Assert.Contains("not finite", ex.Message);
        Assert.Throws<NotSupportedException>(() => LutFormat.Asymmetric(5));
        Assert.Throws<NotSupportedException>(() => LutFormat.Asymmetric(2, 48));
        Assert.Throws<NotSupportedException>(() => new LutFormat(LutQuantKind.Ternary, 3, 128));
        Assert.Throws<ArgumentException>(() => new LutQuantizedMatrix(LutFormat.Asymmetric(1, 32), 1, 32, Enumerable.Repeat((byte)2, 32).ToArray(), new BFloat16[1], new BFloat16[1]));
    }

    private static LutWeights Sample(LutFormat f, int m = 70, int k = 256)
    {
        var q = LutQuantizer.Quantize(Inputs.Floats(new Random(1), m * k), m, k, f);
        return BitPlanePacking.Pack(q);
    }

    [Fact]
    public void Serializer_RoundTripsEveryFormat()
    {
        foreach (var f in new[] { LutFormat.Asymmetric(1, 32), LutFormat.Symmetric(3, 64), LutFormat.Asymmetric(4), LutFormat.Ternary(64) })
        {
            var w = Sample(f);
            var ms = new MemoryStream();
            LutSerializer.Write(w, ms);
            ms.Position = 0;
            var r = LutSerializer.Read(ms);
            Assert.Equal(f, r.Format);
            Assert.Equal((w.M, w.K), (r.M, r.K));
            Assert.Equal(w.Planes, r.Planes);
            Assert.Equal(w.Scales, r.Scales);
            Assert.Equal(w.Offsets, r.Offsets);
            Assert.Equal(ms.Length, ms.Position);
        }
    }

    [Fact]
    public void Serializer_Checksum_IsTheStandardCrc32OfThePrecedingBytes()
    {
        // The format's trailing checksum is CRC-32 (IEEE 802.3, as zlib): checked against a bitwise definition, so a change
        // of implementation cannot silently change the files written.
        var ms = new MemoryStream();
        LutSerializer.Write(Sample(LutFormat.Symmetric(3, 64), 9, 128), ms);
        byte[] bytes = ms.ToArray();
        Assert.Equal(BitwiseCrc32(bytes.AsSpan(0, bytes.Length - 4)), BitConverter.ToUInt32(bytes, bytes.Length - 4));
        Assert.Equal(0xCBF43926u, BitwiseCrc32("123456789"u8));

        static uint BitwiseCrc32(ReadOnlySpan<byte> data)
        {
            uint c = ~0u;
            foreach (byte b in data)
            {
                c ^= b;
                for (int j = 0; j < 8; j++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }
            return ~c;
        }
    }

    [Fact]
    public void Serializer_EveryTruncation_ThrowsInvalidData()
    {
        var ms = new MemoryStream();
        LutSerializer.Write(Sample(LutFormat.Asymmetric(2, 32), 3, 64), ms);
        byte[] bytes = ms.ToArray();
        for (int len = 0; len < bytes.Length; len++)
        {
            var ex = Assert.Throws<InvalidDataException>(() => LutSerializer.Read(new MemoryStream(bytes, 0, len)));
            Assert.Contains("offset", ex.Message);
        }
    }

    [Fact]
    public void Serializer_EverySingleByteCorruption_ThrowsInvalidData()
    {
        var ms = new MemoryStream();
        LutSerializer.Write(Sample(LutFormat.Asymmetric(3, 32), 5, 64), ms);
        byte[] bytes = ms.ToArray();
        var rng = new Random(7);
        for (int i = 0; i < bytes.Length; i++)
        {
            byte[] bad = (byte[])bytes.Clone();
            bad[i] ^= (byte)(1 << rng.Next(8));
            var ex = Assert.Throws<InvalidDataException>(() => LutSerializer.Read(new MemoryStream(bad)));
            Assert.Contains("offset", ex.Message);
        }
    }

    [Fact]
    public void Serializer_NonSeekableTruncatedStream_ThrowsInvalidData()
    {
        var ms = new MemoryStream();
        LutSerializer.Write(Sample(LutFormat.Asymmetric(2, 32), 3, 64), ms);
        byte[] bytes = ms.ToArray()[..^10];
        var ex = Assert.Throws<InvalidDataException>(() => LutSerializer.Read(new NonSeekable(bytes)));
        Assert.Contains("truncated", ex.Message);
    }

    [Fact]
    public void Serializer_RandomGarbage_ThrowsInvalidData()
    {
        var rng = new Random(3);
        for (int i = 0; i < 200; i++)
        {
            var bytes = new byte[rng.Next(0, 300)];
            rng.NextBytes(bytes);
            if (bytes.Length >= 4 && i % 2 == 0) "KLUT"u8.CopyTo(bytes);
            Assert.Throws<InvalidDataException>(() => LutSerializer.Read(new MemoryStream(bytes)));
        }
    }

    [Fact]
    public void Weights_RejectWrongArrayLengths()
    {
        var f = LutFormat.Asymmetric(2, 32);
        var ex = Assert.Throws<ArgumentException>(() => new LutWeights(f, 3, 32, new byte[10], new BFloat16[64], new BFloat16[64]));
        Assert.Equal("planes", ex.ParamName);
        Assert.Equal(16, MemoryMarshal.AsBytes(new BFloat16[8].AsSpan()).Length);
    }

    private sealed class NonSeekable(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();
    }
}
