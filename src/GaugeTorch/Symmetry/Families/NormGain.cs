using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// A norm's gain ↔ its readers, for both norms of a block: gains (and a LayerNorm's bias) → ∘s, the q, k, v input rows
/// and the MLP's up (and gate) input rows → diag(s)⁻¹·, for any s without zeros. One action and one sampler for both
/// norm kinds; <see cref="LayerNormGain"/> (GPT-2's ln-gain) and <see cref="RmsNormGain"/> (the LLaMA family's
/// norm-gain) say where each holds and why. Gains with |s| ∈ [0.5, 2] (log-uniform) and random signs (§4), drawn
/// from the family's own name, so each family keeps its random stream.
/// </summary>
public abstract class NormGainFamily : SymmetryFamily
{
    public override bool Discrete => false;
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
                v.Norm1 = new NormView { Gain = at.Norm1.Gain * x1, Bias = at.Norm1.Bias is null ? null : at.Norm1.Bias * x1 };
                var r1 = x1.view(1, -1, 1);
                v.Q = -(at.Q * r1);
                v.K = -(at.K * r1);
                v.V = -(at.V * r1);
                v.Norm2 = new NormView { Gain = at.Norm2.Gain * x2, Bias = at.Norm2.Bias is null ? null : at.Norm2.Bias * x2 };
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

/// <summary>Norm gains (and LayerNorm biases) ∘ s, the norm's readers' rows ÷ s, for both norms of a block.</summary>
public sealed class NormGainAction(string name, Tensor s1, Tensor s2) : ILayerAction
{
    public Tensor S1 { get; } = s1;
    public Tensor S2 { get; } = s2;
    public string Name { get; } = name;

    public void Apply(LayerView w, ModelTraits t)
    {
        w.Norm1 = new NormView { Gain = w.Norm1.Gain * S1, Bias = w.Norm1.Bias is null ? null : w.Norm1.Bias * S1 };
        // Q | K | V as one matrix (the same quotients): later actions read it back without concatenating again.
        ViewOps.SetReader1(w, t, ViewOps.Reader1(w) / S1.unsqueeze(1));
        w.Norm2 = new NormView { Gain = w.Norm2.Gain * S2, Bias = w.Norm2.Bias is null ? null : w.Norm2.Bias * S2 };
        var r2 = S2.unsqueeze(1);
        ViewOps.MapReaders2(w, m => m / r2);
    }

    public ILayerAction Inverse() => new NormGainAction(Name, S1.reciprocal(), S2.reciprocal());
}
