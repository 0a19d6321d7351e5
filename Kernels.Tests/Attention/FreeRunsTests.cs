using FsCheck;
using FsCheck.Fluent;
using Kernels.Attention.Paging;

namespace Kernels.Tests.Attention;

/// <summary><see cref="FreeRuns"/> (the free-page bookkeeping of <see cref="PagePlacement.Adjacent"/>: a bitmap and a
/// segment tree of free runs) against a scan of a plain free/used array.</summary>
public class FreeRunsTests
{
    /// <summary>Random takes (the named new-run page, any free page, or every free page of a range) and frees (one page or
    /// a range), on pools of 0–300 pages (one to five 64-page words, runs across their boundaries): the free count, every
    /// page's state and the new-run page match the scan after every step.</summary>
    [Fact]
    public void RandomTakesAndFrees_MatchScan()
    {
        var sizes = Gen.OneOf(Gen.Choose(0, 40), Gen.Elements(63, 64, 65, 127, 128, 129, 192, 256), Gen.Choose(41, 300));
        Prop.ForAll(sizes.ToArbitrary(), Gen.Choose(0, int.MaxValue).ToArbitrary(), (pages, seed) =>
        {
            var rng = new Random(seed);
            var runs = new FreeRuns(pages);
            var free = Enumerable.Repeat(true, pages).ToArray();
            for (int step = 0; step < 200; step++)
            {
                var freeIds = Enumerable.Range(0, pages).Where(p => free[p]).ToArray();
                var usedIds = Enumerable.Range(0, pages).Where(p => !free[p]).ToArray();
                int op = rng.Next(5);
                if (op == 0 && freeIds.Length > 0)
                {
                    int p = runs.NewRunPage();
                    runs.Take(p);
                    free[p] = false;
                }
                else if (op == 1 && freeIds.Length > 0)
                {
                    int p = freeIds[rng.Next(freeIds.Length)];
                    runs.Take(p);
                    free[p] = false;
                }
                else if (op == 2 && pages > 0)
                {
                    int a = rng.Next(pages), b = Math.Min(pages, a + rng.Next(1, 100));
                    for (int p = a; p < b; p++)
                        if (free[p])
                        {
                            runs.Take(p);
                            free[p] = false;
                        }
                }
                else if (op == 3 && pages > 0)
                {
                    int a = rng.Next(pages), b = Math.Min(pages, a + rng.Next(1, 100));
                    for (int p = b - 1; p >= a; p--)
                        if (!free[p])
                        {
                            runs.Free(p);
                            free[p] = true;
                        }
                }
                else if (usedIds.Length > 0)
                {
                    int p = usedIds[rng.Next(usedIds.Length)];
                    runs.Free(p);
                    free[p] = true;
                }
                Assert.Equal(free.Count(f => f), runs.Count);
                for (int p = 0; p < pages; p++) Assert.Equal(free[p], runs.IsFree(p));
                Assert.Equal(ScanNewRunPage(free), runs.NewRunPage());
            }
            return true;
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void TakingOrFreeingTwice_Throws()
    {
        var runs = new FreeRuns(4);
        runs.Take(2);
        Assert.Contains("Page 2 is not free", Assert.Throws<InvalidOperationException>(() => runs.Take(2)).Message);
        runs.Free(2);
        Assert.Contains("Page 2 is already free", Assert.Throws<InvalidOperationException>(() => runs.Free(2)).Message);
        Assert.Equal(0, runs.NewRunPage());
        Assert.Equal(-1, new FreeRuns(0).NewRunPage());
    }

    /// <summary>The rule by a scan: the first longest free run's first page when it starts the pool, else its middle; −1 if
    /// no page is free.</summary>
    internal static int ScanNewRunPage(bool[] free)
    {
        int bestStart = -1, bestLength = 0;
        for (int p = 0; p < free.Length;)
        {
            if (!free[p]) { p++; continue; }
            int start = p;
            while (p < free.Length && free[p]) p++;
            if (p - start > bestLength) (bestStart, bestLength) = (start, p - start);
        }
        return bestStart <= 0 ? bestStart : bestStart + bestLength / 2;
    }
}
