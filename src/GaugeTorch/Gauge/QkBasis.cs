using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 1, query–key basis per head: W_Q^i → W_Q^i A_i, b_Q^i → b_Q^i A_i, W_K^i → W_K^i A_i^{-T},
/// b_K^i → b_K^i A_i^{-T}. Scores q·k are unchanged for every pair. Dimension h·d_k².
/// </summary>
public sealed class QkBasis(Tensor a, Tensor aInvT) : ILayerAction
{
    /// <summary>[h, dk, dk] per-head matrices A_i (and A_i^{-T}).</summary>
    public Tensor A { get; } = a;
    public Tensor AInvT { get; } = aInvT;
    public GaugeFamily? Family => GaugeFamily.QkBasis;
    public string Name => "qk";

    public static QkBasis Sample(Generator g, Gpt2Config c)
    {
        var a = GaugeRandom.Invertible(c.NHead, c.HeadDim, g);
        return new QkBasis(a, linalg.inv(a).transpose(-2, -1));
    }

    public void Apply(LayerWeights w, Gpt2Config c) => ApplyPair(w, c, A, AInvT);

    /// <summary>Applies A to the query side and B to the key side (B = A^{-T} for a valid element).</summary>
    internal static void ApplyPair(LayerWeights w, Gpt2Config c, Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var q = matmul(HeadLayout.Heads(w.AttnW, 0, c), a);
        var qb = matmul(HeadLayout.Heads(w.AttnB, 0, c), a);
        var k = matmul(HeadLayout.Heads(w.AttnW, 1, c), b);
        var kb = matmul(HeadLayout.Heads(w.AttnB, 1, c), b);
        var v = w.AttnW.narrow(1, 2L * c.NEmbd, c.NEmbd);
        var vb = w.AttnB.narrow(0, 2L * c.NEmbd, c.NEmbd);
        HeadLayout.Replace(w, x => x.AttnW, (x, t) => x.AttnW = t, cat([HeadLayout.Merge(q, false), HeadLayout.Merge(k, false), v], 1));
        HeadLayout.Replace(w, x => x.AttnB, (x, t) => x.AttnB = t, cat([HeadLayout.Merge(qb, true), HeadLayout.Merge(kb, true), vb], 0));
    }

    public ILayerAction Inverse() => new QkBasis(linalg.inv(A), A.transpose(-2, -1).contiguous());
}
