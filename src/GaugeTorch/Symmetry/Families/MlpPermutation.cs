using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 3b (GAUGE.md §2; §6.2 family 3), MLP unit permutation π ∈ S_F: the columns of the up projection (and of the
/// SwiGLU gate) with their biases, and the rows of the down projection. Why it is a symmetry: the activation (GELU, or
/// silu(gate)·up) acts unit by unit and the down projection sums over units, so relabelling units changes nothing.
/// Discrete; uniform permutations.
/// </summary>
public sealed class MlpPermutation : SymmetryFamily
{
    public static readonly MlpPermutation Instance = new();

    public override string Name => "mlp-perm";
    public override string Reference => "GAUGE.md §2 family 3";
    public override bool IsPaper => true;
    public override bool Discrete => true;
    public override string Requirement => "an MLP (every model)";
    public override bool HoldsFor(ModelTraits t) => true;
    public override string DimensionFormula(ModelTraits t) => "0";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, _) =>
    {
        using var p = GaugeRandom.Permutation(t.Inner, key.For(l, Name));
        return new MlpPermutationAction(p.data<long>().ToArray());
    });
}

public sealed class MlpPermutationAction(long[] pi) : ILayerAction
{
    public long[] Pi { get; } = pi;
    public string Name => "mlp-perm";

    public void Apply(LayerView w, ModelTraits t)
    {
        var idx = tensor(Pi);
        w.Up = ViewOps.Columns(w.Up, idx);
        if (w.UpBias is not null) w.UpBias = w.UpBias.index_select(0, idx);
        if (w.Gate is not null) w.Gate = ViewOps.Columns(w.Gate, idx);
        if (w.GateBias is not null) w.GateBias = w.GateBias.index_select(0, idx);
        w.Down = w.Down.index_select(0, idx);
    }

    public ILayerAction Inverse() => new MlpPermutationAction(Permutations.Inverse(Pi));
}
