using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// LLaMA family, GAUGE.md §6.2 family 3, KV-group permutation ρ ∈ S_G: whole groups move, each with its K and V
/// blocks (and biases) and the Q blocks and O blocks of its H/G query heads, keeping their order inside the group.
/// Why it is a symmetry: a group's query heads read only its keys and values, and the attention output is a sum over
/// query heads, so relabelling groups together with their heads changes nothing. Together with head-perm (within a
/// group) it gives every permutation of heads that respects the grouping, S_{H/G} ≀ S_G. With G = H (multi-head) it
/// permutes whole heads, as head-perm then also does. Discrete; uniform permutations.
/// </summary>
public sealed class GroupPermutation : SymmetryFamily
{
    public static readonly GroupPermutation Instance = new();

    public override string Name => "group-perm";
    public override string Reference => "GAUGE.md §6.2 family 3";
    public override bool IsPaper => true;
    public override bool Discrete => true;
    public override string Requirement => LlamaFamily.Requirement;
    public override bool HoldsFor(ModelTraits t) => LlamaFamily.Holds(t);
    public override string DimensionFormula(ModelTraits t) => "0";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        using var p = GaugeRandom.Permutation(t.KvHeads, key.For(l, Name));
        return new GroupPermutationAction(p.data<long>().ToArray());
    });
}

/// <summary>New KV group r is old group ρ(r), with its query heads: new query head r·k + j is old head ρ(r)·k + j (k = H/G).</summary>
public sealed class GroupPermutationAction(long[] rho) : ILayerAction
{
    public long[] Rho { get; } = rho;
    public string Name => "group-perm";

    public void Apply(LayerView w, ModelTraits t)
    {
        int k = t.GroupSize;
        var sigma = new long[Rho.Length * k];
        for (int r = 0; r < Rho.Length; r++)
            for (int j = 0; j < k; j++) sigma[r * k + j] = Rho[r] * k + j;
        var g = tensor(Rho);
        var h = tensor(sigma);
        // Whole head blocks of the [out, in] storage (OutInLayout), the same values as index_select.
        w.K = OutInLayout.ReaderHeads(w.K, Rho, null, null);
        if (w.KBias is not null) w.KBias = w.KBias.index_select(0, g);
        w.V = OutInLayout.ReaderHeads(w.V, Rho, null, null);
        if (w.VBias is not null) w.VBias = w.VBias.index_select(0, g);
        w.Q = OutInLayout.ReaderHeads(w.Q, sigma, null, null);
        if (w.QBias is not null) w.QBias = w.QBias.index_select(0, h);
        w.O = OutInLayout.WriterHeads(w.O, sigma, null, null);
    }

    public ILayerAction Inverse() => new GroupPermutationAction(Permutations.Inverse(Rho));
}
