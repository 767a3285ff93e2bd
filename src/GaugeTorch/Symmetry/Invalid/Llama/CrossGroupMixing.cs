using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §6.3), cross-group mixing of the value blocks, GPT-2's cross-head mixing (§3) across
/// KV groups: P = I + 0.1·R on the G·hd value coordinates, R with zero diagonal blocks and Gaussian off-diagonal
/// blocks scaled to unit RMS entries (as GPT-2's control, see <see cref="CrossHeadMixing"/>); W_V → W_V·P, b_V → b_V·P,
/// and for each position j inside a group the output blocks of the query heads r·k + j (r = 0 … G−1) → P⁻¹·[O_{0k+j};
/// …; O_{(G−1)k+j}]. If every query head attended with one pattern, Σ_i att·v_{r(i)}·O_i would be unchanged; heads of
/// different groups attend differently, so it is not a symmetry. Needs at least two KV groups (MQA has none to mix).
/// </summary>
public sealed class CrossGroupMixing : SymmetryFamily
{
    public static readonly CrossGroupMixing Instance = new();

    public override string Name => "invalid:cross-group-mixing";
    public override string Reference => "GAUGE.md §6.3";
    public override bool Valid => false;
    public override bool Discrete => false;
    public override string Requirement => LlamaFamily.Requirement + " with at least two KV heads";
    public override bool HoldsFor(ModelTraits t) => LlamaFamily.Holds(t) && t.KvHeads > 1;
    public override string DimensionFormula(ModelTraits t) => "—";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        using var scope = NewDisposeScope();
        long g = t.KvHeads, hd = t.HeadDim, n = g * hd;
        var r = randn([g, g, hd, hd], ScalarType.Float64, generator: key.For(l, Name));
        r = r / linalg.matrix_norm(r).unsqueeze(-1).unsqueeze(-1) * hd;
        r = r * (1 - eye(g, dtype: ScalarType.Float64)).unsqueeze(-1).unsqueeze(-1);
        var p = eye(n, dtype: ScalarType.Float64) + r.permute(0, 2, 1, 3).reshape(n, n) * 0.1;
        var inv = linalg.inv(p);
        return new CrossGroupMixingAction(p.MoveToOuterDisposeScope(), inv.MoveToOuterDisposeScope());
    });
}

public sealed class CrossGroupMixingAction(Tensor p, Tensor pInv) : ILayerAction
{
    public string Name => "invalid:cross-group-mixing";

    public void Apply(LayerView w, ModelTraits t)
    {
        long g = t.KvHeads, k = t.GroupSize, hd = t.HeadDim, d = w.O.shape[2];
        w.V = ViewOps.Heads(matmul(Forward.Flat(w.V), p), g, hd);
        if (w.VBias is not null) w.VBias = matmul(w.VBias.reshape(-1), p).reshape(g, hd);
        // O [H, hd, d] → [G, k, hd, d] → per j: [G·hd, d], mixed by P⁻¹, then back.
        var byJ = w.O.reshape(g, k, hd, d).permute(1, 0, 2, 3).reshape(k, g * hd, d);
        w.O = matmul(pInv, byJ).reshape(k, g, hd, d).permute(1, 0, 2, 3).reshape(g * k, hd, d);
    }

    public ILayerAction Inverse() => new CrossGroupMixingAction(pInv, p);
}
