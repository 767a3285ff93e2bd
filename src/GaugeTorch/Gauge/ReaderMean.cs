using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 8, reader mean: a LayerNorm's normalized vector n is orthogonal to 1, so (n∘γ)·(1/γ) = 0. Hence
/// W → W + (1/γ) cᵀ with b → b − (β·(1/γ)) cᵀ leaves the reader's output unchanged. c ∈ R^{3d} for c_attn and
/// R^F for c_fc. Needs γ without zeros (the sampler skips a LayerNorm whose γ has a zero).
/// </summary>
public sealed class ReaderMean(Tensor cAttn, Tensor cFc) : ILayerAction
{
    public Tensor CAttn { get; } = cAttn;
    public Tensor CFc { get; } = cFc;
    public GaugeFamily? Family => GaugeFamily.ReaderMean;
    public string Name => "reader-mean";

    public static ReaderMean Sample(Generator g, LayerWeights w, Gpt2Config c)
    {
        // Scale so that the added rank-one term (1/γ)cᵀ is 0.1 × the reader weight's RMS.
        Tensor Draw(Tensor weight, Tensor gamma, long n)
        {
            using var scope = NewDisposeScope();
            double invG = gamma.reciprocal().square().mean().sqrt().item<double>();
            double rms = weight.square().mean().sqrt().item<double>();
            bool usable = gamma.abs().min().item<double>() > 0;
            var draw = randn([n], ScalarType.Float64, generator: g) * (usable ? 0.1 * rms / invG : 0.0);
            return draw.MoveToOuterDisposeScope();
        }
        return new ReaderMean(Draw(w.AttnW, w.Ln1W, 3L * c.NEmbd), Draw(w.FcW, w.Ln2W, c.NInner));
    }

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        var inv1 = w.Ln1W.reciprocal();
        HeadLayout.Replace(w, x => x.AttnW, (x, v) => x.AttnW = v, w.AttnW + outer(inv1, CAttn));
        HeadLayout.Replace(w, x => x.AttnB, (x, v) => x.AttnB = v, w.AttnB - w.Ln1B.dot(inv1) * CAttn);
        var inv2 = w.Ln2W.reciprocal();
        HeadLayout.Replace(w, x => x.FcW, (x, v) => x.FcW = v, w.FcW + outer(inv2, CFc));
        HeadLayout.Replace(w, x => x.FcB, (x, v) => x.FcB = v, w.FcB - w.Ln2B.dot(inv2) * CFc);
    }

    public ILayerAction Inverse() => new ReaderMean(-CAttn, -CFc);
}
