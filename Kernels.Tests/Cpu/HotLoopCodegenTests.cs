using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Cpu;

/// <summary>
/// Reads the JIT's code for every Kernels.Cpu method the probe's checks compile (dense, LUT, FP6/INT6, DFloat11 and
/// attention kernels; all of them are compiled fully optimised) and fails on any call to a helper that belongs inlined in
/// an inner loop: a vector load, store or other <c>System.Runtime.Intrinsics</c> method, an FMA group, a row loader, the
/// in-kernel RoPE rotation or the attention prefetcher. Such calls appear silently when a method outgrows the JIT's inline
/// budget: the attention tile step once did, and AVX2 fp16 decode ran 30 % slower. The probe runs in child processes with
/// <c>DOTNET_JitDisasm</c>, at the best width, with AVX-512 off and with AVX2 off.
/// </summary>
public class HotLoopCodegenTests
{
    // Calls that would mean an inner-loop helper was not inlined.
    private static readonly string[] Forbidden =
        ["System.Runtime.Intrinsics.", "Kernels.Cpu.Attention.PagePrefetch:", ":Load2(", ":Fma2(", ":Fma4(", ":Madd4(", ":SetRows(", ":RotatePair("];

    public static TheoryData<string, string> Configurations => new()
    {
        { "", "" },
        { "DOTNET_EnableAVX512", "0" },
        { "DOTNET_EnableAVX2", "0" },
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public void KernelMethods_InlineTheirInnerLoopHelpers(string variable, string value)
    {
        string file = Path.Combine(Path.GetTempPath(), $"kernels-jit-{Guid.NewGuid():N}.txt");
        try
        {
            var env = new Dictionary<string, string> { ["DOTNET_JitDisasm"] = "Kernels.Cpu.*:*", ["DOTNET_JitStdOutFile"] = file };
            if (variable.Length > 0) env[variable] = value;
            var report = ProbeRunner.Run(env);
            Assert.True(report.ExitCode == 0 && report.Failed.Count == 0, report.Output);
            Assert.True(File.Exists(file), $"no disassembly written ({variable}={value}); the runtime may not support DOTNET_JitStdOutFile:\n{report.Output}");
            var listings = File.ReadAllText(file).Split("; Assembly listing for method ", StringSplitOptions.RemoveEmptyEntries)
                .Where(l => l.StartsWith("Kernels.Cpu.", StringComparison.Ordinal)).ToList();
            Assert.Contains(listings, l => l.Contains("TileStep", StringComparison.Ordinal)); // the pattern matched the kernels
            if (variable.Length == 0 && System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
                Assert.Contains(listings, l => l.StartsWith("Kernels.Cpu.Attention.QueryLanes:Logits", StringComparison.Ordinal)); // the probe's prefill reaches them
            foreach (var listing in listings)
            {
                string method = listing[..listing.IndexOf('\n')];
                var bad = listing.Split('\n')
                    .Where(line => line.TrimStart().StartsWith("call", StringComparison.Ordinal) && Forbidden.Any(f => line.Contains(f, StringComparison.Ordinal)))
                    .Select(line => line.Trim()).Distinct().ToList();
                Assert.True(bad.Count == 0, $"{method} ({variable}={value}) calls inner-loop helpers the JIT should inline:\n{string.Join("\n", bad)}");
            }
        }
        finally
        {
            File.Delete(file);
        }
    }
}
