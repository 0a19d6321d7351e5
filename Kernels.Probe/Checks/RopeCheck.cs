using Kernels.Attention.Positional;
using Kernels.Cpu.Attention;

namespace Kernels.Probe.Checks;

/// <summary>RopeKernel's public dispatcher (NeoX and GPT-J pairs, a partial rotary_dim, in place and out of place) against
/// RopeReference.</summary>
public sealed class RopeCheck : IProbeCheck
{
    /// <inheritdoc/>
    public string Name => "rope";

    /// <inheritdoc/>
    public string? Run()
    {
        var rng = new Random(44);
        foreach (bool interleaved in new[] { false, true })
            foreach (int rotary in new[] { 0, 48 })
            {
                const int tokens = 5, heads = 3, d = 80;
                var options = new RopeOptions { Interleaved = interleaved, RotaryDim = rotary, Theta = 500_000, Llama31 = Llama31Scaling.Llama31 };
                var table = new RopeTable(options, d, maxPositions: 9000);
                int[] positions = [0, 1, 77, 8191, 8999];
                var x = ProbeData.Floats(rng, tokens * heads * d);
                float[] expected = new float[x.Length], actual = new float[x.Length];
                RopeReference.Apply(options, d, positions, x, expected);
                RopeKernel.Apply(table, positions, x, actual);
                var inPlace = (float[])x.Clone();
                RopeKernel.ApplyInPlace(table, positions, inPlace);
                for (int i = 0; i < x.Length; i++)
                {
                    // fp32 table entries and two fp32 roundings: well inside 2^-20 of the pair's magnitude for |x| ≤ 1.
                    if (!(Math.Abs(expected[i] - actual[i]) <= 1e-6 * (1 + Math.Abs(expected[i]))))
                        return $"interleaved={interleaved} rotary={rotary} seed=44: [{i}] expected {expected[i]}, got {actual[i]}";
                    if (BitConverter.SingleToInt32Bits(inPlace[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                        return $"interleaved={interleaved} rotary={rotary}: in place differs from out of place at [{i}]";
                }
            }
        return null;
    }
}
