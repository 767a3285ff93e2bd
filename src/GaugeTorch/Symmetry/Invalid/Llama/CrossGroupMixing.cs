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

/// <summary>
/// The mixing as weights (<see cref="Apply"/>) or as maps on the activations (<see cref="Maps"/>, what the evaluator
/// runs: about 0.13 GFLOP for 64 tokens on llama-3.2-1b instead of 5.4 GFLOP of weight products per layer and case).
/// </summary>
public sealed class CrossGroupMixingAction(Tensor p, Tensor pInv) : IActivationMapAction
{
    public string Name => "invalid:cross-group-mixing";

    /// <summary>
    /// Values v [.., T, G·hd] ↦ v·P (bias included); the head outputs z [.., T, H·hd] (head r·k + j at columns
    /// (r·k + j)·hd …) regrouped by position j inside the group, [.., T, k, G·hd], ↦ ·P⁻¹ and back: Σ_i z_i·O′_i with
    /// O′ = the weights' P⁻¹-mixed blocks equals Σ_i (z·P⁻¹)_i·O_i.
    /// </summary>
    public BlockMaps Maps(ModelTraits t)
    {
        long g = t.KvHeads, k = t.GroupSize, hd = t.HeadDim;
        return new BlockMaps
        {
            Values = v => matmul(v, p.to_type(v.dtype)),
            Mixed = z =>
            {
                using var scope = NewDisposeScope();
                var lead = z.shape[..^1];
                var byJ = z.reshape([.. lead, g, k, hd]).transpose(-3, -2).reshape([.. lead, k, g * hd]);
                var mixed = matmul(byJ, pInv.to_type(z.dtype));
                return mixed.reshape([.. lead, k, g, hd]).transpose(-3, -2).reshape(z.shape).MoveToOuterDisposeScope();
            },
        };
    }

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
