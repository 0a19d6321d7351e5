namespace Kernels.Perf.Harness;

/// <summary>Whether this process's large allocations (the KV pools: calloc through <c>NativeMemory.AllocZeroed</c>) may be
/// backed by transparent huge pages, for the report header: Linux's THP mode and glibc's <c>glibc.malloc.hugetlb</c> tunable.
/// In the kernel's <c>madvise</c> mode, glibc ≥ 2.35 started with <c>GLIBC_TUNABLES=glibc.malloc.hugetlb=1</c> asks for huge
/// pages on its mmap'ed chunks; without it such a pool is on 4 KB pages.</summary>
public static class MemoryPages
{
    /// <summary>For example "THP madvise, glibc.malloc.hugetlb off".</summary>
    public static string Describe()
    {
        const string path = "/sys/kernel/mm/transparent_hugepage/enabled";
        if (!OperatingSystem.IsLinux() || !File.Exists(path)) return "THP n/a";
        string mode = "?";
        try
        {
            // "always [madvise] never": the bracketed word is the mode.
            string text = File.ReadAllText(path);
            int a = text.IndexOf('['), b = text.IndexOf(']');
            if (a >= 0 && b > a) mode = text[(a + 1)..b];
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        string tunables = Environment.GetEnvironmentVariable("GLIBC_TUNABLES") ?? "";
        bool hugetlb = tunables.Split(':').Any(t => t.Trim() is "glibc.malloc.hugetlb=1" or "glibc.malloc.hugetlb=2");
        return $"THP {mode}, glibc.malloc.hugetlb {(hugetlb ? "on" : "off")}";
    }
}
