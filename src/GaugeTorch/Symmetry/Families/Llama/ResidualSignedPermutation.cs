using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// LLaMA family, GAUGE.md §6.2 "global, tied": signed permutations of the residual coordinates (the hyperoctahedral
/// group), x → x·P·D with (x·P)[j] = x[π[j]] and D = diag(s), s_j = ±1. Why it is a symmetry: RMSNorm reads only the
/// norm of its input, which P·D preserves, so rms(xPD) = rms(x) and norm(xPD) = n(x)·P·D ∘ g′ with g′ = g·P; so,
/// exactly on the model as stored: embedding E → E·P·D; every norm gain (g₁, g₂, g_f) permuted, unsigned; every
/// reader's input rows (q, k, v, gate, up) permuted and signed, W → D·Pᵀ·W; every writer (o_proj, down_proj, and their
/// biases) W → W·P·D. The tied head is the embedding, so logits (n·P·D ∘ g_f·P)·(E·P·D)ᵀ = (n ∘ g_f)·Eᵀ. RMSNorm commutes
/// with every orthogonal map, but a tied head keeps only those that commute with diag(g_f), which for a generic g_f are
/// the signed permutations (an untied head keeps all of O(d): residual-rotation, which contains this group). Discrete
/// (no continuous dimension); the canonical form must break it. Uniform permutation, fair independent signs.
/// </summary>
public sealed class ResidualSignedPermutation : SymmetryFamily
{
    public static readonly ResidualSignedPermutation Instance = new();

    public override string Name => "residual-signed-perm";
    public override string Reference => "GAUGE.md §6.2 (global, tied)";
    public override bool Discrete => true;
    public override string Requirement => "RMSNorm and a tied head (untied RMSNorm models have residual-rotation, which contains it)";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.RmsNorm && t.Tied;
    public override string DimensionFormula(ModelTraits t) => "0";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t)
    {
        var drawn = SharedTensor.Of(() =>
        {
            var g = key.For(-1, Name);
            var p = GaugeRandom.Permutation(t.Hidden, g).to_type(ScalarType.Float64);
            var s = (rand([t.Hidden], ScalarType.Float64, generator: g) < 0.5).to_type(ScalarType.Float64) * 2 - 1;
            return stack([p, s]);                                                   // [2, d]: π (as float64, exact) and s
        });
        var index = SharedTensor.Of(() => drawn.Value[0].to_type(ScalarType.Int64));
        var signs = SharedTensor.Of(() => drawn.Value[1].clone());
        ResidualSignedPermutationAction Action() => new(index.Value, signs.Value);
        return new DrawnElement(layer: (_, _) => Action(), globals: _ => Action(), dispose: () => { index.Dispose(); signs.Dispose(); drawn.Dispose(); });
    }
}

/// <summary>x ↦ x·P·D, (x·P·D)[j] = s[j]·x[π[j]]: one action for every block and for the globals.</summary>
public sealed class ResidualSignedPermutationAction(Tensor index, Tensor signs) : ILayerAction, IGlobalAction
{
    /// <summary>[d] int64 π (not owned).</summary>
    public Tensor Index { get; } = index;
    /// <summary>[d] float64 ±1 (not owned).</summary>
    public Tensor Signs { get; } = signs;
    public string Name => "residual-signed-perm";

    private static NormView Permuted(NormView n, Tensor index) => new() { Gain = n.Gain.index_select(0, index), Bias = n.Bias?.index_select(0, index) };

    public void Apply(LayerView w, ModelTraits t)
    {
        if (w.Norm1.Bias is not null || w.Norm2.Bias is not null) throw new ArgumentException("residual-signed-perm needs bias-free RMSNorms");
        // One gather per matrix on the [out, in] storage (OutInLayout): the same values as index_select·signs.
        long[] pi;
        double[] s;
        using (var ia = Index.data<long>()) pi = ia.ToArray();
        using (var sa = Signs.data<double>()) s = sa.ToArray();
        w.Norm1 = Permuted(w.Norm1, Index);
        w.Q = OutInLayout.ReaderHeads(w.Q, null, pi, s);                         // readers: W → D·Pᵀ·W (input rows)
        w.K = OutInLayout.ReaderHeads(w.K, null, pi, s);
        w.V = OutInLayout.ReaderHeads(w.V, null, pi, s);
        w.O = OutInLayout.WriterHeads(w.O, null, pi, s);                         // writers: W → W·P·D (output columns)
        if (w.OBias is not null) w.OBias = w.OBias.index_select(0, Index) * Signs;
        w.Norm2 = Permuted(w.Norm2, Index);
        ViewOps.MapReaders2(w, m => OutInLayout.Monomial(m, pi, s, null, null));
        w.Down = OutInLayout.Monomial(w.Down, null, null, pi, s);
        if (w.DownBias is not null) w.DownBias = w.DownBias.index_select(0, Index) * Signs;
    }

    public void Apply(GlobalState g)
    {
        using (var p = ResidualMap.SignedPermutation(Index, 1.0))
        using (var d = ResidualMap.Diagonal(Signs))
        using (var map = p.Then(d))
        {
            g.Embed.RightMultiply(map);
            g.Positions?.RightMultiply(map);
            g.Head?.RightMultiply(map);
        }
        var f = g.FinalNorm;
        if (f.Bias is not null) throw new ArgumentException("residual-signed-perm needs a bias-free final RMSNorm");
        g.SetFinalNorm(f.Gain.index_select(0, Index), null);
    }

    /// <summary>x = x′·D·Pᵀ: index π⁻¹, signs s[π⁻¹].</summary>
    public ResidualSignedPermutationAction Inverted()
    {
        var inv = Index.argsort();
        return new ResidualSignedPermutationAction(inv, Signs.index_select(0, inv));
    }

    ILayerAction ILayerAction.Inverse() => Inverted();
    IGlobalAction IGlobalAction.Inverse() => Inverted();
}
