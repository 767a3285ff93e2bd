using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 15 (GAUGE.md §2b, untied head), final bias ↔ head rows: β_f → β_f + t with
/// head[v] → head[v] + c_v·(1/γ_f), c_v = −(t·head[v]) / ((β_f + t)·(1/γ_f)). Why it is a symmetry: logit v is
/// (n∘γ_f + β_f)·head[v]; the added row c_v/γ_f meets n∘γ_f as c_v·Σn = 0 (LayerNorm's n has zero mean), and c_v
/// is chosen so that the per-vocabulary bias (β_f + t)·head′[v] equals β_f·head[v]. (GAUGE.md allows a common λ in
/// that bias; λ = 0 here, which makes t ↦ element a one-parameter group with exp(τt) the element of τt.) It needs
/// LayerNorm and an untied head. Dimension d. Shifts of 0.1 × β_f's RMS (§4), redrawn (same generator) while the
/// denominator is ill-conditioned, |(β_f + t)·(1/γ_f)| < 10⁻³·‖t‖‖1/γ_f‖. On the streaming evaluator c is a
/// V-vector (one matrix–vector product with the head) and the change one rank-one term.
/// </summary>
public sealed class FinalBias : SymmetryFamily
{
    public static readonly FinalBias Instance = new();

    public override string Name => "final-bias";
    public override string Reference => "GAUGE.md §2b family 15";
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm and an untied head (lm_head differs from the embedding)";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm && !t.Tied;
    public override string DimensionFormula(ModelTraits t) => "d";
    public override long Dimension(ModelTraits t) => t.Hidden;

    private static Tensor Draw(Generator g, GlobalView stored, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var beta = ViewOps.Required(stored.FinalNorm.Bias, "final norm bias").to_type(ScalarType.Float64);
        var inv = stored.FinalNorm.Gain.to_type(ScalarType.Float64).reciprocal();
        for (int attempt = 0; attempt < 100; attempt++)
        {
            var shift = GaugeRandom.Shift([t.Hidden], beta, g);
            double kappa = (beta + shift).dot(inv).item<double>();
            double scale = shift.norm().item<double>() * inv.norm().item<double>();
            if (double.IsFinite(kappa) && Math.Abs(kappa) >= 1e-3 * scale) return shift.MoveToOuterDisposeScope();
        }
        throw new ArgumentException("final-bias: every draw made (β_f + t)·(1/γ_f) vanish; the final norm's gain and bias leave this family no well-conditioned element");
    }

    public override FamilyElement Sample(SampleKey key, ModelTraits t) =>
        new DrawnElement(globals: g => new FinalBiasAction(Draw(key.For(-1, Name), g, t)));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t) => new DrawnGenerator(
        layer: null,
        globals: at =>
        {
            // d/dτ at 0: β_f′ = t, head′[v] = −(t·head[v]) / (β_f·(1/γ_f)) · (1/γ_f).
            var shift = Draw(key.For(-1, Name + "/generator"), at, t);
            var head = ViewOps.Required(at.Head, "untied head").to_type(ScalarType.Float64);
            var inv = at.FinalNorm.Gain.to_type(ScalarType.Float64).reciprocal();
            var kappa = ViewOps.Required(at.FinalNorm.Bias, "final norm bias").to_type(ScalarType.Float64).dot(inv);
            var v = ViewOps.Zeros(at);
            v.FinalNorm.Bias = shift;
            v.Head = outer(-matmul(head, shift) / kappa, inv);
            return v;
        },
        exp: tau => new DrawnElement(globals: g => new FinalBiasAction(Draw(key.For(-1, Name + "/generator"), g, t) * tau)));
}

public sealed class FinalBiasAction(Tensor shift) : IGlobalAction
{
    /// <summary>[d] added to β_f.</summary>
    public Tensor T { get; } = shift;
    public string Name => "final-bias";

    public void Apply(GlobalState g)
    {
        var head = g.Head ?? throw new ArgumentException("final-bias needs an untied head");
        var f = g.FinalNorm;
        var beta = ViewOps.Required(f.Bias, "final norm bias") + T;
        var inv = f.Gain.reciprocal();
        var c = -head.MatVec(T) / beta.dot(inv);                                 // [V]
        head.AddOuter(c, inv);
        g.SetFinalNorm(f.Gain, beta);
    }

    public IGlobalAction Inverse() => new FinalBiasAction(-T);
}
