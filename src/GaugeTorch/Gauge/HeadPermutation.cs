using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 3a, head permutation σ ∈ S_h: new head j is old head σ(j); the Q, K and V column blocks and the W_O row
/// blocks move together. Discrete.
/// </summary>
public sealed class HeadPermutation(long[] sigma) : ILayerAction
{
    public long[] Sigma { get; } = sigma;
    public GaugeFamily? Family => GaugeFamily.HeadPermutation;
    public string Name => "head-perm";

    public static HeadPermutation Sample(Generator g, Gpt2Config c)
    {
        using var p = GaugeRandom.Permutation(c.NHead, g);
        return new HeadPermutation(p.data<long>().ToArray());
    }

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        long d = c.NEmbd, dk = c.HeadDim;
        var within = Sigma.SelectMany(s => Enumerable.Range(0, (int)dk).Select(k => s * dk + k)).ToArray();
        var cols = tensor(Enumerable.Range(0, 3).SelectMany(part => within.Select(i => part * d + i)).ToArray());
        var rows = tensor(within);
        HeadLayout.Replace(w, x => x.AttnW, (x, t) => x.AttnW = t, w.AttnW.index_select(1, cols));
        HeadLayout.Replace(w, x => x.AttnB, (x, t) => x.AttnB = t, w.AttnB.index_select(0, cols));
        HeadLayout.Replace(w, x => x.AttnProjW, (x, t) => x.AttnProjW = t, w.AttnProjW.index_select(0, rows));
    }

    public ILayerAction Inverse()
    {
        var inv = new long[Sigma.Length];
        for (int j = 0; j < Sigma.Length; j++) inv[Sigma[j]] = j;
        return new HeadPermutation(inv);
    }
}
