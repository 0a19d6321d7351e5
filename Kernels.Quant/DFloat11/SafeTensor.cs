namespace Kernels.Quant.DFloat11;

/// <summary>One bf16 tensor of a safetensors file.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="Shape">Its shape.</param>
/// <param name="Values">Its elements, row-major: exactly <c>Shape.ElementCount</c> of them.</param>
/// <exception cref="ArgumentNullException">An argument is null.</exception>
/// <exception cref="ArgumentException">Values does not hold the shape's element count (the message names both).</exception>
public sealed record SafeTensor(string Name, TensorShape Shape, BFloat16[] Values)
{
    /// <summary>The tensor's name.</summary>
    public string Name { get; init; } = Name ?? throw new ArgumentNullException(nameof(Name));

    /// <summary>Its shape.</summary>
    public TensorShape Shape { get; init; } = Shape ?? throw new ArgumentNullException(nameof(Shape));

    /// <summary>Its elements, row-major.</summary>
    public BFloat16[] Values { get; init; } = CheckValues(Values, Shape);

    private static BFloat16[] CheckValues(BFloat16[] values, TensorShape? shape)
    {
        ArgumentNullException.ThrowIfNull(values, nameof(Values));
        if (shape is not null && values.LongLength != shape.ElementCount)
            throw new ArgumentException($"Values has {values.LongLength} elements but the shape {shape} has {shape.ElementCount}.", nameof(Values));
        return values;
    }
}
