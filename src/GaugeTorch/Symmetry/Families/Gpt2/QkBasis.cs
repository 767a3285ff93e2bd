using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 1 (GAUGE.md §2), query–key basis. Per KV group r with A_r ∈ GL(hd): every query head i of the group
/// W_Q^i → W_Q^i A_r, b_Q^i → b_Q^i A_r, and the group's keys W_K^r → W_K^r A_r^{-T}, b_K^r → b_K^r A_r^{-T}.
/// Why it is a symmetry: every attention score is q·kᵀ = (x W_Q + b_Q) A A^{-1} (x′ W_K + b_K)ᵀ, unchanged for every
/// pair of positions. It needs learned positions: a rotary embedding between q and k commutes only with the
/// commutant of its rotations (the LLaMA family's qk-rope). GPT-2 has G = h, one A per head. Dimension L·G·hd².
/// Sampled as Q₁ΛQ₂ᵀ with Λ uniform in [0.5, 2] (§4).
/// </summary>
public sealed class QkBasis : SymmetryFamily
{
    public static readonly QkBasis Instance = new();

    public override string Name => "qk";
    public override string Reference => "GAUGE.md §2 family 1";
    public override bool IsPaper => true;
    public override bool Discrete => false;
    public override string Requirement => "learned positions (a rotary model keeps only the commutant of its rotations)";
    public override bool HoldsFor(ModelTraits t) => t.Positions == PositionKind.Learned;
    public override string DimensionFormula(ModelTraits t) => t.KvHeads == t.QueryHeads ? "L·h·d_k²" : "L·G·hd²";
    public override long Dimension(ModelTraits t) => (long)t.Layers * t.KvHeads * t.HeadDim * t.HeadDim;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        var a = GaugeRandom.Invertible(t.KvHeads, t.HeadDim, key.For(l, Name));
        return new QkAction(Name, a, linalg.inv(a).transpose(-2, -1));
    });

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        Tensor X(int l) => randn([t.KvHeads, t.HeadDim, t.HeadDim], ScalarType.Float64, generator: key.For(l, Name + "/generator")) / Math.Sqrt(t.HeadDim);
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                var x = X(l);
                var xq = ViewOps.PerQueryHead(x, t);
                var v = ViewOps.Zeros(at);
                v.Q = matmul(at.Q, xq);
                v.K = -matmul(at.K, x.transpose(-2, -1));
                if (at.QBias is not null) v.QBias = matmul(at.QBias.unsqueeze(1), xq).squeeze(1);
                if (at.KBias is not null) v.KBias = -matmul(at.KBias.unsqueeze(1), x.transpose(-2, -1)).squeeze(1);
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, _) =>
            {
                var x = X(l) * tau;
                return new QkAction(Name, linalg.matrix_exp(x), linalg.matrix_exp(-x.transpose(-2, -1)));
            }));
    }
}

/// <summary>Queries of group r → ·A_r, keys of group r → ·B_r (B = A^{-T} for the valid family; another matrix for the mismatched control).</summary>
public sealed class QkAction(string name, Tensor a, Tensor b) : ILayerAction
{
    /// <summary>[G, hd, hd] on the query side.</summary>
    public Tensor A { get; } = a;
    /// <summary>[G, hd, hd] on the key side.</summary>
    public Tensor B { get; } = b;
    public string Name { get; } = name;

    public void Apply(LayerView w, ModelTraits t)
    {
        var aq = ViewOps.PerQueryHead(A, t);
        w.Q = matmul(w.Q, aq);                                                   // [H, d, hd]
        if (w.QBias is not null) w.QBias = matmul(w.QBias.unsqueeze(1), aq).squeeze(1);
        w.K = matmul(w.K, B);                                                    // [G, d, hd]
        if (w.KBias is not null) w.KBias = matmul(w.KBias.unsqueeze(1), B).squeeze(1);
    }

    public ILayerAction Inverse() => new QkAction(Name, linalg.inv(A), linalg.inv(B));
}
