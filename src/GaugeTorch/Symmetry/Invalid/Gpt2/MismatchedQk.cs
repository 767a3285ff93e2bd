using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §3): per KV group, A_r on the queries but an independent A′_r^{-T} on the keys (both
/// drawn as family 1 draws A). The scores become q·A·A′^{-1}·kᵀ, a different bilinear form. Holds for learned
/// positions (the rotary analogue uses commutant elements, §6.3).
/// </summary>
public sealed class MismatchedQk : SymmetryFamily
{
    public static readonly MismatchedQk Instance = new();

    public override string Name => "invalid:mismatched-qk";
    public override string Reference => "GAUGE.md §3";
    public override bool Valid => false;
    public override bool Discrete => false;
    public override string Requirement => "learned positions";
    public override bool HoldsFor(ModelTraits t) => t.Positions == PositionKind.Learned;
    public override string DimensionFormula(ModelTraits t) => "—";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        var g = key.For(l, Name);
        var a = GaugeRandom.Invertible(t.KvHeads, t.HeadDim, g);
        var a2 = GaugeRandom.Invertible(t.KvHeads, t.HeadDim, g);
        return new QkAction(Name, a, linalg.inv(a2).transpose(-2, -1).contiguous());
    });
}
