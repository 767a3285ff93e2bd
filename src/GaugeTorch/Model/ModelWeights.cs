using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>A whole model held in memory as views (tests, small models, the audit): every layer and the globals.</summary>
public sealed class ModelWeights(List<LayerView> layers, GlobalView globals, ModelTraits traits) : IDisposable
{
    public List<LayerView> Layers { get; } = layers;
    public GlobalView Globals { get; set; } = globals;
    public ModelTraits Traits { get; } = traits;

    /// <summary>Loads every layer and the globals of <paramref name="ck"/> in <paramref name="dtype"/>.</summary>
    public static ModelWeights Load(Checkpoint ck, ScalarType dtype) =>
        new(Enumerable.Range(0, ck.Traits.Layers).Select(l => ck.LoadLayer(l, dtype)).ToList(), ck.LoadGlobals(dtype), ck.Traits);

    /// <summary>Logits [T, V] of tokens [T].</summary>
    public Tensor Logits(Tensor tokens) => Forward.Logits(tokens, Layers, Globals, Traits);

    public void Dispose()
    {
        foreach (var l in Layers) l.Dispose();
        Globals.Dispose();
    }
}
