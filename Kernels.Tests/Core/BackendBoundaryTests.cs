using System.Numerics.Tensors;
using Kernels.Attention;
using Kernels.Attention.Paging;
using Kernels.Cpu;
using Kernels.Gpu;
using Kernels.Quant.DFloat11;
using Kernels.Quant.Fpx;
using Kernels.Quant.Lut;
using Kernels.Tests.Gpu;

namespace Kernels.Tests.Core;

/// <summary>The backends' public boundary: sizes, aliasing, disposal and cross-backend objects. Both backends must throw the
/// same exception type for the same bad input, and never crash or answer wrongly. No kernel is launched on the GPU here
/// except where noted (tiny), so nothing is compiled.</summary>
[Collection(GpuCollection.Name)]
public class BackendBoundaryTests(GpuFixture fixture)
{
    private readonly GpuBackend _gpu = fixture.Backend;

    private IKernelBackend[] Backends => [new CpuBackend(), _gpu];

    private static float[] Random(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)r.NextDouble() - 0.5f;
        return a;
    }

    [Fact]
    public void Allocate_LengthsWhoseProductOverflows_ThrowArgumentException()
    {
        Assert.Equal("lengths", Assert.Throws<ArgumentException>(() => new TensorShape(int.MaxValue, int.MaxValue, int.MaxValue)).ParamName);
        Assert.Equal("strides", Assert.Throws<ArgumentException>(() => new TensorShape([int.MaxValue, int.MaxValue], [long.MaxValue / 2, 1])).ParamName);
        foreach (var b in Backends)
        {
            Assert.Equal("lengths", Assert.Throws<ArgumentException>(() => b.Allocate<float>(int.MaxValue, int.MaxValue, int.MaxValue)).ParamName);
            // Fits a long, but not the device (GPU) or a host array (CPU).
            Assert.Equal("lengths", Assert.Throws<ArgumentException>(() => b.Allocate<float>(int.MaxValue, int.MaxValue, 2)).ParamName);
            // Zero elements whatever the other lengths: allocatable, contiguous, empty.
            using var empty = b.Allocate<float>(0, int.MaxValue, int.MaxValue, int.MaxValue);
            Assert.True(empty.Shape.IsContiguous);
            Assert.Empty(empty.ToArray());
        }
    }

    [Fact]
    public void HostTensorFrom_SpanLongerThanIntMax_ThrowsArgumentException()
    {
        long length = 3_000_000_000L; // a broadcast (stride 0) span longer than any host tensor
        var e = Assert.Throws<ArgumentException>(() => HostTensor<float>.From(new ReadOnlyTensorSpan<float>(new float[1], [(nint)length], [(nint)0])));
        Assert.Equal("source", e.ParamName);
    }

    [Fact]
    public void DefaultTensorView_IsEmpty()
    {
        var view = default(TensorView<float>);
        Assert.Equal(0, view.Shape.ElementCount);
        Assert.Equal(0, view.AsTensorSpan().FlattenedLength);
        Assert.NotNull(view.ToString());
    }

    [Fact]
    public void DenseGemm_OutputIsAnInput_ThrowsOnBothBackends()
    {
        foreach (var b in Backends)
        {
            var ops = (IDenseOps)b;
            using var w = b.Allocate<float>(2, 2);
            using var x = b.Allocate<float>(2, 2);
            w.CopyFrom([1, 2, 3, 4]);
            x.CopyFrom([1, 0, 0, 1]);
            Assert.Equal("y", Assert.Throws<ArgumentException>(() => ops.Gemm(w, x, w)).ParamName);
            Assert.Equal("y", Assert.Throws<ArgumentException>(() => ops.Gemm(w, x, x)).ParamName);
            Assert.Equal([1f, 2, 3, 4], w.ToArray()); // inputs untouched
            Assert.Equal([1f, 0, 0, 1], x.ToArray());
        }
    }

    [Fact]
    public void QuantizedGemms_OutputIsTheInput_ThrowOnBothBackends()
    {
        const int s = 128;
        var w = Random(s * s, 3);
        var lut = BitPlanePacking.Pack(LutQuantizer.Quantize(w, s, s, LutFormat.Symmetric(4, 128)));
        var fpx = FpxWeights.Quantize(w, s, s, FpxFormat.Fp6E3M2);
        var int6 = Int6Weights.Quantize(w, s, s, 128);
        var df11 = DFloat11Encoder.Encode(Array.ConvertAll(w, v => (BFloat16)v), new TensorShape(s, s));
        var xs = Random(s, 5);
        foreach (var b in Backends)
        {
            using var pl = ((ILutGemmOps)b).PrepareLut(lut);
            using var pf = ((IFpxOps)b).Prepare(fpx);
            using var pi = ((IFpxOps)b).Prepare(int6);
            using var pd = ((IDFloat11Ops)b).Upload(df11);
            using var x = b.Allocate<float>(1, s);
            x.CopyFrom(xs);
            Assert.Equal("y", Assert.Throws<ArgumentException>(() => ((ILutGemmOps)b).LutGemm(pl, x, x)).ParamName);
            Assert.Equal("y", Assert.Throws<ArgumentException>(() => ((IFpxOps)b).Gemm(pf, x, x)).ParamName);
            Assert.Equal("y", Assert.Throws<ArgumentException>(() => ((IFpxOps)b).Gemm(pi, x, x)).ParamName);
            Assert.Equal("y", Assert.Throws<ArgumentException>(() => ((IFpxOps)b).Gemm(pi, x, x, Int6Mode.W6A8)).ParamName);
            Assert.Equal("y", Assert.Throws<ArgumentException>(() => ((IDFloat11Ops)b).Gemm(pd, x, x)).ParamName);
            Assert.Equal(xs, x.ToArray());
        }
    }

    [Fact]
    public void MergeStates_ZeroHeadDim_MergesTheLseOnBothBackends()
    {
        // head_dim 0: no values, but the merged log-sum-exp is still log(e^a + e^b) (the GPU used to skip the launch).
        float[] expected = [1 + MathF.Log(2), 2 + MathF.Log(2), 3 + MathF.Log(2)];
        foreach (var b in Backends)
        {
            var ops = (IPagedAttentionOps)b;
            using var v = b.Allocate<float>(3, 0);
            using var other = b.Allocate<float>(3, 0);
            using var lse = b.Allocate<float>(3);
            using var otherLse = b.Allocate<float>(3);
            lse.CopyFrom([1, 2, 3]);
            otherLse.CopyFrom([1, 2, 3]);
            ops.MergeStates(v, lse, other, otherLse);
            b.Synchronize();
            var got = lse.ToArray();
            for (int i = 0; i < 3; i++) Assert.Equal(expected[i], got[i], 5);
        }
    }

    [Fact]
    public void CpuBackend_UseAfterDispose_ThrowsObjectDisposed()
    {
        var b = new CpuBackend();
        var w = b.Allocate<float>(2, 2);
        var x = b.Allocate<float>(1, 2);
        var y = b.Allocate<float>(1, 2);
        var xl = b.Allocate<float>(1, 32);
        var yl = b.Allocate<float>(1, 64);
        var kv = b.UploadKvCache(new PagedKvCache(2, 4, 1, 32, DType.F32));
        var lut = b.PrepareLut(BitPlanePacking.Pack(LutQuantizer.Quantize(Random(64 * 32, 1), 64, 32, LutFormat.Symmetric(4, 32))));
        b.Dispose();
        b.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => b.Describe());
        Assert.Throws<ObjectDisposedException>(() => b.Allocate<float>(2));
        Assert.Throws<ObjectDisposedException>(() => b.Synchronize());
        Assert.Throws<ObjectDisposedException>(() => b.Gemm(w, x, y));
        Assert.Throws<ObjectDisposedException>(() => b.LutGemm(lut, xl, yl));
        Assert.Throws<ObjectDisposedException>(() => w.ToArray());
        Assert.Throws<ObjectDisposedException>(() => w.CopyFrom(new float[4]));
        Assert.Throws<ObjectDisposedException>(() => kv.Update([0]));
        Assert.Throws<ObjectDisposedException>(() => b.UploadKvCache(new PagedKvCache(1, 4, 1, 32, DType.F32)));
        w.Dispose();
        x.Dispose();
        y.Dispose();
        xl.Dispose();
        yl.Dispose();
        kv.Dispose();
        lut.Dispose();
    }

    [Fact]
    public void GpuBackend_UseAfterDisposeAndForeignCaches_Throw()
    {
        // A second simulator is needed to dispose one; it launches no kernel, so nothing is compiled.
        var b = GpuBackend.CreateCpuSimulator();
        var w = b.Allocate<float>(2, 2);
        var x = b.Allocate<float>(1, 128);
        var y = b.Allocate<float>(1, 4);
        var fpx = b.Prepare(FpxWeights.Quantize(Random(4 * 128, 2), 4, 128, FpxFormat.Fp6E3M2));
        var host = new PagedKvCache(2, 4, 1, 32, DType.F32);
        var kv = b.UploadKvCache(host);

        // Another GPU backend's cache lives on another accelerator: rejected by name, as a CPU cache is.
        Assert.Equal("cache", Assert.Throws<ArgumentException>(() => _gpu.CopyPages(kv, [new PageCopy(0, 1)])).ParamName);
        using (var q = _gpu.Allocate<float>(1, 1, 32))
            Assert.Equal("cache", Assert.Throws<ArgumentException>(() => _gpu.AppendKv(KvAppendPlan.ForDecode(new PageTable([0, 1], [0], [1], 4), 2), q, q, kv)).ParamName);

        b.Dispose();
        b.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => b.Describe());
        Assert.Throws<ObjectDisposedException>(() => b.Synchronize());
        Assert.Throws<ObjectDisposedException>(() => b.Allocate<float>(2));
        // These used to end the process (an ILGPU assertion on the freed buffers) or leak ILGPU exceptions.
        Assert.Throws<ObjectDisposedException>(() => w.ToArray());
        Assert.Throws<ObjectDisposedException>(() => w.CopyFrom(new float[4]));
        Assert.Throws<ObjectDisposedException>(() => b.Gemm(fpx, x, y));
        Assert.Throws<ObjectDisposedException>(() => kv.Update([0]));
        Assert.Throws<ObjectDisposedException>(() => kv.Update());
        Assert.Throws<ObjectDisposedException>(() => kv.Download());
        Assert.Throws<ObjectDisposedException>(() => kv.SwapIn(new PagedKvCache(2, 4, 1, 32, DType.F32), [new PageCopy(0, 1)]));
        // Disposing what the backend owned afterwards is harmless.
        w.Dispose();
        x.Dispose();
        y.Dispose();
        fpx.Dispose();
        kv.Dispose();
    }

    [Fact]
    public void KernelOptions_InvalidValues_ThrowAtTheBoundary()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new CpuBackend(new KernelOptions { Isa = (IsaPath)99 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new KernelOptions { MaxDegreeOfParallelism = int.MaxValue });
        foreach (var isa in new[] { IsaPath.Avx512, IsaPath.Avx2, IsaPath.Vector128 })
            if (!CpuIsa.IsSupported(isa))
                Assert.Throws<NotSupportedException>(() => new CpuBackend(new KernelOptions { Isa = isa }));

        // The largest thread count accepted: no overflow in the kernels' chunking or the decode target.
        var cpu = new CpuBackend(new KernelOptions { MaxDegreeOfParallelism = KernelOptions.MaxThreads });
        Assert.Equal(CpuBackend.DecodeItemsPerThread * KernelOptions.MaxThreads, cpu.DecodeTargetItems);
        const int m = 64, k = 64, n = 2;
        var w = Random(m * k, 7);
        using var x = cpu.Upload(Random(n * k, 8), n, k);
        using var y = cpu.Allocate<float>(n, m);
        using var yRef = cpu.Allocate<float>(n, m);
        using var df = cpu.Upload(DFloat11Encoder.Encode(Array.ConvertAll(w, v => (BFloat16)v), new TensorShape(m, k)));
        cpu.Gemm(df, x, y); // DivideByZeroException before
        using var dense = cpu.Allocate<BFloat16>(m, k);
        cpu.Decompress(df, dense);
        cpu.Gemm(dense, x, yRef);
        var got = y.ToArray();
        var expected = yRef.ToArray();
        for (int i = 0; i < got.Length; i++) Assert.Equal(expected[i], got[i], 4);
    }
}
