namespace Kernels.Tests.TestUtilities;

/// <summary>Seeded random inputs, optionally sprinkled with edge values (NaN, ±Inf, subnormals, ±0).</summary>
public static class Inputs
{
    public static readonly float[] EdgeValues =
    [
        float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0f, 0f,
        float.Epsilon, -float.Epsilon, 1e-40f, -3e-39f, 1.17549435e-38f,
    ];

    /// <summary>Uniform values in [-scale, scale); with <paramref name="edges"/>, about 1 in <paramref name="edgeEvery"/> is an edge value.</summary>
    public static float[] Floats(Random rng, int count, float scale = 1f, bool edges = false, int edgeEvery = 64)
    {
        var a = new float[count];
        for (int i = 0; i < count; i++)
        {
            a[i] = edges && rng.Next(edgeEvery) == 0
                ? EdgeValues[rng.Next(EdgeValues.Length)]
                : (float)((rng.NextDouble() * 2 - 1) * scale);
        }
        return a;
    }

    /// <summary>Values with only subnormals, zeros and signed zeros: exercises the flush-free paths.</summary>
    public static float[] Subnormals(Random rng, int count)
    {
        var a = new float[count];
        for (int i = 0; i < count; i++) a[i] = BitConverter.Int32BitsToSingle(rng.Next(0, 0x007F_FFFF) | (rng.Next(2) << 31));
        return a;
    }
}
