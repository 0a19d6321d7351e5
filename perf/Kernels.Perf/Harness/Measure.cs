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
}
