using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge.Invalid;

/// <summary>
/// Invalid control: one random orthogonal Q (d×d) applied to every weight of the tied model as stored — the
/// residual stream is rotated (wte, wpe, writers → ·Q; readers → Qᵀ·) but the LayerNorm parameters are left as
/// they are. LayerNorm's mean removal and non-uniform γ do not commute with a general rotation, so this is not a
/// symmetry of the stored model (it becomes one only after folding, see <see cref="ResidualRotation"/>).
/// To avoid a V×d×d product, the rotation of wte is applied to the gathered embedding rows and, for the tied
/// head, to the final normalized states (logits = n·(wte Q)ᵀ = (n Qᵀ)·wteᵀ) — the same numbers as rotating wte.
/// </summary>
public sealed class GlobalOrthogonal(Tensor q) : ILayerAction
{
    public Tensor Q { get; } = q;
    public GaugeFamily? Family => null;
    public string Name => InvalidControl.GlobalOrthogonal.CliName();

    public static GlobalOrthogonal Sample(Generator g, Gpt2Config c) => new(GaugeRandom.Orthogonal(c.NEmbd, g));

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        var qt = Q.t();
        HeadLayout.Replace(w, x => x.AttnW, (x, t) => x.AttnW = t, matmul(qt, w.AttnW));
        HeadLayout.Replace(w, x => x.FcW, (x, t) => x.FcW = t, matmul(qt, w.FcW));
        HeadLayout.Replace(w, x => x.AttnProjW, (x, t) => x.AttnProjW = t, matmul(w.AttnProjW, Q));
        HeadLayout.Replace(w, x => x.AttnProjB, (x, t) => x.AttnProjB = t, matmul(w.AttnProjB, Q));
        HeadLayout.Replace(w, x => x.MlpProjW, (x, t) => x.MlpProjW = t, matmul(w.MlpProjW, Q));
        HeadLayout.Replace(w, x => x.MlpProjB, (x, t) => x.MlpProjB = t, matmul(w.MlpProjB, Q));
    }

    public ILayerAction Inverse() => new GlobalOrthogonal(Q.t().contiguous());
}
