using System.Reflection;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kernels.Cpu;
using Kernels.Probe;

// Line-oriented report parsed by Kernels.Tests (DispatcherProcessTests): facts first, then one line per check.
Console.WriteLine($"fact Vector512={Vector512.IsHardwareAccelerated}");
Console.WriteLine($"fact Vector256={Vector256.IsHardwareAccelerated}");
Console.WriteLine($"fact Vector128={Vector128.IsHardwareAccelerated}");
Console.WriteLine($"fact Avx512F={Avx512F.IsSupported}");
Console.WriteLine($"fact Avx2={Avx2.IsSupported}");
Console.WriteLine($"fact AvxVnni={AvxVnni.IsSupported}");
Console.WriteLine($"fact Best={CpuIsa.Best}");

string? filter = args.Length > 0 ? args[0] : null;
int failed = 0;
var checks = Assembly.GetExecutingAssembly().GetTypes()
    .Where(t => typeof(IProbeCheck).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
    .Select(t => (IProbeCheck)Activator.CreateInstance(t)!)
    .OrderBy(c => c.Name, StringComparer.Ordinal);
foreach (var check in checks)
{
    if (filter is not null && !check.Name.Contains(filter, StringComparison.OrdinalIgnoreCase)) continue;
    string? error;
    try
    {
        error = check.Run();
    }
    catch (Exception e)
    {
        error = e.ToString().ReplaceLineEndings(" | ");
    }
    if (error is null) Console.WriteLine($"pass {check.Name}");
    else
    {
        failed++;
        Console.WriteLine($"fail {check.Name}: {error}");
    }
}
return failed == 0 ? 0 : 1;
