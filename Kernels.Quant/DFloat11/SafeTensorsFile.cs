using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Kernels.Quant.DFloat11;

/// <summary>Reads and writes safetensors files holding bf16 tensors (AOT-safe: Utf8JsonReader/Writer, no reflection).</summary>
/// <remarks>
/// Layout (huggingface/safetensors): <c>u64 LE header length N</c>, <c>N</c> bytes of UTF-8 JSON
/// <c>{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}</c>, then the data
/// section; offsets are relative to it, little-endian element bytes. Only <c>BF16</c> tensors are supported.
/// </remarks>
public static class SafeTensorsFile
{
    /// <summary>Parses a safetensors file.</summary>
    /// <param name="file">The whole file.</param>
    /// <returns>The tensors in data-offset order.</returns>
    /// <exception cref="InvalidDataException">Truncated file, malformed JSON header, or offsets outside the data section or not matching the shape.</exception>
    /// <exception cref="NotSupportedException">A tensor's dtype is not BF16 (the message names it).</exception>
    public static IReadOnlyList<SafeTensor> Read(ReadOnlySpan<byte> file)
    {
        if (file.Length < 8) throw new InvalidDataException($"safetensors file is {file.Length} bytes; the 8-byte header length is missing.");
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (headerLen > (ulong)(file.Length - 8)) throw new InvalidDataException($"header length {headerLen} exceeds the {file.Length - 8} bytes after offset 8.");
        ReadOnlySpan<byte> header = file.Slice(8, (int)headerLen);
        ReadOnlySpan<byte> data = file.Slice(8 + (int)headerLen);
        var entries = new List<(string Name, string DType, int[] Shape, long Begin, long End)>();
        try
        {
            var reader = new Utf8JsonReader(header);
            Expect(reader.Read() && reader.TokenType == JsonTokenType.StartObject, "header must be a JSON object");
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                string name = reader.GetString()!;
                Expect(reader.Read() && reader.TokenType == JsonTokenType.StartObject, $"entry '{name}' must be an object");
                if (name == "__metadata__")
                {
                    reader.Skip();
                    continue;
                }
                string? dtype = null;
                int[]? shape = null;
                long begin = -1, end = -1;
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    string key = reader.GetString()!;
                    reader.Read();
                    switch (key)
                    {
                        case "dtype":
                            dtype = reader.GetString();
                            break;
                        case "shape":
                            Expect(reader.TokenType == JsonTokenType.StartArray, $"'{name}'.shape must be an array");
                            var dims = new List<int>();
                            while (reader.Read() && reader.TokenType == JsonTokenType.Number) dims.Add(reader.GetInt32());
                            shape = dims.ToArray();
                            break;
                        case "data_offsets":
                            Expect(reader.TokenType == JsonTokenType.StartArray, $"'{name}'.data_offsets must be an array");
                            reader.Read();
                            begin = reader.GetInt64();
                            reader.Read();
                            end = reader.GetInt64();
                            reader.Read();
                            Expect(reader.TokenType == JsonTokenType.EndArray, $"'{name}'.data_offsets must have two entries");
                            break;
                        default:
                            reader.Skip();
                            break;
                    }
                }
                Expect(dtype is not null && shape is not null && begin >= 0, $"entry '{name}' lacks dtype, shape or data_offsets");
                entries.Add((name, dtype!, shape!, begin, end));
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"malformed safetensors JSON header: {e.Message}", e);
        }
        var result = new List<SafeTensor>(entries.Count);
        foreach (var (name, dtype, dims, begin, end) in entries.OrderBy(e => e.Begin))
        {
            if (dtype != "BF16") throw new NotSupportedException($"tensor '{name}' has dtype {dtype}; only BF16 is supported.");
            long count = 1;
            foreach (int d in dims)
            {
                if (d < 0) throw new InvalidDataException($"tensor '{name}' has a negative dimension.");
                count *= d;
                if (count > int.MaxValue) throw new InvalidDataException($"tensor '{name}' has more than {int.MaxValue} elements.");
            }
            if (begin > end || end > data.Length || end - begin != 2 * count)
                throw new InvalidDataException($"tensor '{name}' data_offsets [{begin}, {end}] do not fit the {data.Length}-byte data section or its {count} bf16 elements.");
            var values = new BFloat16[count];
            ReadOnlySpan<byte> bytes = data.Slice((int)begin, (int)(end - begin));
            for (int i = 0; i < values.Length; i++) values[i] = BFloat16.FromBits(BinaryPrimitives.ReadUInt16LittleEndian(bytes.Slice(2 * i)));
            result.Add(new SafeTensor(name, new TensorShape(dims), values));
        }
        return result;
    }

    /// <summary>Writes bf16 tensors as a safetensors file (in the given order, data 8-byte aligned by header padding).</summary>
    /// <param name="destination">The output stream.</param>
    /// <param name="tensors">The tensors; names must be unique.</param>
    /// <exception cref="ArgumentException">A duplicate name or a shape that does not match its values.</exception>
    public static void Write(Stream destination, IEnumerable<SafeTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        var json = new MemoryStream();
        using (var w = new Utf8JsonWriter(json))
        {
            w.WriteStartObject();
            long offset = 0;
            foreach (var t in list)
            {
                if (!names.Add(t.Name)) ThrowHelper.Argument(nameof(tensors), $"duplicate tensor name '{t.Name}'.");
                ThrowHelper.ThrowIfLengthMismatch(nameof(tensors), t.Values.Length, t.Shape.ElementCount);
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", "BF16");
                w.WriteStartArray("shape");
                foreach (int d in t.Shape.Lengths) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                offset += 2L * t.Values.Length;
                w.WriteNumberValue(offset);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        // Pad the header with spaces so the data section starts 8-byte aligned (allowed by the format).
        while (json.Length % 8 != 0) json.WriteByte((byte)' ');
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
        destination.Write(len);
        destination.Write(json.GetBuffer(), 0, (int)json.Length);
        foreach (var t in list)
        {
            if (BitConverter.IsLittleEndian) destination.Write(MemoryMarshal.AsBytes(t.Values.AsSpan()));
            else
            {
                var buf = new byte[2 * t.Values.Length];
                for (int i = 0; i < t.Values.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(buf.AsSpan(2 * i), t.Values[i].Bits);
                destination.Write(buf);
            }
        }
    }

    private static void Expect(bool condition, string message)
    {
        if (!condition) throw new InvalidDataException("malformed safetensors header: " + message + ".");
    }
}
