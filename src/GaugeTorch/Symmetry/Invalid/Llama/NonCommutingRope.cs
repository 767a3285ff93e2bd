using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §6.3), non-commuting RoPE map: per KV group and rotary plane a general real 2×2 A
/// (drawn as Q₁ΛQ₂ᵀ with Λ uniform in [0.5, 2], so it is almost never of the form aI + bJ), A on the plane of every
/// query head of the group and A^{−T} on the key plane. Without rotary positions this would be an instance of GPT-2's
/// qk family (q·A·A⁻¹·kᵀ = q·kᵀ); with them the score is q·A·R_{ω(p−s)}·A⁻¹·kᵀ, and A commutes with the rotation
/// R_{ω(p−s)} only when it is a complex scalar, so every score at p ≠ s changes. The paper's Table 4 reports a median
/// relative error of 0.034 for this control.
/// </summary>
public sealed class NonCommutingRope : SymmetryFamily
{
    public static readonly NonCommutingRope Instance = new();

    public override string Name => "invalid:non-commuting-rope";
    public override string Reference => "GAUGE.md §6.3";
    public override bool Valid => false;
    public override bool Discrete => false;
    public override string Requirement => "rotary positions";
    public override bool HoldsFor(ModelTraits t) => t.Positions == PositionKind.Rotary;
    public override string DimensionFormula(ModelTraits t) => "—";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        using var scope = NewDisposeScope();
        long half = t.HeadDim / 2;
        var m = GaugeRandom.Invertible((long)t.KvHeads * half, 2, key.For(l, Name)).reshape(t.KvHeads, half, 2, 2);
        // A on each query plane, A^{−T} on the key plane (the block matrices' inverse transpose, plane by plane).
        var b = linalg.inv(m).transpose(-2, -1).contiguous();
        return new RopePlaneAction(Name, m.contiguous().MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope());
    });
}
