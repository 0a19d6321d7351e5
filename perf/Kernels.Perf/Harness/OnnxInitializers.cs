using System.Buffers.Binary;

namespace Kernels.Perf.Harness;

/// <summary>
/// Reads the fp32 initializers (trained weights) of an ONNX model with a minimal protobuf walker, enough to get real trained
/// weights for the DFloat11 benchmark without an ONNX dependency: <c>ModelProto.graph</c> (field 7) →
/// <c>GraphProto.initializer</c> (field 5, repeated <c>TensorProto</c>) → <c>dims</c> (1), <c>data_type</c> (2; 1 = FLOAT),
/// <c>float_data</c> (4, packed), <c>name</c> (8), <c>raw_data</c> (9, little-endian). Other tensors are skipped.
/// </summary>
public static class OnnxInitializers
{
    /// <summary>One fp32 initializer.</summary>
    /// <param name="Name">The tensor's name.</param>
    /// <param name="Dims">Its shape.</param>
    /// <param name="Values">Its values, row-major.</param>
    public sealed record Tensor(string Name, long[] Dims, float[] Values);

    /// <summary>Every FLOAT initializer of the model in <paramref name="onnx"/>.</summary>
    /// <exception cref="InvalidDataException">The protobuf is malformed or a tensor's data does not match its dims.</exception>
    public static List<Tensor> Read(ReadOnlySpan<byte> onnx)
    {
        var result = new List<Tensor>();
        foreach (var (field, graph) in Messages(onnx))
            if (field == 7)
                foreach (var (f, tensor) in Messages(graph.Span))
                    if (f == 5 && ParseTensor(tensor.Span) is { } t) result.Add(t);
        return result;
    }

    private static Tensor? ParseTensor(ReadOnlySpan<byte> m)
    {
        var dims = new List<long>();
        int type = 0;
        string name = "";
        ReadOnlySpan<byte> raw = default, packed = default;
        var floats = new List<float>();
        int p = 0;
        while (p < m.Length)
        {
            ulong key = Varint(m, ref p);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            if (wire == 0)
            {
                ulong v = Varint(m, ref p);
                if (field == 1) dims.Add((long)v);
                else if (field == 2) type = (int)v;
            }
            else if (wire == 2)
            {
                var body = Bytes(m, ref p);
                if (field == 1) for (int q = 0; q < body.Length;) dims.Add((long)Varint(body, ref q));
                else if (field == 4) packed = body;
                else if (field == 8) name = System.Text.Encoding.UTF8.GetString(body);
                else if (field == 9) raw = body;
            }
            else if (wire == 5)
            {
                int at = p;
                Skip(m, ref p, 4);
                if (field == 4) floats.Add(BinaryPrimitives.ReadSingleLittleEndian(m[at..]));
            }
            else if (wire == 1) Skip(m, ref p, 8);
            else throw new InvalidDataException($"unsupported wire type {wire} at offset {p}");
        }
        if (type != 1) return null;
        long count = 1;
        foreach (long d in dims)
        {
            if (d < 0 || (d > 0 && count > Array.MaxLength / d)) throw new InvalidDataException($"tensor '{name}': dims [{string.Join(", ", dims)}] are negative or too large");
            count *= d;
        }
        float[] values;
        if (!raw.IsEmpty)
        {
            if (raw.Length != count * 4) throw new InvalidDataException($"tensor '{name}': raw_data is {raw.Length} bytes, dims need {count * 4}");
            values = new float[count];
            for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadSingleLittleEndian(raw[(4 * i)..]);
        }
        else
        {
            for (int q = 0; q + 4 <= packed.Length; q += 4) floats.Add(BinaryPrimitives.ReadSingleLittleEndian(packed[q..]));
            if (floats.Count != count) throw new InvalidDataException($"tensor '{name}': {floats.Count} floats, dims need {count}");
            values = [.. floats];
        }
        return new Tensor(name, [.. dims], values);
    }

    /// <summary>The length-delimited fields of a message, with their field numbers (other wire types skipped).</summary>
    private static List<(int Field, ReadOnlyMemory<byte> Body)> Messages(ReadOnlySpan<byte> m)
    {
        var list = new List<(int, ReadOnlyMemory<byte>)>();
        int p = 0;
        while (p < m.Length)
        {
            ulong key = Varint(m, ref p);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: Varint(m, ref p); break;
                case 1: Skip(m, ref p, 8); break;
                case 5: Skip(m, ref p, 4); break;
                case 2: list.Add((field, Bytes(m, ref p).ToArray())); break;
                default: throw new InvalidDataException($"unsupported wire type {wire} at offset {p}");
            }
        }
        return list;
    }

    /// <summary>Skips a fixed-size field of <paramref name="n"/> bytes.</summary>
    private static void Skip(ReadOnlySpan<byte> m, ref int p, int n)
    {
        if (n > m.Length - p) throw new InvalidDataException($"truncated {n * 8}-bit field at offset {p}: {m.Length - p} bytes left");
        p += n;
    }

    private static ReadOnlySpan<byte> Bytes(ReadOnlySpan<byte> m, scoped ref int p)
    {
        ulong len = Varint(m, ref p);
        if (len > (ulong)(m.Length - p)) throw new InvalidDataException($"field length {len} at offset {p} exceeds the {m.Length - p} bytes left");
        var body = m.Slice(p, (int)len);
        p += (int)len;
        return body;
    }

    private static ulong Varint(ReadOnlySpan<byte> m, ref int p)
    {
        ulong v = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (p >= m.Length) throw new InvalidDataException($"truncated varint at offset {p}");
            byte b = m[p++];
            v |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return v;
        }
        throw new InvalidDataException($"varint longer than 10 bytes before offset {p}");
    }
}
