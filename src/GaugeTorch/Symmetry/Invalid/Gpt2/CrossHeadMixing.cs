using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §3): mixes the value blocks across heads with P = I + 0.1·R, where R has zero diagonal
/// blocks and Gaussian off-diagonal blocks R_ij (paper eq. 89); W_V → W_V P, b_V → b_V P, W_O → P^{-1} W_O. It would
/// be a symmetry if all heads shared one attention pattern; they do not. Deviation from GAUGE.md §3: the blocks are
/// scaled to unit RMS entries (‖R_ij‖_F = d_k) rather than unit Frobenius norm. With ‖R_ij‖_F = 1 the mixing is 1/d_k
/// of the identity block's size, and on whole-model logits of the trained demo model it moved the logits by only
/// 0.9–2.2e-3 (below the 1e-3 pass line for some samples; docs/invariance.md). Holds for multi-head LayerNorm models
/// (GPT-2); the grouped-query analogue is the LLaMA family's cross-group mixing.
/// </summary>
public sealed class CrossHeadMixing : SymmetryFamily
{
    public static readonly CrossHeadMixing Instance = new();

    public override string Name => "invalid:cross-head-mixing";
    public override string Reference => "GAUGE.md §3";
    public override bool Valid => false;
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm, one KV head per query head, and at least two heads";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm && t.KvHeads == t.QueryHeads && t.QueryHeads > 1;
    public override string DimensionFormula(ModelTraits t) => "—";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        using var scope = NewDisposeScope();
        var g = key.For(l, Name);
        long h = t.QueryHeads, dk = t.HeadDim, n = h * dk;
        // In place on tensors made here (issue 12: this draw was gpt2-xl's largest sampling cost, 111 ms a layer),
        // bit for bit the values of r / ‖r‖ · d_k masked, then I + 0.1·R: x + 0.0 turns a −0 into the +0 that 0 + x
        // gives, and the diagonal (zero blocks) then gets 1 + x.
        var r = randn([h, h, dk, dk], ScalarType.Float64, generator: g);
        r.div_(linalg.matrix_norm(r).unsqueeze(-1).unsqueeze(-1)).mul_(dk);
        r.mul_((1 - eye(h, dtype: ScalarType.Float64)).unsqueeze(-1).unsqueeze(-1));
        var p = r.permute(0, 2, 1, 3).reshape(n, n);
        p.mul_(0.1).add_(0.0);
        p.diagonal().add_(1.0);
        return new CrossHeadMixingAction(p.MoveToOuterDisposeScope());
    });
}

/// <summary>
/// The mixing P (its inverse <paramref name="pInv"/> formed only where the weights need it: on the activations P⁻¹
/// is a solve, a third of an inverse's flop).
/// </summary>
public sealed class CrossHeadMixingAction(Tensor p, Tensor? pInv = null) : IActivationMapAction
{
    public string Name => "invalid:cross-head-mixing";

    public void Apply(LayerView w, ModelTraits t)
    {
        w.V = ViewOps.Heads(matmul(Forward.Flat(w.V), p), t.KvHeads, t.HeadDim);
        if (w.VBias is not null) w.VBias = matmul(w.VBias.reshape(-1), p).reshape(t.KvHeads, t.HeadDim);
        w.O = matmul(pInv ?? linalg.inv(p), ViewOps.FlatO(w)).reshape(w.O.shape);
    }

    /// <summary>Values v ↦ v·P (bias included: (hV + b)·P = h·VP + b·P); head outputs z ↦ z·P⁻¹ before O (P⁻¹·O).</summary>
    public BlockMaps Maps(ModelTraits t) => new()
    {
        Values = v => matmul(v, p.to_type(v.dtype)),
        Mixed = z => pInv is not null
            ? matmul(z, pInv.to_type(z.dtype))
            : linalg.solve(p.t().to_type(z.dtype), z.reshape(-1, z.shape[^1]).t()).t().reshape(z.shape), // z·P⁻¹ = (P⁻ᵀ·zᵀ)ᵀ
    };

    public ILayerAction Inverse()
    {
        var inv = pInv ?? linalg.inv(p);
        return new CrossHeadMixingAction(inv, p);
    }
}
