using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 2, value–output basis per head: W_V^i → W_V^i C_i, b_V^i → b_V^i C_i, W_O^i → C_i^{-1} W_O^i.
/// Each head's contribution att·V·W_O is unchanged. Dimension h·d_v².
/// </summary>
public sealed class VoBasis(Tensor cMat, Tensor cInv) : ILayerAction
{
    public Tensor C { get; } = cMat;
    public Tensor CInv { get; } = cInv;
    public GaugeFamily? Family => GaugeFamily.VoBasis;
    public string Name => "vo";

    public static VoBasis Sample(Generator g, Gpt2Config c)
    {
        var m = GaugeRandom.Invertible(c.NHead, c.HeadDim, g);
        return new VoBasis(m, linalg.inv(m));
    }

    public void Apply(LayerWeights w, Gpt2Config c) => ApplyValueOutput(w, c, C, CInv);

    /// <summary>W_V → W_V·blockdiag(C), W_O → blockdiag(Cinv)·W_O (also used by the invalid controls with full d×d).</summary>
    internal static void ApplyValueOutput(LayerWeights w, Gpt2Config c, Tensor cm, Tensor cinv)
    {
        using var scope = NewDisposeScope();
        long d = c.NEmbd, h = c.NHead, dk = c.HeadDim;
        var v = matmul(HeadLayout.Heads(w.AttnW, 2, c), cm);
        var vb = matmul(HeadLayout.Heads(w.AttnB, 2, c), cm);
        HeadLayout.SetPart(w, 2, HeadLayout.Merge(v, false), HeadLayout.Merge(vb, true), c);
        var o = matmul(cinv, w.AttnProjW.reshape(h, dk, d)).reshape(d, d);
        HeadLayout.Replace(w, x => x.AttnProjW, (x, t) => x.AttnProjW = t, o);
    }

    public ILayerAction Inverse() => new VoBasis(CInv, C);
}
