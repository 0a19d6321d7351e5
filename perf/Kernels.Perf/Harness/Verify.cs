using Kernels.Quant.Reference;

namespace Kernels.Perf.Harness;

/// <summary>Helpers for the verify-before-timing step.</summary>
public static class Verify
{
    /// <summary>Rows of the output to check against the reference (all when small, else an evenly spread sample including the last).</summary>
    public static int[] SampleRows(int m, int max = 48)
    {
        if (m <= max) return Enumerable.Range(0, m).ToArray();
        var rows = Enumerable.Range(0, max - 1).Select(i => (int)((long)i * m / (max - 1))).ToList();
        rows.Add(m - 1);
        return rows.Distinct().ToArray();
    }

    /// <summary>Compares sampled outputs <c>y[j, r]</c> (layout [n, m]) with <paramref name="reference"/>(r, j) → (value, error scale).</summary>
    public static string? Rows(ReadOnlySpan<float> y, int m, int n, Func<int, int, (double Value, double Scale)> reference, double relTol, double absTol = 0)
    {
        int[] rows = SampleRows(m);
        int[] cols = n <= 4 ? Enumerable.Range(0, n).ToArray() : [0, n / 2, n - 1];
        var expected = new float[rows.Length * cols.Length];
        var actual = new float[expected.Length];
        var scale = new double[expected.Length];
        int i = 0;
        foreach (int j in cols)
            foreach (int r in rows)
            {
                var (v, s) = reference(r, j);
                expected[i] = (float)v;
                scale[i] = s;
                actual[i] = y[j * m + r];
                i++;
            }
        var result = ResultComparer.Compare(expected, actual, scale, relTol, absTol);
        return result.Passed ? null : result.ToString();
    }
}
