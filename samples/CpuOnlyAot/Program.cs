using Kernels;
using Kernels.Cpu;
using Kernels.Cpu.Dense;
using Kernels.Quant.Reference;

// CPU-only, NativeAOT: the span API with no tensors, checked against the reference.
const int m = 256, k = 1000, n = 3;
var rng = new Random(7);
float[] w = new float[m * k], x = new float[n * k], y = new float[n * m], expected = new float[n * m];
for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5);
for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() - 0.5);

DenseGemm.Gemm(w, x, y, m, k, n);
DenseReference.Gemm(w, x, expected, m, k, n);
double[] scale = new double[n * m];
DenseReference.AbsGemm(w, x, scale, m, k, n);
var check = ResultComparer.Compare(expected, y, scale, ResultComparer.DotTolerance(k));
Console.WriteLine($"{new CpuBackend().Describe()}");
Console.WriteLine($"ILGPU loaded: {AppDomain.CurrentDomain.GetAssemblies().Any(a => a.GetName().Name == "ILGPU")}");
Console.WriteLine($"dense {m}x{k} n={n} vs reference: {check}");
return check.Passed ? 0 : 1;
