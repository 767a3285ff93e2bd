using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 7, LayerNorm bias ↔ reader bias, for ln_1/c_attn and ln_2/c_fc: β → β + t, b → b − t W.
/// Dimension d per LayerNorm.
/// </summary>
public sealed class LayerNormBias(Tensor t1, Tensor t2) : ILayerAction
{
    public Tensor T1 { get; } = t1;
    public Tensor T2 { get; } = t2;
    public GaugeFamily? Family => GaugeFamily.LayerNormBias;
    public string Name => "ln-bias";

    public static LayerNormBias Sample(Generator g, LayerWeights w, Gpt2Config c) =>
        new(GaugeRandom.Shift([c.NEmbd], w.Ln1B, g), GaugeRandom.Shift([c.NEmbd], w.Ln2B, g));

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        HeadLayout.Replace(w, x => x.Ln1B, (x, v) => x.Ln1B = v, w.Ln1B + T1);
        HeadLayout.Replace(w, x => x.AttnB, (x, v) => x.AttnB = v, w.AttnB - matmul(T1, w.AttnW));
        HeadLayout.Replace(w, x => x.Ln2B, (x, v) => x.Ln2B = v, w.Ln2B + T2);
        HeadLayout.Replace(w, x => x.FcB, (x, v) => x.FcB = v, w.FcB - matmul(T2, w.FcW));
    }

    public ILayerAction Inverse() => new LayerNormBias(-T1, -T2);
}
