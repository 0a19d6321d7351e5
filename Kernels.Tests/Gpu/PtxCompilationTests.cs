using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using Kernels.Gpu.Attention;
using Kernels.Gpu.DFloat11;
using Kernels.Gpu.Dense;
using Kernels.Gpu.Fpx;
using Kernels.Gpu.Lut;

namespace Kernels.Tests.Gpu;

/// <summary>
/// Every kernel the GPU backend loads, compiled by ILGPU's PTX backend for an sm_90 device (PTX ISA 8.8; ILGPU 1.5.3 emits
/// <c>.target sm_80</c> code for it), with no GPU and no driver:
/// the CPU accelerator the other GPU tests use runs a kernel's IL directly, so only this test sees what the CUDA code
/// generator makes of it (unsupported intrinsics, shared memory, shuffles, 64-bit addressing).
/// </summary>
public class PtxCompilationTests
{
    public static TheoryData<string> Kernels => new(Entries.Keys);

    private static readonly Dictionary<string, (MethodInfo Method, bool ExplicitlyGrouped)> Entries = new()
    {
        ["attention"] = (Method(typeof(PagedAttentionKernels), nameof(PagedAttentionKernels.Attend)), true),
        ["attention merge"] = (Method(typeof(PagedAttentionKernels), nameof(PagedAttentionKernels.Merge)), false),
        ["attention state merge"] = (Method(typeof(PagedAttentionKernels), nameof(PagedAttentionKernels.MergeStates)), false),
        ["attention sinks"] = (Method(typeof(PagedAttentionKernels), nameof(PagedAttentionKernels.ApplySinks)), false),
        ["attention query quantization"] = (Method(typeof(PagedAttentionKernels), nameof(PagedAttentionKernels.DequantizeQueries)), false),
        ["kv append"] = (Method(typeof(KvAppendKernels), nameof(KvAppendKernels.Append)), true),
        ["rope"] = (Method(typeof(RopeKernels), nameof(RopeKernels.Apply)), false),
        ["dense gemm"] = (Method(typeof(DenseGemmKernels), nameof(DenseGemmKernels.Vector)), true),
        ["dense gemm scalar"] = (Method(typeof(DenseGemmKernels), nameof(DenseGemmKernels.Scalar)), true),
        ["dense gemv"] = (Method(typeof(DenseGemmKernels), nameof(DenseGemmKernels.Gemv)), true),
        ["fpx gemm"] = (Method(typeof(FpxGemmKernels), nameof(FpxGemmKernels.Gemm)), true),
        ["fpx activation quantization"] = (Method(typeof(FpxGemmKernels), nameof(FpxGemmKernels.QuantizeActivations)), true),
        ["fpx token exponents"] = (Method(typeof(FpxGemmKernels), nameof(FpxGemmKernels.TokenExponents)), true),
        ["fpx gemm w6a8"] = (Method(typeof(FpxGemmKernels), nameof(FpxGemmKernels.GemmW6A8)), true),
        ["lut gemm"] = (Method(typeof(LutGemmKernels), nameof(LutGemmKernels.Gemm)), true),
        ["dfloat11 decode"] = (Method(typeof(DFloat11Kernels), nameof(DFloat11Kernels.Decode)), true),
    };

    /// <summary>With <c>KERNELS_PTXAS</c> naming NVIDIA's ptxas (no GPU needed), assembles the kernel for sm_90 as the driver
    /// would when loading it, and checks what only the real code generator knows: the PTX is accepted, static shared memory
    /// stays within the 48 KB a launch gets without opting in, and nothing spills beyond a few bytes. ptxas older than
    /// CUDA 12.9 rejects <c>.version 8.8</c>; <c>KERNELS_PTXAS_VERSION</c> (say 7.8 for CUDA 11.8) rewrites that line.
    /// Off by default: CI machines have no CUDA toolkit (docs/architecture.md, "GPU code without a GPU").</summary>
    private static void Assemble(string ptxas, string kernel, string ptx)
    {
        if (Environment.GetEnvironmentVariable("KERNELS_PTXAS_VERSION") is { Length: > 0 } version)
            ptx = ptx.Replace(".version 8.8", ".version " + version);
        string file = Path.Combine(Path.GetTempPath(), $"kernels-{Environment.ProcessId}-{kernel.Replace(' ', '-')}.ptx");
        File.WriteAllText(file, ptx);
        try
        {
            var info = new System.Diagnostics.ProcessStartInfo(ptxas, ["-arch=sm_90", "-v", file, "-o", file + ".cubin"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var process = System.Diagnostics.Process.Start(info)!;
            string report = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
            process.WaitForExit();
            Assert.True(process.ExitCode == 0, $"{kernel}: ptxas failed:\n{report}");
            var smem = System.Text.RegularExpressions.Regex.Match(report, @"(\d+) bytes smem");
            Assert.True(!smem.Success || int.Parse(smem.Groups[1].Value) <= 48 * 1024, $"{kernel}: static shared memory over 48 KB:\n{report}");
            var spill = System.Text.RegularExpressions.Regex.Match(report, @"(\d+) bytes spill stores");
            Assert.True(spill.Success && int.Parse(spill.Groups[1].Value) <= 64, $"{kernel}: spills:\n{report}");
        }
        finally
        {
            File.Delete(file);
            File.Delete(file + ".cubin");
        }
    }

    private static MethodInfo Method(Type type, string name) =>
        type.GetMethod(name, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static) ?? throw new MissingMethodException(type.Name, name);

    [Theory]
    [MemberData(nameof(Kernels))]
    public void Kernel_CompilesToPtx_ForSm90(string kernel)
    {
        var (method, explicitlyGrouped) = Entries[kernel];
        using var context = Context.Create(b => b.CPU().EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null);
        var entry = explicitlyGrouped
            ? EntryPointDescription.FromExplicitlyGroupedKernel(method)
            : EntryPointDescription.FromImplicitlyGroupedKernel(method);
        // The attention kernel is loaded for groups of up to 512 threads: ptxas must see that bound (.maxntid) or it may
        // allocate more registers than a 512-thread group can have, and the launch would fail on a GPU only.
        var specialization = kernel == "attention" ? new KernelSpecialization(PagedAttentionKernels.MaxGroupThreads, null) : KernelSpecialization.Empty;
        var compiled = (PTXCompiledKernel)backend.Compile(entry, specialization);
        if (Environment.GetEnvironmentVariable("KERNELS_PTX_DIR") is { Length: > 0 } dir)
            File.WriteAllText(Path.Combine(dir, kernel.Replace(' ', '-') + ".ptx"), compiled.PTXAssembly);
        if (Environment.GetEnvironmentVariable("KERNELS_PTXAS") is { Length: > 0 } ptxas) Assemble(ptxas, kernel, compiled.PTXAssembly);
        if (kernel == "attention") Assert.Contains(".maxntid 512", compiled.PTXAssembly);
        Assert.Contains(".entry", compiled.PTXAssembly);
        Assert.Contains(".target sm_", compiled.PTXAssembly); // ILGPU 1.5.3 emits sm_80 code for an sm_90 device
        Assert.Contains(".version 8.8", compiled.PTXAssembly);
        // An intrinsic ILGPU cannot lower (MathF.FusedMultiplyAdd without libdevice, for one) becomes an external function
        // that the PTX compiles against and the driver then fails to link: none may remain.
        var externs = System.Text.RegularExpressions.Regex.Matches(compiled.PTXAssembly, @"\.extern \.func[^\n]*").Select(m => m.Value).ToArray();
        Assert.True(externs.Length == 0, $"{kernel}: unresolved external functions: {string.Join("; ", externs)}");
    }
}
