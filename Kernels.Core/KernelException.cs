namespace Kernels;

/// <summary>Thrown when a backend fails while running a kernel (device error, lost context).</summary>
/// <remarks>Argument problems are never reported with this type: they throw <see cref="ArgumentException"/> before any work starts.</remarks>
public class KernelException : Exception
{
    /// <summary>Creates the exception.</summary>
    public KernelException() { }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">What failed, naming the device.</param>
    public KernelException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and the underlying failure.</summary>
    /// <param name="message">What failed, naming the device.</param>
    /// <param name="innerException">The backend's own exception.</param>
    public KernelException(string message, Exception innerException) : base(message, innerException) { }
}
