using System.Numerics.Tensors;
using Kernels.Cpu;

namespace Kernels.Tests.Core;

public class TensorApiTests
{
    [Fact]
    public void Shape_ReportsCountsStridesAndContiguity()
    {
        var s = new TensorShape(2, 3, 4);
        Assert.Equal(24, s.ElementCount);
        Assert.Equal([12L, 4L, 1L], s.Strides.ToArray());
        Assert.True(s.IsContiguous);
        Assert.Equal("[2, 3, 4]", s.ToString());
        var t = new TensorShape([2, 3], [1, 2]);
        Assert.False(t.IsContiguous);
        Assert.Equal(6, t.SpanLength);
    }

    [Fact]
    public void Shape_NegativeLength_Throws()
    {
        var ex = Assert.Throws<ArgumentException>(() => new TensorShape(2, -1));
        Assert.Contains("-1", ex.Message);
    }

    [Fact]
    public void HostTensor_IsAlignedZeroedAndDisposable()
    {
        var t = new HostTensor<float>(3, 5);
        Assert.Equal(15, t.Length);
        Assert.All(t.Span.ToArray(), v => Assert.Equal(0f, v));
        unsafe
        {
            fixed (float* p = t.Span) Assert.Equal(0, (nint)p % 64);
        }
        t.Dispose();
        t.Dispose();
        Assert.Throws<ObjectDisposedException>(() => t.Span.Length);
    }

    [Fact]
    public void HostTensor_RoundTripsThroughSystemNumericsTensors()
    {
        float[] data = [1, 2, 3, 4, 5, 6];
        using var t = HostTensor<float>.From(data, 2, 3);
        TensorSpan<float> span = t.AsTensorSpan();
        Assert.Equal(2, span.Lengths[0]);
        Assert.Equal(3, span.Lengths[1]);
        span[1, 2] = 60;
        Assert.Equal(60, t.Span[5]);
        Tensor<float> copy = t.ToTensor();
        Assert.Equal(60, copy[1, 2]);
        using var back = HostTensor<float>.From(copy.AsReadOnlyTensorSpan());
        Assert.Equal(t.Span.ToArray(), back.Span.ToArray());
    }

    [Fact]
    public void HostTensor_From_WrongCount_NamesBoth()
    {
        var ex = Assert.Throws<ArgumentException>(() => HostTensor<float>.From(new float[5], 2, 3));
        Assert.Contains("5", ex.Message);
        Assert.Contains("6", ex.Message);
    }

    [Fact]
    public void BFloat16_RoundsToNearestEvenAndKeepsSpecials()
    {
        Assert.Equal(1.0f, (float)(BFloat16)1.0f);
        Assert.Equal(0x3F80, ((BFloat16)1.00390625f).Bits);   // tie: 1 + 2^-8 rounds to even (1.0)
        Assert.Equal(0x3F82, ((BFloat16)1.01171875f).Bits);   // tie: 1 + 3·2^-8 rounds up to even
        Assert.True(float.IsNaN((float)(BFloat16)float.NaN));
        Assert.Equal(float.NegativeInfinity, (float)(BFloat16)float.NegativeInfinity);
        Assert.Equal(0x8000, ((BFloat16)(-0f)).Bits);
        for (int bits = 0; bits < 65536; bits++)
        {
            var b = BFloat16.FromBits((ushort)bits);
            float f = (float)b;
            if (!float.IsNaN(f)) Assert.Equal(b.Bits, ((BFloat16)f).Bits);
        }
    }

    [Fact]
    public void DType_SizesAndMapping()
    {
        Assert.Equal(DType.BF16, DTypeInfo.Of<BFloat16>());
        Assert.Equal(2, DType.F16.SizeInBytes());
        Assert.Equal(6, DType.Fp6E3M2.BitsPerElement());
        Assert.True(DType.U4.IsPacked());
        Assert.Throws<NotSupportedException>(() => DType.U4.SizeInBytes());
        Assert.Throws<NotSupportedException>(() => DTypeInfo.Of<long>());
    }

    [Fact]
    public void CpuBackend_Gemm_ValidatesShapesDtypesAndOwnership()
    {
        using var cpu = new CpuBackend();
        using var other = new CpuBackend();
        using var w = cpu.Upload(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        using var x = cpu.Upload(new float[] { 1, 1, 1 }, 1, 3);
        using var y = cpu.Allocate<float>(1, 2);
        cpu.Gemm(w, x, y);
        Assert.Equal([6f, 15f], y.ToArray());

        using var badY = cpu.Allocate<float>(1, 3);
        var ex = Assert.Throws<ArgumentException>(() => cpu.Gemm(w, x, badY));
        Assert.Contains("[1, 3]", ex.Message);
        Assert.Contains("[1, 2]", ex.Message);

        using var badX = cpu.Allocate<float>(1, 4);
        ex = Assert.Throws<ArgumentException>(() => cpu.Gemm(w, badX, y));
        Assert.Contains("[1, 4]", ex.Message);

        using var wi = cpu.Allocate<int>(2, 3);
        ex = Assert.Throws<ArgumentException>(() => cpu.Gemm(wi, x, y));
        Assert.Contains("I32", ex.Message);

        using var foreign = other.Allocate<float>(1, 2);
        ex = Assert.Throws<ArgumentException>(() => cpu.Gemm(w, x, foreign));
        Assert.Contains("copy it explicitly", ex.Message);

        using var rank3 = cpu.Allocate<float>(1, 2, 3);
        ex = Assert.Throws<ArgumentException>(() => cpu.Gemm(rank3, x, y));
        Assert.Contains("rank 2", ex.Message);

        var disposed = cpu.Allocate<float>(1, 2);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => cpu.Gemm(w, x, disposed));
    }

    [Fact]
    public void CpuIsa_ForcingUnsupportedPath_Throws()
    {
        Assert.Equal(CpuIsa.Best, CpuIsa.Resolve(null));
        Assert.Equal(IsaPath.Scalar, CpuIsa.Resolve(new KernelOptions { Isa = IsaPath.Scalar }));
        if (!CpuIsa.IsSupported(IsaPath.Avx512))
        {
            var ex = Assert.Throws<NotSupportedException>(() => CpuIsa.Resolve(new KernelOptions { Isa = IsaPath.Avx512 }));
            Assert.Contains("supported:", ex.Message);
        }
        Assert.Contains("best", new CpuBackend().Describe().Details);
    }
}

public class DeviceTensorInteropTests
{
    [Fact]
    public void DeviceTensor_CopiesFromDenseAndStridedTensorSpans()
    {
        using var cpu = new CpuBackend();
        using var t = cpu.Allocate<float>(2, 3);
        var dense = Tensor.Create(new float[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        t.CopyFrom(dense.AsReadOnlyTensorSpan());
        Assert.Equal([1f, 2, 3, 4, 5, 6], t.ToArray());

        // A transposed (strided) view of a 3x2 tensor: [2, 3] with strides [1, 2].
        float[] backing = [1, 4, 2, 5, 3, 6];
        var strided = new ReadOnlyTensorSpan<float>(backing, [2, 3], [1, 2]);
        t.CopyFrom(strided);
        Assert.Equal([1f, 2, 3, 4, 5, 6], t.ToArray());

        Tensor<float> back = t.ToTensor();
        Assert.Equal(6f, back[1, 2]);

        var ex = Assert.Throws<ArgumentException>(() => t.CopyFrom(Tensor.Create(new float[6], [3, 2]).AsReadOnlyTensorSpan()));
        Assert.Contains("[3, 2]", ex.Message);
        Assert.Contains("[2, 3]", ex.Message);
    }
}
