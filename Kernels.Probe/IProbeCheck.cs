namespace Kernels.Probe;

/// <summary>One check the probe runs through a public CPU dispatcher (whatever ISA the process allows).</summary>
/// <remarks>Each kernel family adds one implementation in Checks/; the probe finds them by reflection.</remarks>
public interface IProbeCheck
{
    /// <summary>Name printed in the report.</summary>
    string Name { get; }

    /// <summary>Runs the check; returns null on success, else a message with seed, shape and worst index.</summary>
    /// <returns>Null when the dispatcher matched the reference.</returns>
    string? Run();
}
