using GaugeTorch.Architectures.Gpt2;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>The part of a group element that acts on one block: a sequence of family actions, applied in order.</summary>
public sealed class LayerGaugeElement(IReadOnlyList<ILayerAction> actions)
{
    public IReadOnlyList<ILayerAction> Actions { get; } = actions;

    /// <summary>Returns the transformed block as new float64 tensors; <paramref name="w"/> is not modified.</summary>
    public LayerWeights Apply(LayerWeights w, Gpt2Config c) => TorchThreads.SingleThreaded(() => ApplyCore(w, c));

    private LayerWeights ApplyCore(LayerWeights w, Gpt2Config c)
    {
        var result = w.To(ScalarType.Float64);
        try
        {
            foreach (var a in Actions) a.Apply(result, c);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>The inverse element: inverse actions in reverse order.</summary>
    public LayerGaugeElement Inverse() => new(Actions.Reverse().Select(a => a.Inverse()).ToList());
}
