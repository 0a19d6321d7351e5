using Kernels;
using Kernels.Cpu;
using Kernels.Gpu;

// Multiplies a 1024x4096 bf16 weight matrix by one activation vector on the CPU backend, and on a GPU when ILGPU finds one.
const int m = 1024, k = 4096, n = 1;
var rng = new Random(1);
var weights = new BFloat16[m * k];
for (int i = 0; i < weights.Length; i++) weights[i] = (BFloat16)(float)(rng.NextDouble() - 0.5);
var x = new float[n * k];
for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() - 0.5);

float[] cpuResult;
using (var cpu = new CpuBackend())
{
    Console.WriteLine(cpu.Describe());
    using var w = cpu.Upload<BFloat16>(weights, m, k);
    using var xt = cpu.Upload<float>(x, n, k);
    using var y = cpu.Allocate<float>(n, m);
    cpu.Gemm(w, xt, y);                       // same call on every backend (IDenseOps)
    cpuResult = y.ToArray();
    Console.WriteLine($"cpu: y[0..3] = {string.Join(", ", cpuResult[..4].Select(v => v.ToString("F5")))}");
}

if (GpuBackend.IsCudaAvailable())
{
    using var gpu = GpuBackend.CreateCuda();
    Console.WriteLine(gpu.Describe());
    using var w = gpu.Upload<BFloat16>(weights, m, k);
    using var xt = gpu.Upload<float>(x, n, k);
    using var y = gpu.Allocate<float>(n, m);
    gpu.Gemm(w, xt, y);
    float[] gpuResult = y.ToArray();
    double maxDiff = gpuResult.Zip(cpuResult, (a, b) => Math.Abs(a - b)).Max();
    Console.WriteLine($"gpu: y[0..3] = {string.Join(", ", gpuResult[..4].Select(v => v.ToString("F5")))}; max |gpu - cpu| = {maxDiff:E2}");
}
else
{
    Console.WriteLine("No CUDA device: GPU part skipped.");
}
