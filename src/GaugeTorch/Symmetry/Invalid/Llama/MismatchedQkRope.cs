using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §6.3), mismatched QK for rotary models: per KV group and plane a valid commutant
/// element z on the queries (as qk-rope draws it) but the key side of an independent z′, 1/conj(z′). Each plane's
/// contribution to a score is then multiplied by z/z′ ≠ 1, a different bilinear form. It shares its name with GPT-2's
/// mismatched-qk control (learned positions), with a disjoint predicate.
/// </summary>
public sealed class MismatchedQkRope : SymmetryFamily
{
    public static readonly MismatchedQkRope Instance = new();

    public override string Name => "invalid:mismatched-qk";
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
        var g = key.For(l, Name);
        long half = t.HeadDim / 2;
        var (re, im) = RopePlanes.RandomScalars(t.KvHeads, half, g);
        var (re2, im2) = RopePlanes.RandomScalars(t.KvHeads, half, g);
        var r2 = re2.square() + im2.square();
        return new RopePlaneAction(Name, RopePlaneAction.Complex(re, im).MoveToOuterDisposeScope(), RopePlaneAction.Complex(re2 / r2, im2 / r2).MoveToOuterDisposeScope());
    });
}
