using Kernels.Tests.TestUtilities;

namespace Kernels.Tests.Cpu;

/// <summary>
/// Runs every public CPU dispatcher in child processes under the runtime's own ISA switches, asserting first that each
/// switch took effect (switch names change between releases), then that every probe check passed.
/// </summary>
public class DispatcherProcessTests
{
    public static TheoryData<string, string, string, string> Configurations => new()
    {
        // switch, value, expected Vector512, expected best path
        { "", "", "", "" },
        { "DOTNET_PreferredVectorBitWidth", "256", "False", "Avx2" },
        { "DOTNET_EnableAVX512", "0", "False", "Avx2" },
        { "DOTNET_EnableAVX2", "0", "False", "Vector128" },
        { "DOTNET_EnableHWIntrinsic", "0", "False", "Scalar" },
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public void Dispatchers_UnderRuntimeSwitch_MatchReference(string variable, string value, string expectVector512, string expectBest)
    {
        var env = new Dictionary<string, string>();
        if (variable.Length > 0) env[variable] = value;
        var report = ProbeRunner.Run(env);
        Assert.True(report.Facts.ContainsKey("Best"), "probe printed no facts:\n" + report.Output);
        if (variable.Length > 0)
        {
            // This machine has AVX-512; on a narrower one the switch may already be the default, so only assert "not wider".
            Assert.Equal(expectVector512, report.Facts["Vector512"]);
            var order = new[] { "Scalar", "Vector128", "Avx2", "Avx512" };
            Assert.True(Array.IndexOf(order, report.Facts["Best"]) <= Array.IndexOf(order, expectBest),
                $"{variable}={value} should cap the path at {expectBest}; probe chose {report.Facts["Best"]}");
            if (Kernels.Cpu.CpuIsa.IsSupported(Enum.Parse<IsaPath>(expectBest)))
                Assert.Equal(expectBest, report.Facts["Best"]);
        }
        Assert.NotEmpty(report.Passed);
        Assert.True(report.Failed.Count == 0 && report.ExitCode == 0, $"{variable}={value}: " + string.Join("\n", report.Failed) + "\n" + report.Output);
    }

    [Fact]
    public void Dispatchers_Avx2WithoutAvxVnni_MatchReference()
    {
        // The AVX2 attention kernel takes int8-query dot products by AVX-VNNI where the CPU has it: this runs the other branch.
        var report = ProbeRunner.Run(new Dictionary<string, string> { ["DOTNET_EnableAVX512"] = "0", ["DOTNET_EnableAVXVNNI"] = "0" });
        Assert.True(report.Facts.ContainsKey("Best"), "probe printed no facts:\n" + report.Output);
        Assert.Equal("False", report.Facts["AvxVnni"]);
        if (Kernels.Cpu.CpuIsa.IsSupported(IsaPath.Avx2)) Assert.Equal("Avx2", report.Facts["Best"]);
        Assert.True(report.Failed.Count == 0 && report.ExitCode == 0, string.Join("\n", report.Failed) + "\n" + report.Output);
    }
}
