using Kernels.Quant.Fpx;

namespace Kernels.Tests.Fpx;

public class FpxSerializerTests
{
    [Theory]
    [InlineData(FpxFormat.Fp6E3M2)]
    [InlineData(FpxFormat.Fp5E2M2)]
    public void Fpx_RoundTrips(FpxFormat f)
    {
        var w = FpxGemmTests.RandomWeights(new Random(1), 5, 100, f);
        var back = FpxSerializer.DeserializeFpx(FpxSerializer.Serialize(w));
        Assert.Equal(w.Format, back.Format);
        Assert.Equal(w.GetCodes(), back.GetCodes());
        Assert.Equal(w.Scales.ToArray(), back.Scales.ToArray());
    }

    [Fact]
    public void Int6_RoundTrips()
    {
        var w = Int6GemmTests.RandomWeights(new Random(2), 3, 300, 128);
        var back = FpxSerializer.DeserializeInt6(FpxSerializer.Serialize(w));
        Assert.Equal(w.GetValues(), back.GetValues());
        Assert.Equal(w.Scales.ToArray(), back.Scales.ToArray());
        Assert.Equal(128, back.GroupSize);
    }

    [Fact]
    public void Truncated_ThrowsInvalidData_AtEveryLength()
    {
        byte[] data = FpxSerializer.Serialize(FpxGemmTests.RandomWeights(new Random(3), 2, 70, FpxFormat.Fp6E3M2));
        for (int len = 0; len < data.Length; len++)
            Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeFpx(data.AsSpan(0, len)));
        var ex = Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeFpx(data.AsSpan(0, data.Length - 1)));
        Assert.Contains("Truncated", ex.Message);
    }

    [Fact]
    public void CorruptByte_ThrowsInvalidData_Everywhere()
    {
        byte[] data = FpxSerializer.Serialize(Int6GemmTests.RandomWeights(new Random(4), 2, 64, 64));
        for (int i = 0; i < data.Length; i++)
        {
            foreach (byte flip in new byte[] { 0x01, 0x80 })
            {
                byte[] bad = (byte[])data.Clone();
                bad[i] ^= flip;
                Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeInt6(bad));
            }
        }
    }

    [Fact]
    public void RandomGarbage_NeverThrowsAnythingElse()
    {
        var rng = new Random(5);
        byte[] good = FpxSerializer.Serialize(FpxGemmTests.RandomWeights(new Random(3), 2, 70, FpxFormat.Fp5E2M2));
        for (int t = 0; t < 300; t++)
        {
            byte[] bad = (byte[])good.Clone();
            int edits = rng.Next(1, 6);
            for (int e = 0; e < edits; e++) bad[rng.Next(bad.Length)] = (byte)rng.Next(256);
            if (bad.AsSpan().SequenceEqual(good)) continue;
            Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeFpx(bad));
        }
    }

    [Fact]
    public void WrongKindOrVersion_ThrowsWithOffset()
    {
        byte[] data = FpxSerializer.Serialize(FpxGemmTests.RandomWeights(new Random(3), 1, 64, FpxFormat.Fp6E3M2));
        Assert.Contains("DeserializeFpx", Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeInt6(data)).Message);
        data[4] = 9;
        Assert.Contains("offset 4", Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeFpx(data)).Message);
    }

    [Fact]
    public void HeaderBitFlips_ThatKeepThePayloadSize_ThrowInvalidData()
    {
        // 5 × 130 pads to 192 columns: column counts 129 … 192 imply the same payload, so only the header hash (version 2)
        // catches a flipped column bit.
        byte[] data = FpxSerializer.Serialize(FpxGemmTests.RandomWeights(new Random(6), 5, 130, FpxFormat.Fp6E3M2));
        for (int i = 0; i < FpxSerializer.HeaderBytes; i++)
            for (int bit = 0; bit < 8; bit++)
            {
                byte[] bad = (byte[])data.Clone();
                bad[i] ^= (byte)(1 << bit);
                Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeFpx(bad));
            }
    }

    [Fact]
    public void Version1_PayloadOnlyHash_IsStillRead()
    {
        var w = FpxGemmTests.RandomWeights(new Random(7), 3, 100, FpxFormat.Fp5E2M2);
        byte[] v1 = FpxSerializer.Serialize(w);
        v1[4] = 1; // version 1 hashed the payload alone (FNV-1a 64)
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(v1.AsSpan(20), Fnv1a(v1.AsSpan(FpxSerializer.HeaderBytes)));
        var back = FpxSerializer.DeserializeFpx(v1);
        Assert.Equal(FpxSerializer.Serialize(w), FpxSerializer.Serialize(back));
    }

    [Fact]
    public void Version2_HeaderAndPayloadFnvHash_IsStillRead()
    {
        var w = Int6GemmTests.RandomWeights(new Random(8), 4, 130, 64);
        byte[] v2 = FpxSerializer.Serialize(w);
        v2[4] = 2; // version 2: FNV-1a 64 of header bytes 0..19, then the payload
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(v2.AsSpan(20), Fnv1a(v2.AsSpan(FpxSerializer.HeaderBytes), Fnv1a(v2.AsSpan(0, 20))));
        var back = FpxSerializer.DeserializeInt6(v2);
        Assert.Equal(FpxSerializer.Serialize(w), FpxSerializer.Serialize(back));
        v2[^1] ^= 1;
        Assert.Contains("Hash mismatch", Assert.Throws<InvalidDataException>(() => FpxSerializer.DeserializeInt6(v2)).Message);
    }

    [Fact]
    public void Checksum_IsTheCrc64OfHeaderThenPayload()
    {
        // Version 3's field at offset 20 is CRC-64/ECMA-182 as System.IO.Hashing computes it (its check value for
        // "123456789" is 0x6C40DF5F0B497347), over header bytes 0..19 and then the payload.
        Assert.Equal(0x6C40DF5F0B497347UL, System.IO.Hashing.Crc64.HashToUInt64("123456789"u8));
        byte[] data = FpxSerializer.Serialize(FpxGemmTests.RandomWeights(new Random(9), 2, 64, FpxFormat.Fp6E3M2));
        Assert.Equal(3, data[4]);
        byte[] covered = [.. data.AsSpan(0, 20), .. data.AsSpan(FpxSerializer.HeaderBytes)];
        Assert.Equal(System.IO.Hashing.Crc64.HashToUInt64(covered), System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(20)));
    }

    private static ulong Fnv1a(ReadOnlySpan<byte> data, ulong h = 14695981039346656037UL)
    {
        foreach (byte b in data)
        {
            h ^= b;
            h *= 1099511628211UL;
        }
        return h;
    }
}
