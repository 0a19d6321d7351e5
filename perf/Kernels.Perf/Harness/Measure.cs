using System.Diagnostics;

namespace Kernels.Perf.Harness;

/// <summary>Times a case: warm-up, then repeated calls until a time budget is spent; reports the median.</summary>
public static class Measure
{
    public static (double Median, double Min, int Iterations) Time(Action<int> run, double budgetSeconds, int minIterations = 5, int maxIterations = 2000)
    {
        run(0); // warm-up: JIT tiering, page faults, GPU module load
        run(1);
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        int i = 2;
        while ((samples.Count < minIterations || total.Elapsed.TotalSeconds < budgetSeconds) && samples.Count < maxIterations)
        {
            long t0 = Stopwatch.GetTimestamp();
            run(i++);
            samples.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        samples.Sort();
        return (samples[samples.Count / 2], samples[0], samples.Count);
    }

    /// <summary>Times <paramref name="baseline"/> and <paramref name="run"/> in alternation (A B, then B A, …, so a drift
    /// within a pair cancels over two pairs) until the budget is spent; returns the median over pairs of
    /// t(baseline) / t(run) (&gt; 1: run is faster) and the number of pairs.</summary>
    public static (double Ratio, int Pairs) Interleaved(Action<int> baseline, Action<int> run, double budgetSeconds, int minPairs = 9, int maxPairs = 1000)
    {
        baseline(0);
        run(0);
        var ratios = new List<double>();
        var total = Stopwatch.StartNew();
        for (int i = 1; (ratios.Count < minPairs || total.Elapsed.TotalSeconds < budgetSeconds) && ratios.Count < maxPairs; i++)
        {
            double tb, tr;
            if ((i & 1) != 0)
            {
                tb = Once(baseline, i);
                tr = Once(run, i);
            }
            else
            {
                tr = Once(run, i);
                tb = Once(baseline, i);
            }
            ratios.Add(tb / tr);
        }
        ratios.Sort();
        return (ratios[ratios.Count / 2], ratios.Count);
    }

    private static double Once(Action<int> run, int i)
    {
        long t0 = Stopwatch.GetTimestamp();
        run(i);
        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }
}
