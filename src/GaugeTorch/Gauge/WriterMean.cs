using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 9, writer mean: every reader of the residual stream is a LayerNorm, so the residual's component along 1
/// is never read. W_O → W_O + a 1ᵀ (a ∈ R^d), b_O → b_O + κ1, and likewise mlp.c_proj (a ∈ R^F) and its bias.
/// Dimension (d+1) + (F+1).
/// </summary>
public sealed class WriterMean(Tensor aAttn, double kAttn, Tensor aMlp, double kMlp) : ILayerAction
{
    public Tensor AAttn { get; } = aAttn;
    public double KAttn { get; } = kAttn;
    public Tensor AMlp { get; } = aMlp;
    public double KMlp { get; } = kMlp;
    public GaugeFamily? Family => GaugeFamily.WriterMean;
    public string Name => "writer-mean";

    public static WriterMean Sample(Generator g, LayerWeights w, Gpt2Config c)
    {
        var aAttn = GaugeRandom.Shift([c.NEmbd], w.AttnProjW, g);
        var aMlp = GaugeRandom.Shift([c.NInner], w.MlpProjW, g);
        using var k1 = GaugeRandom.Shift([], w.AttnProjB, g);
        using var k2 = GaugeRandom.Shift([], w.MlpProjB, g);
        return new WriterMean(aAttn, k1.item<double>(), aMlp, k2.item<double>());
    }

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        HeadLayout.Replace(w, x => x.AttnProjW, (x, v) => x.AttnProjW = v, w.AttnProjW + AAttn.unsqueeze(1));
        HeadLayout.Replace(w, x => x.AttnProjB, (x, v) => x.AttnProjB = v, w.AttnProjB + KAttn);
        HeadLayout.Replace(w, x => x.MlpProjW, (x, v) => x.MlpProjW = v, w.MlpProjW + AMlp.unsqueeze(1));
        HeadLayout.Replace(w, x => x.MlpProjB, (x, v) => x.MlpProjB = v, w.MlpProjB + KMlp);
    }

    public ILayerAction Inverse() => new WriterMean(-AAttn, -KAttn, -AMlp, -KMlp);
}
