using System.Reflection;
using System.Runtime.CompilerServices;
using Kernels.Attention.Planning;
using Kernels.Cpu;
using Kernels.Cpu.Attention;
using Kernels.Gpu;
using Kernels.Tests.Gpu;

namespace Kernels.Tests.Core;

/// <summary>Every public method of the backends, the CPU kernel entry points and the attention planners, called with null for
/// its reference parameters: the answer is an <see cref="ArgumentNullException"/> (or another argument error), never a
/// <see cref="NullReferenceException"/> from inside.</summary>
[Collection(GpuCollection.Name)]
public class NullArgumentTests(GpuFixture fixture)
{
    private static readonly NullabilityInfoContext Nullability = new();

    private static IEnumerable<MethodInfo> Methods(Type type, BindingFlags flags) =>
        type.GetMethods(flags | BindingFlags.Public | BindingFlags.DeclaredOnly)
            .Where(m => !m.IsSpecialName && !m.ContainsGenericParameters && m.GetParameters().Any(NonNullableReference));

    private static bool NonNullableReference(ParameterInfo p) =>
        !p.ParameterType.IsValueType && !p.ParameterType.IsByRef && Nullability.Create(p).WriteState == NullabilityState.NotNull;

    private static object? DefaultFor(ParameterInfo p) =>
        p.ParameterType.IsValueType && !p.ParameterType.IsByRefLike ? RuntimeHelpers.GetUninitializedObject(p.ParameterType) : null;

    private static void Check(object? target, MethodInfo m)
    {
        if (m.GetParameters().Any(p => p.ParameterType.IsByRefLike || p.ParameterType.IsByRef || p.ParameterType.IsPointer)) return; // spans: not reachable by reflection
        var args = m.GetParameters().Select(DefaultFor).ToArray();
        string what = $"{m.DeclaringType!.Name}.{m.Name}({string.Join(", ", m.GetParameters().Select(p => p.ParameterType.Name))})";
        Exception? e = null;
        try { m.Invoke(target, args); }
        catch (TargetInvocationException t) { e = t.InnerException; }
        Assert.True(e is not null, $"{what} with nulls threw nothing");
        Assert.True(e is ArgumentException or InvalidOperationException or NotSupportedException, $"{what} with nulls threw {e!.GetType().Name}: {e.Message}");
    }

    [Fact]
    public void BackendMethods_WithNulls_ThrowArgumentErrors()
    {
        using var cpu = new CpuBackend();
        int checkedCount = 0;
        foreach (var (target, type) in new (object, Type)[] { (cpu, typeof(CpuBackend)), (fixture.Backend, typeof(GpuBackend)) })
            foreach (var m in Methods(type, BindingFlags.Instance))
            {
                Check(target, m);
                checkedCount++;
            }
        Assert.True(checkedCount >= 10, $"only {checkedCount} methods checked");
    }

    [Fact]
    public void StaticEntryPoints_WithNulls_ThrowArgumentErrors()
    {
        var types = typeof(PagedDecode).Assembly.GetExportedTypes().Concat(typeof(DecodePlanner).Assembly.GetExportedTypes())
            .Where(t => t.IsAbstract && t.IsSealed); // static classes
        int checkedCount = 0;
        foreach (var t in types)
            foreach (var m in Methods(t, BindingFlags.Static))
            {
                if (m.GetParameters().Any(p => p.ParameterType.IsByRefLike || p.ParameterType.IsByRef || p.ParameterType.IsPointer)) continue;
                Check(null, m);
                checkedCount++;
            }
        Assert.True(checkedCount >= 3, $"only {checkedCount} methods checked");
    }

    [Fact]
    public void Constructors_WithNulls_ThrowArgumentErrors()
    {
        // The attention and quantization data structures (page tables, caches, masks, options, weight formats).
        var types = typeof(DecodePlanner).Assembly.GetExportedTypes()
            .Concat(typeof(Kernels.Quant.Reference.DenseReference).Assembly.GetExportedTypes())
            .Where(t => t.IsClass && !t.IsAbstract && !t.ContainsGenericParameters);
        var failures = new List<string>();
        int checkedCount = 0;
        foreach (var t in types)
            foreach (var c in t.GetConstructors())
            {
                var ps = c.GetParameters();
                if (!ps.Any(NonNullableReference) || ps.Any(p => p.ParameterType.IsByRefLike || p.ParameterType.IsByRef || p.ParameterType.IsPointer)) continue;
                checkedCount++;
                try { c.Invoke(ps.Select(DefaultFor).ToArray()); failures.Add($"{t.Name}({string.Join(", ", ps.Select(p => p.ParameterType.Name))}): no exception"); }
                catch (TargetInvocationException e) when (e.InnerException is ArgumentException or InvalidOperationException or NotSupportedException) { }
                catch (TargetInvocationException e) { failures.Add($"{t.Name}({string.Join(", ", ps.Select(p => p.ParameterType.Name))}): {e.InnerException?.GetType().Name}"); }
            }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(checkedCount >= 5, $"only {checkedCount} constructors checked");
    }

    [Fact]
    public void DataStructureMethods_WithNulls_ThrowArgumentErrors()
    {
        // One instance of each attention data structure a runtime holds, every public method with a non-nullable reference
        // parameter called with nulls.
        using var cache = new Kernels.Attention.Paging.PagedKvCache(4, 4, 1, 32, DType.F16);
        var allocator = new Kernels.Attention.Paging.PageAllocator(cache);
        var table = new Kernels.Attention.Paging.PageTable([0, 1], [0], [1], 4);
        var shape = new AttentionShape(2, 1, 32);
        var plan = DecodePlanner.Plan(table, shape, cache.NumPages, new AttentionWorkspace());
        using var cpu = new CpuBackend();
        using var hostKv = cpu.UploadKvCache(cache);
        using var gpuKv = fixture.Backend.UploadKvCache(cache);
        object[] instances = [cache, allocator, table, plan, new AttentionWorkspace(), hostKv, gpuKv,
            new Kernels.Attention.Positional.RopeTable(new Kernels.Attention.Positional.RopeOptions(), 32, 16)];
        int checkedCount = 0;
        foreach (var o in instances)
            for (var t = o.GetType(); t is not null && t.Assembly != typeof(object).Assembly; t = t.BaseType)
            {
                if (!t.IsVisible) continue; // public API only (the GPU cache type is internal; its surface is DeviceKvCache)
                foreach (var m in Methods(t, BindingFlags.Instance))
                {
                    if (m.GetParameters().Any(p => p.ParameterType.IsByRefLike || p.ParameterType.IsByRef || p.ParameterType.IsPointer)) continue;
                    Check(o, m);
                    checkedCount++;
                }
            }
        Assert.True(checkedCount >= 2, $"only {checkedCount} methods checked"); // most take spans, which reflection cannot pass
    }
}
