using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 2 (GAUGE.md §2; §6.2 family 2 for grouped-query attention), value–output basis. Per KV group r with
/// C_r ∈ GL(hd): W_V^r → W_V^r C_r, b_V^r → b_V^r C_r, and W_O^i → C_r^{-1} W_O^i for every query head i of the group.
/// Why it is a symmetry: head i adds att_i·(x W_V + b_V) W_O^i to the residual; the attention weights do not
/// involve V, so C C^{-1} cancels inside every head's contribution, with learned or rotary positions alike.
/// Dimension L·G·hd² (L·h·d_v² for GPT-2). Sampled as Q₁ΛQ₂ᵀ with Λ uniform in [0.5, 2] (§4).
/// </summary>
public sealed class VoBasis : SymmetryFamily
{
    public static readonly VoBasis Instance = new();

    public override string Name => "vo";
    public override string Reference => "GAUGE.md §2 family 2";
    public override bool IsPaper => true;
    public override bool Discrete => false;
    public override string Requirement => "attention (every model)";
    public override bool HoldsFor(ModelTraits t) => true;
    public override string DimensionFormula(ModelTraits t) => t.KvHeads == t.QueryHeads ? "L·h·d_v²" : "L·G·hd²";
    public override long Dimension(ModelTraits t) => (long)t.Layers * t.KvHeads * t.HeadDim * t.HeadDim;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        var c = GaugeRandom.Invertible(t.KvHeads, t.HeadDim, key.For(l, Name));
        return new VoAction(Name, c, linalg.inv(c));
    });

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        Tensor X(int l) => randn([t.KvHeads, t.HeadDim, t.HeadDim], ScalarType.Float64, generator: key.For(l, Name + "/generator")) / Math.Sqrt(t.HeadDim);
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                var x = X(l);
                var v = ViewOps.Zeros(at);
                v.V = matmul(at.V, x);
                if (at.VBias is not null) v.VBias = matmul(at.VBias.unsqueeze(1), x).squeeze(1);
                v.O = -matmul(ViewOps.PerQueryHead(x, t), at.O);
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, _) =>
            {
                var x = X(l) * tau;
                return new VoAction(Name, linalg.matrix_exp(x), linalg.matrix_exp(-x));
            }));
    }
}

/// <summary>Values of group r → ·C_r, the output rows of its query heads → C_r^{-1}·.</summary>
public sealed class VoAction(string name, Tensor c, Tensor cInv) : ILayerAction
{
    /// <summary>[G, hd, hd].</summary>
    public Tensor C { get; } = c;
    public Tensor CInv { get; } = cInv;
    public string Name { get; } = name;

    public void Apply(LayerView w, ModelTraits t)
    {
        w.V = matmul(w.V, C);                                                    // [G, d, hd]
        if (w.VBias is not null) w.VBias = matmul(w.VBias.unsqueeze(1), C).squeeze(1);
        w.O = matmul(ViewOps.PerQueryHead(CInv, t), w.O);                        // [H, hd, d]
    }

    public ILayerAction Inverse() => new VoAction(Name, CInv, C);
}
