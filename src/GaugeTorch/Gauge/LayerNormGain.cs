using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 6, LayerNorm gain ↔ reader rows, for ln_1 with c_attn and ln_2 with c_fc: γ → γ∘s, β → β∘s,
/// W → diag(s)^{-1} W, for any s without zeros. Dimension d per LayerNorm. Sampled |s| ∈ [0.5, 2] with random signs.
/// </summary>
public sealed class LayerNormGain(Tensor s1, Tensor s2) : ILayerAction
{
    public Tensor S1 { get; } = s1;
    public Tensor S2 { get; } = s2;
    public GaugeFamily? Family => GaugeFamily.LayerNormGain;
    public string Name => "ln-gain";

    public static LayerNormGain Sample(Generator g, Gpt2Config c)
    {
        Tensor Draw()
        {
            var mag = (rand([c.NEmbd], ScalarType.Float64, generator: g) * 2 - 1) * Math.Log(2.0);
            var sign = (rand([c.NEmbd], ScalarType.Float64, generator: g) < 0.5).to_type(ScalarType.Float64) * 2 - 1;
            return mag.exp() * sign;
        }
        return new LayerNormGain(Draw(), Draw());
    }

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        HeadLayout.Replace(w, x => x.Ln1W, (x, v) => x.Ln1W = v, w.Ln1W * S1);
        HeadLayout.Replace(w, x => x.Ln1B, (x, v) => x.Ln1B = v, w.Ln1B * S1);
        HeadLayout.Replace(w, x => x.AttnW, (x, v) => x.AttnW = v, w.AttnW / S1.unsqueeze(1));
        HeadLayout.Replace(w, x => x.Ln2W, (x, v) => x.Ln2W = v, w.Ln2W * S2);
        HeadLayout.Replace(w, x => x.Ln2B, (x, v) => x.Ln2B = v, w.Ln2B * S2);
        HeadLayout.Replace(w, x => x.FcW, (x, v) => x.FcW = v, w.FcW / S2.unsqueeze(1));
    }

    public ILayerAction Inverse() => new LayerNormGain(S1.reciprocal(), S2.reciprocal());
}
