using System.Globalization;
using System.Reflection;
using BenchmarkDotNet.Running;
using Kernels;
using Kernels.Cpu;
using Kernels.Gpu;
using Kernels.Perf.Harness;

// Kernels bench CLI.
//   dotnet run -c Release --project perf/Kernels.Perf                     default suite (every family), table + results/
//   dotnet run -c Release --project perf/Kernels.Perf -- dense lut --filter 4096x4096 --isa Avx2 --backend all --quick
//   dotnet run -c Release --project perf/Kernels.Perf -- bdn --filter *Dense*   (BenchmarkDotNet)
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
const string Usage = "usage: Kernels.Perf [suite ...] [--filter text] [--isa Auto|Avx512|Avx2|Vector128|Scalar] [--threads N] " +
    "[--backend cpu|gpu|all] [--quick] [--verify-only] [--budget seconds] [--out dir] | list | bdn [BenchmarkDotNet args]";
if (args.Length > 0 && args[0] == "bdn")
{
    BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args[1..]);
    return 0;
}

var suites = typeof(Program).Assembly.GetTypes()
    .Where(t => typeof(IBenchSuite).IsAssignableFrom(t) && t is { IsInterface: false, IsAbstract: false })
    .Select(t => (IBenchSuite)Activator.CreateInstance(t)!)
    .OrderBy(s => s.Order).ThenBy(s => s.Name, StringComparer.Ordinal).ToList();

var selected = new List<string>();
var filters = new List<string>();
IsaPath isa = IsaPath.Auto;
string backend = "cpu";
bool quick = false, verifyOnly = false;
int threads = -1;
double budget = 0.4;
string outDir = Path.Combine(FindRepoRoot(), "perf", "results");
try
{
    for (int i = 0; i < args.Length; i++)
    {
        string a = args[i];
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value");
        switch (a)
        {
            case "--filter": filters.Add(Next()); break;
            case "--isa":
                string isaName = Next();
                if (!Enum.TryParse(isaName, ignoreCase: true, out isa) || !Enum.IsDefined(isa))
                    throw new ArgumentException($"--isa {isaName}: expected one of {string.Join(", ", Enum.GetNames<IsaPath>())}");
                break;
            case "--backend":
                backend = Next().ToLowerInvariant();
                if (backend is not ("cpu" or "gpu" or "all")) throw new ArgumentException($"--backend {backend}: expected cpu, gpu or all");
                break;
            case "--threads":
                string n = Next();
                if (!int.TryParse(n, NumberStyles.Integer, CultureInfo.InvariantCulture, out threads) || threads == 0 || threads < -1)
                    throw new ArgumentException($"--threads {n}: expected a positive thread count (or -1 for all cores)");
                break;
            case "--quick": quick = true; break;
            case "--verify-only": verifyOnly = true; break;
            case "--budget":
                string b = Next();
                if (!double.TryParse(b, NumberStyles.Float, CultureInfo.InvariantCulture, out budget) || !(budget > 0))
                    throw new ArgumentException($"--budget {b}: expected a positive number of seconds");
                break;
            case "--out": outDir = Next(); break;
            case "list":
                foreach (var s in suites) Console.WriteLine($"{s.Name,-12} {s.Description}");
                return 0;
            case "-h" or "--help":
                Console.WriteLine(Usage);
                return 0;
            default:
                if (a.StartsWith('-')) throw new ArgumentException($"unknown option {a}");
                selected.Add(a.ToLowerInvariant());
                break;
        }
    }
    if (selected.Count > 0 && !selected.Contains("default"))
    {
        var unknown = selected.Where(n => suites.All(s => s.Name != n)).ToList();
        if (unknown.Count > 0) throw new ArgumentException($"unknown suite(s) {string.Join(", ", unknown)}; known: {string.Join(", ", suites.Select(s => s.Name))}");
        suites = suites.Where(s => selected.Contains(s.Name)).ToList();
    }
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine(Usage);
    return 2;
}

var options = new KernelOptions { Isa = isa, MaxDegreeOfParallelism = threads };
GpuBackend? gpu = null;
if (backend is "gpu" or "all")
{
    if (GpuBackend.IsCudaAvailable()) gpu = GpuBackend.CreateCuda();
    else Console.Error.WriteLine("warning: --backend " + backend + ": no CUDA device found; GPU cases skipped.");
}
var ctx = new BenchContext { Options = options, Cpu = backend is "cpu" or "all", Gpu = gpu, Quick = quick, Filters = filters };
var cpuInfo = new CpuBackend(options).Describe();
string machine = $"{Environment.ProcessorCount} cores; {cpuInfo.Details}; {MemoryPages.Describe()}" + (gpu is null ? "" : $"; GPU: {gpu.Describe()}");
Console.WriteLine($"Kernels bench — {machine}");

Console.Error.Write("Measuring DRAM read bandwidth (1 GiB buffer, all threads)... ");
double bwPlain = MemoryBandwidth.MeasurePlainRead(1L << 30, options.EffectiveParallelism);
double bwPrefetched = MemoryBandwidth.MeasurePrefetchedRead(1L << 30, options.EffectiveParallelism);
ctx.BandwidthBytesPerSecond = Math.Max(bwPlain, bwPrefetched);
double bw1 = MemoryBandwidth.MeasureRead(1L << 30, 1, passes: 3);
Console.Error.WriteLine("done");
Console.WriteLine($"DRAM read bandwidth: {ctx.BandwidthBytesPerSecond / 1e9:F1} GB/s with {options.EffectiveParallelism} threads " +
    $"(plain sum {bwPlain / 1e9:F1}, software-prefetched two-stream read {bwPrefetched / 1e9:F1}), {bw1 / 1e9:F1} GB/s with 1 thread");
if (gpu is not null)
{
    ctx.GpuBandwidthBytesPerSecond = GpuBandwidth.MeasureRead(gpu);
    Console.WriteLine($"GPU memory read bandwidth: {ctx.GpuBandwidthBytesPerSecond / 1e9:F1} GB/s ({gpu.Accelerator.Name})");
}

var results = new List<BenchResult>();
var byKey = new Dictionary<string, BenchResult>();
int index = 0, failures = 0;
foreach (var suite in suites)
{
    foreach (var c in suite.Create(ctx))
    {
        index++;
        Console.Error.Write($"[{index}] {suite.Name}: {c.Op} {c.Format} {c.Shape} {c.Backend} ... ");
        try
        {
            c.Run(0);
            string? error = c.Verify?.Invoke();
            string verified = c.Verify is null ? "n/a" : error is null ? "ok" : "FAIL";
            if (error is not null)
            {
                failures++;
                Console.Error.WriteLine($"VERIFY FAILED: {error}");
            }
            double median = 0, min = 0;
            int iters = 0;
            if (!verifyOnly && error is null)
            {
                (median, min, iters) = Measure.Time(c.Run, quick ? budget / 3 : budget);
                // Verify again after timing: the first call ran tier-0 code, the timed calls the optimized code.
                if (c.Verify?.Invoke() is { } late)
                {
                    failures++;
                    verified = "FAIL";
                    Console.Error.WriteLine($"VERIFY FAILED after timing (optimized code): {late}");
                }
            }
            double gbps = median > 0 ? c.Bytes / median / 1e9 : 0;
            double gflops = median > 0 && c.Flops > 0 ? c.Flops / median / 1e9 : 0;
            double bandwidth = c.Backend == "cpu" ? ctx.BandwidthBytesPerSecond : ctx.GpuBandwidthBytesPerSecond;
            double pct = median > 0 && bandwidth > 0 ? 100 * c.Bytes / median / bandwidth : 0;
            double? vs = c.BaselineKey is { } bk && byKey.TryGetValue(bk, out var b) && median > 0 ? b.MedianSeconds / median : null;
            string? extra = null;
            if (c.ExtraBaselines is { } eb && median > 0)
            {
                extra = string.Join(" ", eb.Where(kv => byKey.ContainsKey(kv.Value))
                    .Select(kv => $"{kv.Key} {byKey[kv.Value].MedianSeconds / median:F2}x"));
                if (extra.Length == 0) extra = null;
            }
            if (c.RateBaselines is { } rb && gflops > 0)
            {
                var rates = rb.Where(kv => byKey.TryGetValue(kv.Value, out var x) && x.GFlops > 0)
                    .Select(kv => $"{kv.Key} {gflops / byKey[kv.Value].GFlops:F2}x").ToList();
                if (rates.Count > 0) extra = string.Join(" ", extra is null ? rates : [extra, .. rates]);
            }
            foreach (var pair in median > 0 ? c.Paired ?? [] : [])
            {
                var (ratio, pairs) = Measure.Interleaved(pair.Run, c.Run, quick ? budget / 3 : budget);
                string text = $"{pair.Label} {ratio:F2}x (interleaved, {pairs} pairs)";
                extra = extra is null ? text : $"{extra} {text}";
            }
            var r = new BenchResult(suite.Name, c.Op, c.Format, c.Shape, c.Backend, c.Path, median, min, iters, gbps, gflops, pct, vs, verified, extra, c.Note);
            results.Add(r);
            byKey[r.Key] = r;
            Console.Error.WriteLine(median > 0 ? $"{Report.FormatTime(median)}, {gbps:F1} GB/s" : verified);
        }
        finally
        {
            c.Resources?.Dispose();
        }
    }
}

// Re-measure at the end: the VM's bandwidth drifts; the best of both is the fairest roof for % BW.
double bwEnd = MemoryBandwidth.MeasureRead(1L << 30, options.EffectiveParallelism);
Console.WriteLine($"DRAM read bandwidth at the end: {bwEnd / 1e9:F1} GB/s (start {ctx.BandwidthBytesPerSecond / 1e9:F1} GB/s)");
if (bwEnd > ctx.BandwidthBytesPerSecond)
{
    double f = ctx.BandwidthBytesPerSecond / bwEnd;
    for (int i = 0; i < results.Count; i++)
        if (results[i].Backend == "cpu") results[i] = results[i] with { PercentOfBandwidth = results[i].PercentOfBandwidth * f };
    ctx.BandwidthBytesPerSecond = bwEnd;
}
Console.WriteLine();
Console.Write(Report.ConsoleTable(results));
var (json, md) = Report.Write(outDir, machine, ctx.BandwidthBytesPerSecond, ctx.GpuBandwidthBytesPerSecond, results, gpu is null ? "cpu" : "gpu");
Console.WriteLine($"Results: {md} and {json}");
if (failures > 0) Console.WriteLine($"{failures} case(s) FAILED verification against the reference.");
gpu?.Dispose();
return failures == 0 ? 0 : 1;

static string FindRepoRoot()
{
    string? dir = AppContext.BaseDirectory;
    while (dir is not null && !File.Exists(Path.Combine(dir, "Kernels.sln"))) dir = Path.GetDirectoryName(dir);
    return dir ?? Directory.GetCurrentDirectory();
}
