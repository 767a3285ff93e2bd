using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 4 (GAUGE.md §2), key-bias translation: b_K^r → b_K^r + t_r. Why it is a symmetry: every score of a query row
/// q changes by q·t_r, the same for every key, and the softmax over keys ignores a constant. It needs learned
/// positions (with a rotary embedding the change q·R_{p−s}·t depends on the key's position) and key biases.
/// Dimension L·G·hd (L·h·d_k for GPT-2). Shifts of 0.1 × the key bias's RMS (§4).
/// </summary>
public sealed class KeyBiasTranslation : SymmetryFamily
{
    public static readonly KeyBiasTranslation Instance = new();

    public override string Name => "key-bias";
    public override string Reference => "GAUGE.md §2 family 4";
    public override bool Discrete => false;
    public override string Requirement => "learned positions and key biases";
    public override bool HoldsFor(ModelTraits t) => t.Positions == PositionKind.Learned && t.QkvBias;
    public override string DimensionFormula(ModelTraits t) => t.KvHeads == t.QueryHeads ? "L·h·d_k" : "L·G·hd";
    public override long Dimension(ModelTraits t) => (long)t.Layers * t.KvHeads * t.HeadDim;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, w) =>
        new KeyBiasAction(GaugeRandom.Shift([(long)t.KvHeads * t.HeadDim], ViewOps.Required(w.KBias, "key bias"), key.For(l, Name))));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        Tensor T(int l, LayerView at) => GaugeRandom.Shift([(long)t.KvHeads * t.HeadDim], ViewOps.Required(at.KBias, "key bias"), key.For(l, Name + "/generator"));
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                var v = ViewOps.Zeros(at);
                v.KBias = T(l, at).reshape(t.KvHeads, t.HeadDim);
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, w) => new KeyBiasAction(T(l, w) * tau)));
    }
}

public sealed class KeyBiasAction(Tensor shift) : ILayerAction
{
    /// <summary>[G·hd] added to the key bias (t_r in block r).</summary>
    public Tensor T { get; } = shift;
    public string Name => "key-bias";

    public void Apply(LayerView w, ModelTraits t) => w.KBias = ViewOps.Required(w.KBias, "key bias") + T.reshape(t.KvHeads, t.HeadDim);

    public ILayerAction Inverse() => new KeyBiasAction(-T);
}
