using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge.Invalid;

/// <summary>
/// Invalid control: mixes the value blocks across heads with P = I + 0.1·R, where R has zero diagonal blocks and
/// Gaussian off-diagonal blocks R_ij (paper eq. 89); W_V → W_V P, b_V → b_V P, W_O → P^{-1} W_O.
/// It would be a symmetry if all heads shared one attention pattern; they do not.
/// Deviation from GAUGE.md §3: the blocks are scaled to unit RMS entries (‖R_ij‖_F = d_k) rather than unit Frobenius
/// norm. With ‖R_ij‖_F = 1 the mixing is 1/d_k of the identity block's size, and on whole-model logits of the trained
/// demo model it moved the logits by only 0.9–2.2e-3 (below the 1e-3 pass line for some samples; docs/invariance.md).
/// </summary>
public sealed class CrossHeadMixing(Tensor p, Tensor pInv) : ILayerAction
{
    public GaugeFamily? Family => null;
    public string Name => InvalidControl.CrossHeadMixing.CliName();

    public static CrossHeadMixing Sample(Generator g, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        long h = c.NHead, dk = c.HeadDim, d = c.NEmbd;
        var r = randn([h, h, dk, dk], ScalarType.Float64, generator: g);
        r = r / linalg.matrix_norm(r).unsqueeze(-1).unsqueeze(-1) * dk;
        r = r * (1 - eye(h, dtype: ScalarType.Float64)).unsqueeze(-1).unsqueeze(-1);
        var big = r.permute(0, 2, 1, 3).reshape(d, d);
        var p = eye(d, dtype: ScalarType.Float64) + big * 0.1;
        return new CrossHeadMixing(p.MoveToOuterDisposeScope(), linalg.inv(p).MoveToOuterDisposeScope());
    }

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        long d = c.NEmbd;
        var v = matmul(w.AttnW.narrow(1, 2 * d, d), p);
        var vb = matmul(w.AttnB.narrow(0, 2 * d, d), p);
        HeadLayout.SetPart(w, 2, v, vb, c);
        HeadLayout.Replace(w, x => x.AttnProjW, (x, t) => x.AttnProjW = t, matmul(pInv, w.AttnProjW));
    }

    public ILayerAction Inverse() => new CrossHeadMixing(pInv, p);
}
