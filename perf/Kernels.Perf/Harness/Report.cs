using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Kernels.Perf.Harness;

/// <summary>Prints the results table and writes JSON and Markdown under the results folder.</summary>
public static class Report
{
    private static readonly string[] Header = ["suite", "op", "format", "shape", "backend", "path", "median", "GB/s", "GFLOP/s", "% BW", "vs base", "extra", "check"];

    public static string FormatTime(double s) => s switch
    {
        < 1e-3 => (s * 1e6).ToString("F1", CultureInfo.InvariantCulture) + " us",
        < 1 => (s * 1e3).ToString("F3", CultureInfo.InvariantCulture) + " ms",
        _ => s.ToString("F3", CultureInfo.InvariantCulture) + " s",
    };

    /// <summary>Numbers align right, text left.</summary>
    private static string Pad(string cell, string column, int width) =>
        column is "median" or "GB/s" or "GFLOP/s" or "% BW" or "vs base" ? cell.PadLeft(width) : cell.PadRight(width);

    private static string[] Row(BenchResult r) =>
    [
        r.Suite, r.Op, r.Format, r.Shape, r.Backend, r.Path, FormatTime(r.MedianSeconds),
        r.GBps.ToString("F1", CultureInfo.InvariantCulture),
        r.GFlops > 0 ? r.GFlops.ToString("F1", CultureInfo.InvariantCulture) : "-",
        r.PercentOfBandwidth > 0 ? r.PercentOfBandwidth.ToString("F0", CultureInfo.InvariantCulture) + "%" : "-",
        r.VsBaseline is { } v ? v.ToString("F2", CultureInfo.InvariantCulture) + "x" : "-",
        r.Extra ?? "",
        r.Verified,
    ];

    /// <summary>The Markdown table of every column (the report file).</summary>
    public static string MarkdownTable(IReadOnlyList<BenchResult> results)
    {
        var rows = new List<string[]> { Header };
        rows.AddRange(results.Select(Row));
        int[] widths = Enumerable.Range(0, Header.Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        var sb = new StringBuilder();
        for (int i = 0; i < rows.Count; i++)
        {
            sb.AppendLine("| " + string.Join(" | ", rows[i].Select((cell, c) => Pad(cell, Header[c], widths[c]))) + " |");
            if (i == 0) sb.AppendLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
        }
        return sb.ToString();
    }

    /// <summary>The terminal form: one table per suite, the backend column only when the run has more than one backend, and
    /// each row's extra ratios on an indented line under it (wrapped), so rows stay within a normal terminal's width.</summary>
    public static string ConsoleTable(IReadOnlyList<BenchResult> results, int width = 120)
    {
        bool backends = results.Select(r => r.Backend).Distinct().Count() > 1;
        string[] dropped = backends ? ["suite", "extra"] : ["suite", "extra", "backend"];
        int[] kept = Enumerable.Range(0, Header.Length).Where(c => !dropped.Contains(Header[c])).ToArray();
        string[] header = [.. kept.Select(c => Header[c])];
        var sb = new StringBuilder();
        foreach (var suite in results.GroupBy(r => r.Suite))
        {
            var rows = new List<string[]> { header };
            rows.AddRange(suite.Select(r => { var row = Row(r); return kept.Select(c => row[c]).ToArray(); }));
            int[] widths = Enumerable.Range(0, header.Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
            sb.AppendLine($"== {suite.Key} ==");
            var extras = suite.Select(r => r.Extra).ToList();
            for (int i = 0; i < rows.Count; i++)
            {
                sb.AppendLine(string.Join("  ", rows[i].Select((cell, c) => Pad(cell, header[c], widths[c]))).TrimEnd());
                if (i == 0) sb.AppendLine(string.Join("  ", widths.Select(w => new string('-', w))));
                else if (!string.IsNullOrEmpty(extras[i - 1])) AppendWrapped(sb, extras[i - 1]!, "    ↳ ", width);
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }

    private static void AppendWrapped(StringBuilder sb, string text, string indent, int width)
    {
        var line = new StringBuilder(indent);
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Length > indent.Length && line.Length + 1 + word.Length > width)
            {
                sb.AppendLine(line.ToString());
                line.Clear().Append(new string(' ', indent.Length));
            }
            if (line.Length > indent.Length) line.Append(' ');
            line.Append(word);
        }
        sb.AppendLine(line.ToString());
    }

    public static (string Json, string Markdown) Write(string folder, string machine, double bandwidth, double gpuBandwidth, IReadOnlyList<BenchResult> results, string tag)
    {
        Directory.CreateDirectory(folder);
        string stamp = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
        string json = Path.Combine(folder, $"{stamp}-{tag}.json");
        string md = Path.Combine(folder, $"{stamp}-{tag}.md");
        File.WriteAllText(json, JsonSerializer.Serialize(new { machine, bandwidthGBps = bandwidth / 1e9, gpuBandwidthGBps = gpuBandwidth / 1e9, results }, new JsonSerializerOptions { WriteIndented = true }));
        var sb = new StringBuilder();
        sb.AppendLine($"# Kernels bench, {stamp} ({tag})").AppendLine();
        sb.AppendLine($"Machine: {machine}").AppendLine();
        sb.AppendLine($"Measured DRAM read bandwidth: {bandwidth / 1e9:F1} GB/s (all threads; the better of a plain vector sum and a software-prefetched two-stream read over 1 GiB, best of the measurements at the start and end of the run)" + (gpuBandwidth > 0 ? $"; GPU memory read bandwidth: {gpuBandwidth / 1e9:F0} GB/s" : "") + @". GB/s = bytes the kernel must move / median time; % BW is against that bandwidth; 'vs base' = baseline time / this time (>1 is faster).").AppendLine();
        sb.Append(MarkdownTable(results));
        var notes = results.Where(r => r.Note is not null).ToList();
        if (notes.Count > 0)
        {
            sb.AppendLine().AppendLine("Notes:");
            foreach (var r in notes) sb.AppendLine($"- {r.Op} {r.Format} {r.Shape}: {r.Note}");
        }
        File.WriteAllText(md, sb.ToString());
        return (json, md);
    }
}
