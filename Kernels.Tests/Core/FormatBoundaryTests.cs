using System.Buffers.Binary;
using Kernels.Quant.DFloat11;
using Kernels.Quant.DFloat11.Reference;
using Kernels.Quant.Fpx;
using Kernels.Quant.Lut;
using Kernels.Quant.Reference;

namespace Kernels.Tests.Core;

/// <summary>Core types, weight formats, serializers and references at the edges of their ranges (zero-length dimensions, row
/// counts near <c>int.MaxValue</c>, headers claiming gigabytes, weights overflowing bf16 scales, corrupted length rows):
/// each input gives a documented exception or the right answer.</summary>
public class FormatBoundaryTests
{
    [Fact]
    public void TensorShape_ZeroLengthDimension_IsContiguousAndViewable()
    {
        Assert.True(new TensorShape(2, 0).IsContiguous);
        Assert.True(new TensorShape(0, 3, 0).IsContiguous);
        using var t = new HostTensor<float>(2, 0);
        Assert.Equal(0, t.AsView().Memory.Length);
        Assert.Equal(0, new TensorView<float>([], 3, 0).Memory.Length);
    }

    [Fact]
    public void LutSerializer_HugeRowCount_ThrowsInvalidData()
    {
        foreach (int m in new[] { int.MaxValue, int.MaxValue - 40 })
        {
            var e = Assert.Throws<InvalidDataException>(() => LutSerializer.Read(new MemoryStream(LutHeader(m, 32, bits: 2))));
            Assert.Contains("offset", e.Message);
        }
        Assert.True(LutWeights.PlaneBytesFor(LutFormat.Asymmetric(2, 32), int.MaxValue, 32) > 0);
        Assert.Throws<ArgumentException>(() => LutWeights.ScaleCountFor(default, 1, 32));
        Assert.Throws<ArgumentException>(() => BitPlanePacking.ByteIndex(default, 32, 0, 0, 0, 0, 0));
    }

    [Fact]
    public void LutSerializer_NonSeekableHeaderClaimingGigabytes_DoesNotAllocateThem()
    {
        // 65536 × 65536 at 3 bits: 1.6 GB of planes claimed by a 24-byte stream.
        var stream = new NonSeekable(LutHeader(65536, 65536, bits: 3));
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Throws<InvalidDataException>(() => LutSerializer.Read(stream));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 64 << 20, "allocated more than 64 MB for a 24-byte stream");
    }

    [Fact]
    public void LutSerializer_NonSeekable_LargeValidStream_RoundTrips()
    {
        var rng = new Random(5);
        var w = new float[256 * 4096];
        for (int i = 0; i < w.Length; i++) w[i] = (float)rng.NextDouble() - 0.5f;
        var packed = BitPlanePacking.Pack(LutQuantizer.Quantize(w, 256, 4096, LutFormat.Asymmetric(4, 128)));
        var ms = new MemoryStream();
        LutSerializer.Write(packed, ms);
        var read = LutSerializer.Read(new NonSeekable(ms.ToArray()));
        Assert.Equal(packed.Planes, read.Planes);
        Assert.Equal(packed.Scales, read.Scales);
        Assert.Equal(packed.Offsets, read.Offsets);
    }

    [Theory]
    [InlineData(LutQuantKind.Asymmetric, 1)]
    [InlineData(LutQuantKind.Symmetric, 1)]
    public void LutQuantizer_RangeOverflowingBf16_Throws(LutQuantKind kind, int bits)
    {
        var w = new float[32];
        for (int i = 0; i < w.Length; i++) w[i] = (i % 2 == 0 ? 1 : -1) * 3.0e38f;
        var e = Assert.Throws<ArgumentException>(() => LutQuantizer.Quantize(w, 1, 32, new LutFormat(kind, bits, 32)));
        Assert.Contains("group 0", e.Message);
    }

    [Fact]
    public void LutQuantizer_ConstantLargeGroup_KeepsItsValue()
    {
        var q = LutQuantizer.Quantize(Enumerable.Repeat(3.3e38f, 32).ToArray(), 1, 32, LutFormat.Asymmetric(2, 32));
        Assert.Equal((float)(BFloat16)3.3e38f, LutReference.Dequantize(q)[0]);
    }

    [Fact]
    public void FpxAccessors_OutOfRange_Throw()
    {
        var w = FpxWeights.Quantize(Enumerable.Range(0, 40).Select(i => (float)i).ToArray(), 4, 10, FpxFormat.Fp6E3M2);
        Assert.Throws<ArgumentOutOfRangeException>(() => w.CodeAt(-1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => w.CodeAt(4, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => w.CodeAt(0, 10));
        var i6 = Int6Weights.Quantize(new float[40], 4, 10, 64);
        Assert.Throws<ArgumentOutOfRangeException>(() => i6.ValueAt(0, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => i6.ValueAt(0, 20));
        Assert.Throws<ArgumentOutOfRangeException>(() => FpxPacking.CodeAt(new byte[16], new byte[32], 1, 0, 10, 6));
        Assert.Throws<ArgumentException>(() => FpxPacking.Pack([69], 1, 1, 6, new byte[16], new byte[32]));
        Assert.Throws<ArgumentException>(() => FpxPacking.Pack([1], 1, 1, 5, new byte[8], new byte[32], padCode: 32));
    }

    [Fact]
    public void FpxSerializer_ColumnCountBeyondPadding_ThrowsInvalidData()
    {
        byte[] data = FpxSerializer.Serialize(FpxWeights.Quantize(Array.Empty<float>(), 0, 0, FpxFormat.Fp6E3M2));
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(12), int.MaxValue);
        Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeFpx(data));
        Assert.Throws<ArgumentOutOfRangeException>(() => FpxWeights.Quantize(Array.Empty<float>(), 0, int.MaxValue, FpxFormat.Fp6E3M2));
    }

    [Fact]
    public void References_ShortBuffers_ThrowArgumentExceptions()
    {
        var q = LutQuantizer.Quantize(new float[32], 1, 32, LutFormat.Asymmetric(2, 32));
        Assert.Throws<ArgumentOutOfRangeException>(() => LutReference.Weight(q, -1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => LutReference.Weight(q, 0, 32));
        Assert.Throws<ArgumentException>(() => LutReference.Dot(q, 0, new float[3]));
        Assert.Throws<ArgumentException>(() => LutReference.RoundingScale(q, 0, new float[3]));
        Assert.Throws<ArgumentException>(() => LutReference.Int8TableErrorBound(q, 0, new float[3]));
        var f = FpxWeights.Quantize(new float[40], 4, 10, FpxFormat.Fp6E3M2);
        Assert.Throws<ArgumentException>(() => FpxReference.Gemm(f, new float[10], new float[4], 1, new double[1]));
        var i6 = Int6Weights.Quantize(new float[40], 4, 10, 64);
        Assert.Throws<ArgumentException>(() => FpxReference.GemmW6A16(i6, new float[10], new float[4], 1, new double[1]));
        Assert.Throws<ArgumentException>(() => DenseReference.AbsGemm(new float[1], new float[1], new double[1], 2, 2, 2));
    }

    [Fact]
    public void DFloat11_LengthRowMadeLonger_IsRejectedLikeTheOracle()
    {
        var rng = new Random(1);
        var values = new BFloat16[9000];
        for (int i = 0; i < values.Length; i++) values[i] = (BFloat16)(float)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < 50; i++) values[rng.Next(values.Length)] = BFloat16.FromBits((ushort)rng.Next(65536));
        var t = DFloat11Encoder.Encode(values);
        byte[] luts = t.Luts.ToArray();
        int lengthRow = luts.Length - 256, maxLength = t.Code.MaxLength;
        int symbol = Enumerable.Range(0, 239).First(s => luts[lengthRow + s] is > 8 and var l && l + 2 <= 24 && l < maxLength);
        luts[lengthRow + symbol] += 2; // its LUT run now covers four codes of the new length: three are a hole
        Assert.Throws<InvalidDataException>(() =>
            DFloat11Tensor.Create(t.Shape, luts, t.EncodedExponents, t.SignMantissa, t.OutputPositions, t.Gaps));
        Assert.Equal(values, DFloat11Reference.Decode(t)); // the clean tables still load and decode
    }

    private static byte[] LutHeader(int m, int k, int bits)
    {
        var h = new byte[24];
        "KLUT"u8.CopyTo(h);
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(4), 1);
        h[7] = (byte)bits;
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(8), 32);
        BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(10), 64);
        BinaryPrimitives.WriteInt32LittleEndian(h.AsSpan(12), m);
        BinaryPrimitives.WriteInt32LittleEndian(h.AsSpan(16), k);
        return h;
    }

    private sealed class NonSeekable(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();
    }
}
