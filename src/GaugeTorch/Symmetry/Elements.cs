using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>An element whose parts are drawn by two functions (a layer part, a global part; either may be absent).</summary>
internal sealed class DrawnElement(Func<int, LayerView, ILayerAction?>? layer = null, Func<GlobalView, IGlobalAction?>? globals = null,
    Action? dispose = null) : FamilyElement
{
    public override ILayerAction? Layer(int l, LayerView stored) => layer?.Invoke(l, stored);
    public override IGlobalAction? Globals(GlobalView stored) => globals?.Invoke(stored);
    public override void Dispose() => dispose?.Invoke();
}

/// <summary>A generator given by its tangent functions and its exponential.</summary>
internal sealed class DrawnGenerator(Func<int, LayerView, LayerView?>? layer, Func<GlobalView, GlobalView?>? globals,
    Func<double, FamilyElement> exp, Action? dispose = null) : FamilyGenerator
{
    public override LayerView? Layer(int l, LayerView at) => layer?.Invoke(l, at);
    public override GlobalView? Globals(GlobalView at) => globals?.Invoke(at);
    public override FamilyElement Exp(double tau) => exp(tau);
    public override void Dispose() => dispose?.Invoke();
}

/// <summary>
/// A tensor drawn once per element and shared by every layer (a residual permutation or rotation): kept outside
/// every dispose scope until <see cref="Dispose"/>, then drawn again (identically) if needed.
/// </summary>
internal sealed class Shared<T>(Func<T> draw, Action<T> free) where T : class
{
    private T? _value;

    public T Value
    {
        get
        {
            if (_value is not null) return _value;
            using var scope = NewDisposeScope();
            _value = draw();
            return _value;
        }
    }

    public void Dispose()
    {
        if (_value is not null) free(_value);
        _value = null;
    }
}

internal static class SharedTensor
{
    /// <summary>A shared tensor drawn by <paramref name="draw"/> (which may allocate temporaries freely).</summary>
    public static Shared<Tensor> Of(Func<Tensor> draw) => new(() => draw().alias().DetachFromDisposeScope(), t => t.Dispose());
}
