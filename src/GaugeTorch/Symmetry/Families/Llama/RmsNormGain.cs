using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// LLaMA family, GAUGE.md §6.2 family 5, RMSNorm gain ↔ readers: g₁ → g₁∘s₁ with the q, k, v input rows (HF: the
/// columns of q_proj, k_proj, v_proj) → diag(s₁)⁻¹·, and g₂ → g₂∘s₂ with gate and up likewise, for any s without zeros.
/// Why it is a symmetry: a reader computes (n∘g)·W = (n∘g∘s)·diag(s)⁻¹W, and the biases (Qwen2's q/k/v, mlp_bias) are
/// added after the product, so they stay. RMSNorm has no bias and no mean, so GPT-2's ln-bias, reader-mean and
/// writer-mean have no counterpart, and its eps breaks a global scale of the residual. Dimension L·2d. Gains with
/// |s| ∈ [0.5, 2] log-uniform and random signs (§4), as ln-gain draws them (the action is the same: <see cref="NormGainAction"/>).
/// </summary>
public sealed class RmsNormGain : SymmetryFamily
{
    public static readonly RmsNormGain Instance = new();

    public override string Name => "norm-gain";
    public override string Reference => "GAUGE.md §6.2 family 5";
    public override bool Discrete => false;
    public override string Requirement => "RMSNorm";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.RmsNorm;
    public override string DimensionFormula(ModelTraits t) => "L·2d";
    public override long Dimension(ModelTraits t) => 2L * t.Layers * t.Hidden;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        var g = key.For(l, Name);
        var s1 = GaugeRandom.Gains(t.Hidden, g);
        var s2 = GaugeRandom.Gains(t.Hidden, g);
        return new NormGainAction(Name, s1, s2);
    });

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        (Tensor, Tensor) X(int l)
        {
            var g = key.For(l, Name + "/generator");
            return (randn([t.Hidden], ScalarType.Float64, generator: g), randn([t.Hidden], ScalarType.Float64, generator: g));
        }
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                var (x1, x2) = X(l);
                var v = ViewOps.Zeros(at);
                v.Norm1 = new NormView { Gain = at.Norm1.Gain * x1 };
                var r1 = x1.view(1, -1, 1);
                v.Q = -(at.Q * r1);
                v.K = -(at.K * r1);
                v.V = -(at.V * r1);
                v.Norm2 = new NormView { Gain = at.Norm2.Gain * x2 };
                v.Up = -(at.Up * x2.unsqueeze(1));
                if (at.Gate is not null) v.Gate = -(at.Gate * x2.unsqueeze(1));
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, _) =>
            {
                var (x1, x2) = X(l);
                return new NormGainAction(Name, (x1 * tau).exp(), (x2 * tau).exp());
            }));
    }
}
