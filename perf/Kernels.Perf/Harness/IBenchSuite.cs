namespace Kernels.Perf.Harness;

/// <summary>A family of benchmark cases. Each kernel family adds one class in Suites/; the CLI finds them by reflection.</summary>
public interface IBenchSuite
{
    /// <summary>Name used on the command line (e.g. <c>dense</c>, <c>lut</c>).</summary>
    string Name { get; }

    /// <summary>One line describing the suite.</summary>
    string Description { get; }

    /// <summary>Order in the default run (dense first: later suites use it as their baseline).</summary>
    int Order { get; }

    /// <summary>Creates the cases lazily (each case's memory is freed after it runs).</summary>
    IEnumerable<BenchCase> Create(BenchContext context);
}
