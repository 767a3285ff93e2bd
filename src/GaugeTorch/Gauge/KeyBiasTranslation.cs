using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 4, key-bias translation: b_K^i → b_K^i + t_i. Every score of query row q changes by q·t_i, a constant
/// across keys, which the softmax over keys ignores. Dimension h·d_k.
/// </summary>
public sealed class KeyBiasTranslation(Tensor t) : ILayerAction
{
    /// <summary>[d] shift of the key bias (t_i in block i).</summary>
    public Tensor T { get; } = t;
    public GaugeFamily? Family => GaugeFamily.KeyBiasTranslation;
    public string Name => "key-bias";

    public static KeyBiasTranslation Sample(Generator g, LayerWeights w, Gpt2Config c) =>
        new(GaugeRandom.Shift([c.NEmbd], w.AttnB.narrow(0, c.NEmbd, c.NEmbd), g));

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        long d = c.NEmbd;
        var shift = cat([zeros(d, ScalarType.Float64), T, zeros(d, ScalarType.Float64)], 0);
        HeadLayout.Replace(w, x => x.AttnB, (x, v) => x.AttnB = v, w.AttnB + shift);
    }

    public ILayerAction Inverse() => new KeyBiasTranslation(-T);
}
