using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 3b, MLP unit permutation π ∈ S_F: columns of c_fc and its bias, rows of mlp.c_proj. GELU acts per unit,
/// so the MLP's output is unchanged. Discrete.
/// </summary>
public sealed class MlpPermutation(long[] pi) : ILayerAction
{
    public long[] Pi { get; } = pi;
    public GaugeFamily? Family => GaugeFamily.MlpPermutation;
    public string Name => "mlp-perm";

    public static MlpPermutation Sample(Generator g, Gpt2Config c)
    {
        using var p = GaugeRandom.Permutation(c.NInner, g);
        return new MlpPermutation(p.data<long>().ToArray());
    }

    public void Apply(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        var idx = tensor(Pi);
        HeadLayout.Replace(w, x => x.FcW, (x, t) => x.FcW = t, w.FcW.index_select(1, idx));
        HeadLayout.Replace(w, x => x.FcB, (x, t) => x.FcB = t, w.FcB.index_select(0, idx));
        HeadLayout.Replace(w, x => x.MlpProjW, (x, t) => x.MlpProjW = t, w.MlpProjW.index_select(0, idx));
    }

    public ILayerAction Inverse()
    {
        var inv = new long[Pi.Length];
        for (int j = 0; j < Pi.Length; j++) inv[Pi[j]] = j;
        return new MlpPermutation(inv);
    }
}
