using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 11 (GAUGE.md §2, "Discrete residual symmetries"), residual permutation with a global sign: for a
/// permutation P of the d residual coordinates and σ = ±1, the residual stream becomes σ·x·P. Why it is a symmetry:
/// every reader of the residual is a LayerNorm, and LayerNorm commutes with permuting coordinates and with negation,
/// LN(σxP) = σ·LN(x)P with its parameters permuted. So, exactly on the model as stored, tied or untied:
/// embeddings wte, wpe → σ·(·)P; every reader (Q | K | V, up) W → PᵀW with γ → σγP, β → βP; every writer (attention
/// output, down) W → σWP, b → σbP; the final norm γ_f → γ_fP, β_f → σβ_fP; a tied head follows the embedding and an
/// untied one goes to σ·head·P. The group is S_d × Z₂. It adds no continuous dimension; the canonical form must
/// break it (§5 step 4b). Uniform permutation, fair sign. (RMSNorm models have the larger signed-permutation group.)
/// </summary>
public sealed class ResidualPermutation : SymmetryFamily
{
    public static readonly ResidualPermutation Instance = new();

    public override string Name => "residual-perm";
    public override string Reference => "GAUGE.md §2 family 11";
    public override bool Discrete => true;
    public override string Requirement => "LayerNorm";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm;
    public override string DimensionFormula(ModelTraits t) => "0";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t)
    {
        double sign = 0;
        var index = SharedTensor.Of(() =>
        {
            var g = key.For(-1, Name);
            var p = GaugeRandom.Permutation(t.Hidden, g);
            sign = GaugeRandom.Sign(g);
            return p;
        });
        ResidualPermutationAction Action() { var idx = index.Value; return new ResidualPermutationAction(idx, sign); }
        return new DrawnElement(layer: (_, _) => Action(), globals: _ => Action(), dispose: index.Dispose);
    }
}

/// <summary>x ↦ σ·x·P with (x·P)[j] = x[π[j]]: one action for every block and for the globals.</summary>
public sealed class ResidualPermutationAction(Tensor index, double sign) : IResidualMapAction, IGlobalAction
{
    /// <summary>[d] int64 π (not owned).</summary>
    public Tensor Index { get; } = index;
    public double Sign { get; } = sign;
    public string Name => "residual-perm";

    public void Apply(LayerView w, ModelTraits t)
    {
        double s = Sign;
        w.Norm1 = new NormView { Gain = w.Norm1.Gain.index_select(0, Index) * s, Bias = w.Norm1.Bias?.index_select(0, Index) };
        w.Q = w.Q.index_select(1, Index);                          // readers: W → PᵀW (rows)
        w.K = w.K.index_select(1, Index);
        w.V = w.V.index_select(1, Index);
        w.O = w.O.index_select(2, Index) * s;                      // writers: W → σWP (columns)
        if (w.OBias is not null) w.OBias = w.OBias.index_select(0, Index) * s;
        w.Norm2 = new NormView { Gain = w.Norm2.Gain.index_select(0, Index) * s, Bias = w.Norm2.Bias?.index_select(0, Index) };
        ViewOps.MapReaders2(w, m => m.index_select(0, Index));
        w.Down = w.Down.index_select(1, Index) * s;
        if (w.DownBias is not null) w.DownBias = w.DownBias.index_select(0, Index) * s;
    }

    /// <summary>γ → σγP, β → βP for both norms (the other tensors shared).</summary>
    public LayerView OnNorms(LayerView w)
    {
        var v = w.Map(x => x.alias());
        double s = Sign;
        v.Norm1 = new NormView { Gain = w.Norm1.Gain.index_select(0, Index) * s, Bias = w.Norm1.Bias?.index_select(0, Index) };
        v.Norm2 = new NormView { Gain = w.Norm2.Gain.index_select(0, Index) * s, Bias = w.Norm2.Bias?.index_select(0, Index) };
        return v;
    }

    /// <summary>
    /// Readers W → PᵀW ((PᵀW)[i] = W[π[i]]): h ↦ h·Pᵀ, (h·Pᵀ)[j] = h[π⁻¹[j]]; writers W → σWP: y ↦ σ·y·P,
    /// (y·P)[j] = y[π[j]]. Both exact (gathers and a negation).
    /// </summary>
    public BlockMaps Maps(LayerView w)
    {
        var inverse = Index.argsort();
        double s = Sign;
        return new BlockMaps
        {
            Reader = h => h.index_select(-1, inverse),
            Writer = y => s == 1.0 ? y.index_select(-1, Index) : y.index_select(-1, Index).neg(),
        };
    }

    public void Apply(GlobalState g)
    {
        using var map = ResidualMap.SignedPermutation(Index, Sign);
        g.Embed.RightMultiply(map);
        g.Positions?.RightMultiply(map);
        g.Head?.RightMultiply(map);
        var f = g.FinalNorm;
        g.SetFinalNorm(f.Gain.index_select(0, Index), f.Bias is null ? null : f.Bias.index_select(0, Index) * Sign);
    }

    public ResidualPermutationAction Inverted() => new(Index.argsort(), Sign);
    ILayerAction ILayerAction.Inverse() => Inverted();
    IGlobalAction IGlobalAction.Inverse() => Inverted();
}
