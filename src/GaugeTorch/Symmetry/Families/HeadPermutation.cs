using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 3a (GAUGE.md §2; §6.2 family 3), head permutation. Why it is a symmetry: the attention output is a sum over
/// heads, Σ_i att_i V W_O^i, and each head's computation depends only on its own blocks, so relabelling heads (moving
/// their Q, K, V and W_O blocks together) changes nothing. With grouped-query attention the permutation acts within
/// each KV group (S_{H/G} per group: query heads share their group's keys and values); when every head is its own
/// group (G = H, GPT-2) that is trivial, so the family permutes whole heads, Q, K, V and W_O together (S_h, the papers'
/// family 3). Moving whole groups across groups is the LLaMA family's group-perm. Discrete; uniform permutations.
/// </summary>
public sealed class HeadPermutation : SymmetryFamily
{
    public static readonly HeadPermutation Instance = new();

    public override string Name => "head-perm";
    public override string Reference => "GAUGE.md §2 family 3";
    public override bool IsPaper => true;
    public override bool Discrete => true;
    public override string Requirement => "attention (every model)";
    public override bool HoldsFor(ModelTraits t) => true;
    public override string DimensionFormula(ModelTraits t) => "0";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        var g = key.For(l, Name);
        if (t.KvHeads == t.QueryHeads)
        {
            using var p = GaugeRandom.Permutation(t.QueryHeads, g);
            return new HeadPermutationAction(p.data<long>().ToArray(), wholeHeads: true);
        }
        int gs = t.GroupSize;
        var sigma = new long[t.QueryHeads];
        for (int r = 0; r < t.KvHeads; r++)
        {
            using var p = GaugeRandom.Permutation(gs, g);
            var within = p.data<long>().ToArray();
            for (int j = 0; j < gs; j++) sigma[r * gs + j] = r * gs + within[j];
        }
        return new HeadPermutationAction(sigma, wholeHeads: false);
    });
}

/// <summary>New query head j is old head σ(j) (with its K and V blocks when <c>wholeHeads</c>, i.e. G = H).</summary>
public sealed class HeadPermutationAction(long[] sigma, bool wholeHeads) : ILayerAction
{
    public long[] Sigma { get; } = sigma;
    public bool WholeHeads { get; } = wholeHeads;
    public string Name => "head-perm";

    public void Apply(LayerView w, ModelTraits t)
    {
        var idx = tensor(Sigma);
        // Whole head blocks (OutInLayout: LLaMA's [out, in] views stay views of gathered storage rows; same values).
        w.Q = OutInLayout.ReaderHeads(w.Q, Sigma, null, null);
        if (w.QBias is not null) w.QBias = w.QBias.index_select(0, idx);
        w.O = OutInLayout.WriterHeads(w.O, Sigma, null, null);
        if (!WholeHeads) return;
        w.K = OutInLayout.ReaderHeads(w.K, Sigma, null, null);
        if (w.KBias is not null) w.KBias = w.KBias.index_select(0, idx);
        w.V = OutInLayout.ReaderHeads(w.V, Sigma, null, null);
        if (w.VBias is not null) w.VBias = w.VBias.index_select(0, idx);
    }

    public ILayerAction Inverse() => new HeadPermutationAction(Permutations.Inverse(Sigma), WholeHeads);
}

internal static class Permutations
{
    public static long[] Inverse(long[] p)
    {
        var inv = new long[p.Length];
        for (int j = 0; j < p.Length; j++) inv[p[j]] = j;
        return inv;
    }
}
