using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge.Invalid;

/// <summary>Invalid control: W_Q^i → W_Q^i A_i but W_K^i → W_K^i A′_i^{-T} with an independent A′_i.</summary>
public sealed class MismatchedQk(Tensor a, Tensor bKey) : ILayerAction
{
    public GaugeFamily? Family => null;
    public string Name => InvalidControl.MismatchedQk.CliName();

    public static MismatchedQk Sample(Generator g, Gpt2Config c)
    {
        var a = GaugeRandom.Invertible(c.NHead, c.HeadDim, g);
        var a2 = GaugeRandom.Invertible(c.NHead, c.HeadDim, g);
        return new MismatchedQk(a, linalg.inv(a2).transpose(-2, -1).contiguous());
    }

    public void Apply(LayerWeights w, Gpt2Config c) => QkBasis.ApplyPair(w, c, a, bKey);

    public ILayerAction Inverse() => new MismatchedQk(linalg.inv(a), linalg.inv(bKey));
}
