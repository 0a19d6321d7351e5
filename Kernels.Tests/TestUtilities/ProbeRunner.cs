using System.Diagnostics;

namespace Kernels.Tests.TestUtilities;

/// <summary>Runs Kernels.Probe in a child process with a given environment and parses its report.</summary>
public static class ProbeRunner
{
    public sealed record Report(int ExitCode, Dictionary<string, string> Facts, List<string> Passed, List<string> Failed, string Output);

    public static Report Run(IReadOnlyDictionary<string, string> environment, string? filter = null)
    {
        string probe = Path.Combine(AppContext.BaseDirectory, "Kernels.Probe.dll");
        Assert.True(File.Exists(probe), $"probe not found at {probe}");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(probe);
        if (filter is not null) psi.ArgumentList.Add(filter);
        // Clear inherited runtime switches so only the ones under test apply.
        foreach (var key in psi.Environment.Keys.ToList())
        {
            if (key.StartsWith("DOTNET_", StringComparison.OrdinalIgnoreCase) && !key.Equals("DOTNET_ROOT", StringComparison.OrdinalIgnoreCase)
                || key.StartsWith("COMPlus_", StringComparison.OrdinalIgnoreCase))
            {
                psi.Environment.Remove(key);
            }
        }
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var facts = new Dictionary<string, string>();
        var passed = new List<string>();
        var failed = new List<string>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (line.StartsWith("fact ", StringComparison.Ordinal))
            {
                var kv = line[5..].Split('=', 2);
                facts[kv[0]] = kv[1];
            }
            else if (line.StartsWith("pass ", StringComparison.Ordinal)) passed.Add(line[5..]);
            else if (line.StartsWith("fail ", StringComparison.Ordinal)) failed.Add(line[5..]);
        }
        return new Report(p.ExitCode, facts, passed, failed, output + stderr.Result);
    }
}
