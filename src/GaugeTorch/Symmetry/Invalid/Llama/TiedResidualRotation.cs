using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §6.3), residual rotation of a tied model: a Haar-random Q ∈ O(d) applied as the untied
/// family residual-rotation applies it (every block exactly as there: readers absorb diag(g)⁻¹·Qᵀ·diag(g), writers and
/// the embedding go to ·Q), with the head left tied to the embedding. The head would have to become E·diag(g_f)·Q·
/// diag(g_f)⁻¹ while the input needs E·Q; they agree only when Q commutes with diag(g_f), i.e. for a generic g_f only on
/// signed permutations (residual-signed-perm). So the logits change (with every g_f entry equal it would be a symmetry).
/// </summary>
public sealed class TiedResidualRotation : SymmetryFamily
{
    public static readonly TiedResidualRotation Instance = new();

    public override string Name => "invalid:tied-residual-rotation";
    public override string Reference => "GAUGE.md §6.3";
    public override bool Valid => false;
    public override bool Discrete => false;
    public override string Requirement => "RMSNorm and a tied head";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.RmsNorm && t.Tied;
    public override string DimensionFormula(ModelTraits t) => "—";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t)
    {
        var q = SharedTensor.Of(() => GaugeRandom.Orthogonal(t.Hidden, key.For(-1, Name)));
        return new DrawnElement(layer: (_, _) => new TiedResidualRotationAction(q.Value), globals: _ => new TiedResidualRotationAction(q.Value), dispose: q.Dispose);
    }
}

public sealed class TiedResidualRotationAction(Tensor q) : ILayerAction, IGlobalAction
{
    /// <summary>[d, d] orthogonal (not owned).</summary>
    public Tensor Q { get; } = q;
    public string Name => "invalid:tied-residual-rotation";

    public void Apply(LayerView w, ModelTraits t) => new ResidualRotationAction(Q).Apply(w, t);

    /// <summary>The embedding (and with it the tied head) → ·Q; the final norm is kept.</summary>
    public void Apply(GlobalState g)
    {
        using var map = ResidualMap.Dense(Q);
        g.Embed.RightMultiply(map);
        g.Positions?.RightMultiply(map);
        g.Head?.RightMultiply(map);
    }

    public TiedResidualRotationAction Inverted() => new(Q.t().contiguous());
    ILayerAction ILayerAction.Inverse() => Inverted();
    IGlobalAction IGlobalAction.Inverse() => Inverted();
}
