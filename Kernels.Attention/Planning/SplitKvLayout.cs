namespace Kernels.Attention.Planning;

/// <summary>Where a plan's split-KV partial states go: per query row, the workspace slots of its chunks.</summary>
/// <remarks>
/// A split tile of <c>rows</c> query rows (a decode sequence is one row) cut into <c>chunks</c> key ranges owns
/// <c>rows · chunks</c> consecutive slots: the state of row <c>i</c> of the tile for chunk <c>c</c> is slot
/// <c>first + c · rows + i</c>, so a work item (chunk <c>c</c>, rows <c>[i0, i0 + n)</c> of the tile) writes its row
/// <c>r</c> to slot <see cref="AttentionWorkItem.PartialSlot"/> <c>+ r</c> with <c>PartialSlot = first + c · rows + i0</c>,
/// and the merge of row <c>i</c> reads slots <c>first + i + c · rows</c> for <c>c = 0 … chunks − 1</c>. A slot is
/// <c>qo_heads</c> states (each kv head's items write their own heads). Rows that are not split keep a count of 0 or 1 and
/// are written directly by their items.
/// </remarks>
internal sealed class SplitKvLayout
{
    private readonly int[] _start, _count, _stride;

    /// <summary>A layout for <paramref name="queryRows"/> rows, none split yet.</summary>
    public SplitKvLayout(int queryRows)
    {
        _start = new int[queryRows];
        _count = new int[queryRows];
        _stride = new int[queryRows];
        _start.AsSpan().Fill(-1);
    }

    /// <summary>Slots reserved so far.</summary>
    public int Slots { get; private set; }

    /// <summary>Per query row: the slot of its first chunk (−1 when not split).</summary>
    public int[] Start => _start;

    /// <summary>Per query row: its chunks (0 or 1 when not split: written directly).</summary>
    public int[] Count => _count;

    /// <summary>Per query row: the distance between the slots of consecutive chunks (the tile's rows).</summary>
    public int[] Stride => _stride;

    /// <summary>Records that rows <c>[row0, row0 + rows)</c> are not split (<paramref name="chunks"/> is 0 for an empty
    /// sequence, else 1).</summary>
    public void Whole(int row0, int rows, int chunks)
    {
        for (int i = 0; i < rows; i++) _count[row0 + i] = chunks;
    }

    /// <summary>Reserves the slots of rows <c>[row0, row0 + rows)</c> cut into <paramref name="chunks"/> (&gt; 1) chunks
    /// and returns the first; chunk <c>c</c> of the tile's row <c>i</c> is slot <c>first + c · rows + i</c>.</summary>
    public int Reserve(int row0, int rows, int chunks)
    {
        int first = Slots;
        for (int i = 0; i < rows; i++)
        {
            _start[row0 + i] = first + i;
            _count[row0 + i] = chunks;
            _stride[row0 + i] = rows;
        }
        Slots = checked(Slots + rows * chunks);
        return first;
    }

    /// <summary>Checks a planner's split-KV options: <paramref name="fixedChunkPages"/> null or ≥ 1, and
    /// <paramref name="targetItems"/> ≥ 1.</summary>
    public static void CheckOptions(int targetItems, int? fixedChunkPages)
    {
        if (fixedChunkPages is < 1) throw new ArgumentOutOfRangeException(nameof(fixedChunkPages), $"fixedChunkPages must be ≥ 1; got {fixedChunkPages}.");
        if (targetItems < 1) throw new ArgumentOutOfRangeException(nameof(targetItems), $"targetItems must be ≥ 1; got {targetItems}.");
    }

    /// <summary>Pages per chunk: <c>max(MinChunkTokens / page_size, ceil(work / targetItems))</c>, where
    /// <paramref name="pageWork"/> is the plan's pages summed over the items it would make without splitting.</summary>
    public static int ChunkPages(long pageWork, int targetItems, int pageSize)
    {
        int minChunk = Math.Max(1, (DecodePlanner.MinChunkTokens + pageSize - 1) / pageSize);
        return (int)Math.Min(int.MaxValue, Math.Max(minChunk, (pageWork + targetItems - 1) / targetItems));
    }
}
