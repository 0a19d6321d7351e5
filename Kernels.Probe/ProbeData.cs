namespace Kernels.Probe;

/// <summary>Random inputs for probe checks.</summary>
public static class ProbeData
{
    /// <summary>Uniform floats in [-1, 1).</summary>
    /// <param name="rng">Seeded generator.</param>
    /// <param name="count">How many.</param>
    /// <returns>The values.</returns>
    public static float[] Floats(Random rng, int count)
    {
        var a = new float[count];
        for (int i = 0; i < count; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }
}
