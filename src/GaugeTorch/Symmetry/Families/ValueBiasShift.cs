using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 5 (GAUGE.md §2), value-bias shift: b_V^r → b_V^r + δ_r and b_O → b_O − Σ_i δ_{r(i)} W_O^i over the query
/// heads i (of group r(i)). Why it is a symmetry: attention rows sum to 1, so a value bias reaches the output as the
/// constant δ W_O^i whatever the attention pattern, and the output bias absorbs it. It needs value and output
/// biases. Dimension L·G·hd (L·h·d_v for GPT-2). Shifts of 0.1 × the value bias's RMS (§4).
/// </summary>
public sealed class ValueBiasShift : SymmetryFamily
{
    public static readonly ValueBiasShift Instance = new();

    public override string Name => "value-bias";
    public override string Reference => "GAUGE.md §2 family 5";
    public override bool Discrete => false;
    public override string Requirement => "value and attention-output biases";
    public override bool HoldsFor(ModelTraits t) => t.QkvBias && t.OutBias;
    public override string DimensionFormula(ModelTraits t) => t.KvHeads == t.QueryHeads ? "L·h·d_v" : "L·G·hd";
    public override long Dimension(ModelTraits t) => (long)t.Layers * t.KvHeads * t.HeadDim;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, w) =>
        new ValueBiasAction(GaugeRandom.Shift([(long)t.KvHeads * t.HeadDim], ViewOps.Required(w.VBias, "value bias"), key.For(l, Name))));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        Tensor D(int l, LayerView at) => GaugeRandom.Shift([(long)t.KvHeads * t.HeadDim], ViewOps.Required(at.VBias, "value bias"), key.For(l, Name + "/generator"));
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                var delta = D(l, at);
                var v = ViewOps.Zeros(at);
                v.VBias = delta.reshape(t.KvHeads, t.HeadDim);
                v.OBias = -matmul(ValueBiasAction.PerHead(delta, t), ViewOps.FlatO(at));
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, w) => new ValueBiasAction(D(l, w) * tau)));
    }
}

public sealed class ValueBiasAction(Tensor delta) : ILayerAction
{
    /// <summary>[G·hd] added to the value bias (δ_r in block r).</summary>
    public Tensor Delta { get; } = delta;
    public string Name => "value-bias";

    /// <summary>δ as seen by the query heads: [H·hd] (block i = δ of head i's group).</summary>
    internal static Tensor PerHead(Tensor delta, ModelTraits t) =>
        t.GroupSize == 1 ? delta : ViewOps.PerQueryHead(delta.reshape(t.KvHeads, t.HeadDim), t).reshape(-1);

    public void Apply(LayerView w, ModelTraits t)
    {
        w.VBias = ViewOps.Required(w.VBias, "value bias") + Delta.reshape(t.KvHeads, t.HeadDim);
        w.OBias = ViewOps.Required(w.OBias, "output bias") - matmul(PerHead(Delta, t), ViewOps.FlatO(w));
    }

    public ILayerAction Inverse() => new ValueBiasAction(-Delta);
}
