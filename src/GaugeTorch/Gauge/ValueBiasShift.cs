using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 5, value-bias shift: b_V^i → b_V^i + δ_i and b_O → b_O − Σ_i δ_i W_O^i. Attention rows sum to 1, so a
/// value bias reaches the output as the constant δ_i W_O^i, which b_O absorbs. Dimension h·d_v.
/// </summary>
public sealed class ValueBiasShift(Tensor delta) : ILayerAction
{
    /// <summary>[d] shift of the value bias (δ_i in block i).</summary>
    public Tensor Delta { get; } = delta;
    public GaugeFamily? Family => GaugeFamily.ValueBiasShift;
    public string Name => "value-bias";

    public static ValueBiasShift Sample(Generator g, LayerWeights w, Gpt2Config c) =>
        new(GaugeRandom.Shift([c.NEmbd], w.AttnB.narrow(0, 2L * c.NEmbd, c.NEmbd), g));

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        long d = c.NEmbd;
        var shift = cat([zeros(2 * d, ScalarType.Float64), Delta], 0);
        HeadLayout.Replace(w, x => x.AttnB, (x, v) => x.AttnB = v, w.AttnB + shift);
        HeadLayout.Replace(w, x => x.AttnProjB, (x, v) => x.AttnProjB = v, w.AttnProjB - matmul(Delta, w.AttnProjW));
    }

    public ILayerAction Inverse() => new ValueBiasShift(-Delta);
}
