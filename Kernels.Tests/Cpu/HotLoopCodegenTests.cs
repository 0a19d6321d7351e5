using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Cpu;

/// <summary>
/// Checks the JIT's code for the attention tile step, the method every CPU attention call spends its time in, and the
/// pass methods it calls (logits, output): the passes are inlined into it, and when something new pushes it past the JIT's inline budget the small helpers of the inner loops
/// (vector loads and stores, FMA groups, row loaders, the prefetcher) silently become calls. That happened once
/// (AVX2 fp16 decode ran 30 % slower); this test reads the disassembly (<c>DOTNET_JitDisasm</c>) of a child process that
/// runs decode and prefill, at the best width and with AVX-512 switched off, and fails on any such call.
/// </summary>
public class HotLoopCodegenTests
{
    // Calls that would mean an inner-loop helper was not inlined.
    private static readonly string[] Forbidden =
        ["System.Runtime.Intrinsics.", "Kernels.Cpu.Attention.PagePrefetch:", ":Load2(", ":Fma2(", ":Fma4(", ":Madd4(", ":SetRows("];

    public static TheoryData<string, string> Configurations => new()
    {
        { "", "" },
        { "DOTNET_EnableAVX512", "0" },
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public void TileStep_InlinesItsInnerLoopHelpers(string variable, string value)
    {
        string file = Path.Combine(Path.GetTempPath(), $"kernels-jit-{Guid.NewGuid():N}.txt");
        try
        {
            var env = new Dictionary<string, string> { ["DOTNET_JitDisasm"] = "TileStep Logits4 Logits4Int Logits1 Accumulate4 Accumulate1", ["DOTNET_JitStdOutFile"] = file };
            if (variable.Length > 0) env[variable] = value;
            var report = ProbeRunner.Run(env, "paged-attention");
            Assert.True(report.ExitCode == 0 && report.Failed.Count == 0, report.Output);
            Assert.True(File.Exists(file), $"no disassembly written ({variable}={value}); the runtime may not support DOTNET_JitStdOutFile:\n{report.Output}");
            var listings = File.ReadAllText(file).Split("; Assembly listing for method ", StringSplitOptions.RemoveEmptyEntries)
                .Where(l => l.StartsWith("Kernels.Cpu.Attention.", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(listings);
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
