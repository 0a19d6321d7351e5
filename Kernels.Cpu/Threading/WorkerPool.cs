using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace Kernels.Cpu.Threading;

/// <summary>
/// A tiny fork-join pool for kernels: dedicated threads, work claimed chunk by chunk with an atomic counter, the
/// calling thread working too. No allocation per call.
/// </summary>
/// <remarks>
/// One job runs at a time; a call made while another job runs (from another thread, or nested inside a kernel) runs
/// inline on the caller, so the pool can never deadlock. Workers spin briefly and then block, so an idle process burns
/// no CPU.
/// </remarks>
public static unsafe class WorkerPool
{
    private static readonly object s_gate = new();
    private static readonly SemaphoreSlim s_wake = new(0);
    private static int s_workersStarted;
    [ThreadStatic] private static bool t_inJob;

    private static delegate*<void*, int, void> s_invoke;
    private static void* s_state;
    private static int s_count;
    private static int s_next;
    private static int s_active;
    private static Exception? s_error;

    /// <summary>Runs <c>TKernel.Execute(ref state, i)</c> for every i in <c>[0, chunkCount)</c> on up to <paramref name="maxThreads"/> threads.</summary>
    /// <typeparam name="TKernel">The kernel state type.</typeparam>
    /// <param name="chunkCount">Number of chunks.</param>
    /// <param name="maxThreads">Thread limit, the caller included (≤ 1 runs inline).</param>
    /// <param name="state">The state, read by all threads; stays on the caller's stack until every chunk is done.</param>
    public static void Run<TKernel>(int chunkCount, int maxThreads, ref TKernel state) where TKernel : unmanaged, IChunkKernel<TKernel>
    {
        int threads = Math.Min(Math.Min(maxThreads, Environment.ProcessorCount), chunkCount);
        if (threads <= 1 || t_inJob || !Monitor.TryEnter(s_gate))
        {
            for (int i = 0; i < chunkCount; i++) TKernel.Execute(ref state, i);
            return;
        }
        try
        {
            EnsureWorkers();
            fixed (TKernel* p = &state)
            {
                s_invoke = &Invoke<TKernel>;
                s_state = p;
                s_count = chunkCount;
                s_next = 0;
                s_error = null;
                Volatile.Write(ref s_active, threads - 1);
                s_wake.Release(threads - 1);
                t_inJob = true;
                try
                {
                    Drain();
                }
                catch (Exception error)
                {
                    // Record it and fall through: the workers still hold a pointer to `state` (on this stack) and must
                    // finish before Run returns, or they run on a dead frame and skew s_active for the next job.
                    s_error ??= error;
                    Interlocked.Exchange(ref s_next, int.MaxValue / 2); // stop handing out chunks
                }
                finally
                {
                    t_inJob = false;
                }
                var spin = new SpinWait();
                while (Volatile.Read(ref s_active) != 0) spin.SpinOnce(sleep1Threshold: -1);
                s_state = null;
            }
            if (s_error is { } e) ExceptionDispatchInfo.Throw(e);
        }
        finally
        {
            Monitor.Exit(s_gate);
        }
    }

    private static void Invoke<TKernel>(void* state, int chunk) where TKernel : unmanaged, IChunkKernel<TKernel> =>
        TKernel.Execute(ref Unsafe.AsRef<TKernel>(state), chunk);

    private static void Drain()
    {
        int count = s_count;
        var invoke = s_invoke;
        void* state = s_state;
        int i;
        while ((i = Interlocked.Increment(ref s_next) - 1) < count)
        {
            invoke(state, i);
        }
    }

    private static void EnsureWorkers()
    {
        int wanted = Environment.ProcessorCount - 1;
        while (s_workersStarted < wanted)
        {
            var t = new Thread(WorkerLoop, 256 * 1024) { IsBackground = true, Name = $"Kernels worker {s_workersStarted}" };
            t.Start();
            s_workersStarted++;
        }
    }

    private static void WorkerLoop()
    {
        t_inJob = true;
        while (true)
        {
            s_wake.Wait();
            try
            {
                Drain();
            }
            catch (Exception e)
            {
                s_error ??= e;
                Interlocked.Exchange(ref s_next, int.MaxValue / 2); // stop handing out chunks
            }
            finally
            {
                Interlocked.Decrement(ref s_active);
            }
        }
    }
}
