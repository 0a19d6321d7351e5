namespace Kernels.Tests.TestUtilities;

/// <summary>Runs a body with an internal kernel switch flipped, restoring it afterwards. The switches only choose between
/// correct paths, so tests running concurrently are unaffected.</summary>
internal static class Switches
{
    public static void With(ref bool flag, bool value, Action body)
    {
        bool old = flag;
        flag = value;
        try
        {
            body();
        }
        finally
        {
            flag = old;
        }
    }
}
