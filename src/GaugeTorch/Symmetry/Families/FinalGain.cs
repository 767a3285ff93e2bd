using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 13 (GAUGE.md §2b; §6.2 family 6), final gain ↔ head columns: γ_f → γ_f∘s, β_f → β_f∘s,
/// head → head·diag(s)^{-1}. Why it is a symmetry: logits are (n∘γ_f + β_f)·headᵀ, and the head's columns absorb
/// the gain; with a tied head the columns are the embedding's, which the input also reads, so it needs an untied head.
/// Any norm (RMSNorm has no β). Dimension d. Gains with |s| ∈ [0.5, 2] and random signs (§4); on the streaming
/// evaluator the head change is a diagonal map of the final states.
/// </summary>
public sealed class FinalGain : SymmetryFamily
{
    public static readonly FinalGain Instance = new();

    public override string Name => "final-gain";
    public override string Reference => "GAUGE.md §2b family 13";
    public override bool Discrete => false;
    public override string Requirement => "an untied head (lm_head differs from the embedding)";
    public override bool HoldsFor(ModelTraits t) => !t.Tied;
    public override string DimensionFormula(ModelTraits t) => "d";
    public override long Dimension(ModelTraits t) => t.Hidden;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) =>
        new DrawnElement(globals: _ => new FinalGainAction(GaugeRandom.Gains(t.Hidden, key.For(-1, Name))));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        Tensor X() => randn([t.Hidden], ScalarType.Float64, generator: key.For(-1, Name + "/generator"));
        return new DrawnGenerator(
            layer: null,
            globals: at =>
            {
                var x = X();
                var v = ViewOps.Zeros(at);
                v.FinalNorm = new NormView { Gain = at.FinalNorm.Gain * x, Bias = at.FinalNorm.Bias is null ? null : at.FinalNorm.Bias * x };
                v.Head = -(ViewOps.Required(at.Head, "untied head").to_type(ScalarType.Float64) * x);
                return v;
            },
            exp: tau => new DrawnElement(globals: _ => new FinalGainAction((X() * tau).exp())));
    }
}

public sealed class FinalGainAction(Tensor s) : IGlobalAction
{
    /// <summary>[d] gains.</summary>
    public Tensor S { get; } = s;
    public string Name => "final-gain";

    public void Apply(GlobalState g)
    {
        var head = g.Head ?? throw new ArgumentException("final-gain needs an untied head");
        var f = g.FinalNorm;
        g.SetFinalNorm(f.Gain * S, f.Bias is null ? null : f.Bias * S);
        using var map = ResidualMap.Diagonal(S.reciprocal());
        head.RightMultiply(map);
    }

    public IGlobalAction Inverse() => new FinalGainAction(S.reciprocal());
}
