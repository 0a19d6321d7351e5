using Kernels.Cpu.Threading;

namespace Kernels.Tests.Cpu;

/// <summary>The worker pool under failure: a chunk that throws.</summary>
public class WorkerPoolTests
{
    [Fact]
    public async Task WorkerPool_ChunkThrowingOnCaller_WaitsForWorkersAndNextRunCompletes()
    {
        var failing = new SleepyKernel { ThrowOnChunk0 = 1 };
        Assert.Throws<InvalidOperationException>(() => WorkerPool.Run(8, 2, ref failing));
        var next = new SleepyKernel();
        var run = Task.Run(() =>
        {
            WorkerPool.Run(8, 2, ref next);
            return next.Done;
        });
        Assert.Same(run, await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(10))));
        Assert.Equal(8, await run);
    }

    private struct SleepyKernel : IChunkKernel<SleepyKernel>
    {
        public int ThrowOnChunk0;
        public int Done;

        public static void Execute(ref SleepyKernel s, int chunk)
        {
            if (s.ThrowOnChunk0 == 1 && chunk == 0)
            {
                Thread.Sleep(20);
                throw new InvalidOperationException("chunk 0 failed");
            }
            Thread.Sleep(40);
            Interlocked.Increment(ref s.Done);
        }
    }
}
