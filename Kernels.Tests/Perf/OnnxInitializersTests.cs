using System.Buffers.Binary;
using Kernels.Perf.Harness;

namespace Kernels.Tests.Perf;

/// <summary>The perf harness's minimal ONNX initializer reader: a hand-built model parses, and truncated or corrupted bytes
/// give a result or an <see cref="InvalidDataException"/>, never another exception or a read past the input.</summary>
public class OnnxInitializersTests
{
    private static void Varint(List<byte> o, ulong v)
    {
        for (; v >= 0x80; v >>= 7) o.Add((byte)(v | 0x80));
        o.Add((byte)v);
    }

    private static void Field(List<byte> o, int field, List<byte> body)
    {
        Varint(o, (ulong)(field << 3 | 2));
        Varint(o, (ulong)body.Count);
        o.AddRange(body);
    }

    private static void Number(List<byte> o, int field, ulong v)
    {
        Varint(o, (ulong)(field << 3));
        Varint(o, v);
    }

    /// <summary>A model with a 2×3 raw_data tensor, a packed float_data vector, an int64 tensor (skipped) and other fields.</summary>
    private static byte[] Model(float[] a, float[] b)
    {
        var raw = new List<byte>();
        Number(raw, 1, 2);
        Number(raw, 1, 3);
        Number(raw, 2, 1);
        Field(raw, 8, [.. "w.raw"u8.ToArray()]);
        var bytes = new byte[a.Length * 4];
        for (int i = 0; i < a.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), a[i]);
        Field(raw, 9, [.. bytes]);

        var packed = new List<byte>();
        var dims = new List<byte>();
        Varint(dims, (ulong)b.Length);
        Field(packed, 1, dims);                         // packed dims
        Number(packed, 2, 1);
        var fl = new byte[b.Length * 4];
        for (int i = 0; i < b.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(fl.AsSpan(4 * i), b[i]);
        Field(packed, 4, [.. fl]);
        Field(packed, 8, [.. "w.packed"u8.ToArray()]);

        var int64 = new List<byte>();
        Number(int64, 1, 2);
        Number(int64, 2, 7);                             // INT64: not read
        Field(int64, 9, [.. new byte[16]]);

        var graph = new List<byte>();
        Field(graph, 1, [.. "node"u8.ToArray()]);        // a node (skipped)
        Field(graph, 5, raw);
        Field(graph, 5, int64);
        Field(graph, 5, packed);

        var model = new List<byte>();
        Number(model, 1, 8);                              // ir_version
        Field(model, 7, graph);
        return [.. model];
    }

    [Fact]
    public void Read_HandBuiltModel_ReturnsFloatInitializers()
    {
        float[] a = [1, -2, 3.5f, 0, float.Epsilon, -0f], b = [7, 8, 9];
        var tensors = OnnxInitializers.Read(Model(a, b));
        Assert.Equal(2, tensors.Count);
        Assert.Equal("w.raw", tensors[0].Name);
        Assert.Equal([2L, 3L], tensors[0].Dims);
        Assert.Equal(a, tensors[0].Values);
        Assert.Equal("w.packed", tensors[1].Name);
        Assert.Equal([3L], tensors[1].Dims);
        Assert.Equal(b, tensors[1].Values);
    }

    [Fact]
    public void Read_TruncatedOrCorrupted_ThrowsInvalidDataOrParses()
    {
        byte[] good = Model([1, 2, 3, 4, 5, 6], [7, 8, 9]);
        var rng = new Random(12);
        for (int len = 0; len < good.Length; len++)
            Expect(good.AsSpan(0, len).ToArray(), $"truncated to {len} of {good.Length} bytes");
        for (int trial = 0; trial < 3000; trial++)
        {
            var bad = (byte[])good.Clone();
            int flips = 1 + rng.Next(4);
            for (int f = 0; f < flips; f++)
            {
                int at = rng.Next(bad.Length);
                bad[at] = rng.Next(3) switch { 0 => (byte)rng.Next(256), 1 => (byte)(bad[at] ^ (1 << rng.Next(8))), _ => 0xFF };
            }
            Expect(bad, $"trial {trial}");
        }
    }

    private static void Expect(byte[] bytes, string what)
    {
        try
        {
            foreach (var t in OnnxInitializers.Read(bytes))
            {
                long count = t.Dims.Aggregate(1L, (x, d) => x * d);
                Assert.True(count == t.Values.Length, $"{what}: '{t.Name}' has {t.Values.Length} values for dims [{string.Join(", ", t.Dims)}]");
            }
        }
        catch (InvalidDataException)
        {
        }
        catch (Exception e)
        {
            Assert.Fail($"{what}: {e.GetType().Name}: {e.Message}");
        }
    }
}
