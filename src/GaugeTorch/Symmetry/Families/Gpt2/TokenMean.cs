using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 12 (GAUGE.md §2b, untied head), token mean: wte[t] → wte[t] + c_t·1 for any c ∈ R^V. Why it is a symmetry:
/// the residual's component along 1 is never read (every reader is a LayerNorm), so adding a multiple of 1 to one
/// token's input row changes nothing. With a tied head it would also add c_v·(LN_f(x)·1) to logit v, which is not a
/// per-position constant, so it needs an untied head. Dimension V − 1 beyond family 10 (c ∝ 1 is family 10's u ∝ 1).
/// Shifts of 0.1 × wte's RMS (§4); on the streaming evaluator it is one term (V numbers) of the lazy embedding.
/// </summary>
public sealed class TokenMean : SymmetryFamily
{
    public static readonly TokenMean Instance = new();

    public override string Name => "token-mean";
    public override string Reference => "GAUGE.md §2b family 12";
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm and an untied head (lm_head differs from the embedding)";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm && !t.Tied;
    public override string DimensionFormula(ModelTraits t) => "V − 1";
    public override long Dimension(ModelTraits t) => t.Vocab - 1L;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) =>
        new DrawnElement(globals: g => new TokenMeanAction(GaugeRandom.Shift([t.Vocab], g.Embed, key.For(-1, Name))));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        Tensor C(GlobalView at) => GaugeRandom.Shift([t.Vocab], at.Embed, key.For(-1, Name + "/generator"));
        return new DrawnGenerator(
            layer: null,
            globals: at =>
            {
                var v = ViewOps.Zeros(at);
                v.Embed = (C(at).unsqueeze(1) * ones(t.Hidden, ScalarType.Float64)).contiguous();
                return v;
            },
            exp: tau => new DrawnElement(globals: g => new TokenMeanAction(C(g) * tau)));
    }
}

public sealed class TokenMeanAction(Tensor c) : IGlobalAction
{
    /// <summary>[V]: c_t added to every entry of embedding row t.</summary>
    public Tensor C { get; } = c;
    public string Name => "token-mean";

    public void Apply(GlobalState g) => g.Embed.AddOuter(C, null);

    public IGlobalAction Inverse() => new TokenMeanAction(-C);
}
