using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §6.3), residual rotation of a tied model: a Haar-random Q ∈ O(d) applied as the untied
/// family residual-rotation applies it (every block exactly as there: readers absorb diag(g)⁻¹·Qᵀ·diag(g), writers and
/// the embedding go to ·Q), with the head left tied to the embedding. The head would have to become E·diag(g_f)·Q·
/// diag(g_f)⁻¹ while the input needs E·Q; they agree only when Q commutes with diag(g_f), i.e. for a generic g_f only on
/// signed permutations (residual-signed-perm). So the logits change (with every g_f entry equal it would be a symmetry).
/// </summary>
public sealed class TiedResidualRotation : SymmetryFamily
{
    public static readonly TiedResidualRotation Instance = new();

    public override string Name => "invalid:tied-residual-rotation";
    public override string Reference => "GAUGE.md §6.3";
    public override bool Valid => false;
    public override bool Discrete => false;
    public override string Requirement => "RMSNorm and a tied head";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.RmsNorm && t.Tied;
    public override string DimensionFormula(ModelTraits t) => "—";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t)
    {
        var q = SharedTensor.Of(() => GaugeRandom.Orthogonal(t.Hidden, key.For(-1, Name)));
        return new DrawnElement(layer: (_, stored) => new TiedResidualRotationAction(q.Value, stored.Norm1.Gain, stored.Norm2.Gain),
            globals: _ => new TiedResidualRotationAction(q.Value), dispose: q.Dispose);
    }
}

/// <summary>
/// The rotation of one block (with its stored norm gains γ₁, γ₂, for the activation maps) or of the globals. As
/// weights it is residual-rotation's action; as maps on the activations (<see cref="Maps"/>) the same function at
/// 2·T·d² flop per map instead of rotating every reader and writer (≈ 2·d·(12·d² … 61 M weights) flop: on
/// llama-3.2-1b about 250 GFLOP per layer, 9.5 s of each case's 9.6 s on one layer, measured with
/// <c>gaugetorch-bench block</c>; docs/benchmarks.md, issue 12 item 5).
/// </summary>
public sealed class TiedResidualRotationAction(Tensor q, Tensor? gain1 = null, Tensor? gain2 = null) : IActivationMapAction, IGlobalAction
{
    /// <summary>[d, d] orthogonal (not owned).</summary>
    public Tensor Q { get; } = q;
    public string Name => "invalid:tied-residual-rotation";

    public void Apply(LayerView w, ModelTraits t) => new ResidualRotationAction(Q).Apply(w, t);

    /// <summary>
    /// A reader of a norm with gain γ absorbs M = diag(1/γ)·Qᵀ·diag(γ), so it sees h·M = ((h/γ)·Qᵀ)∘γ for the stored
    /// norm's output h; each writer's output (bias included) goes to ·Q. The norms act on the rotated stream as stored.
    /// </summary>
    public BlockMaps Maps(ModelTraits t)
    {
        var g1 = gain1 ?? throw new InvalidOperationException("a globals-only tied-residual-rotation action has no block maps");
        var g2 = gain2 ?? throw new InvalidOperationException("a globals-only tied-residual-rotation action has no block maps");
        ViewOps.RequireNonZero(g1, "the first norm's gain");
        ViewOps.RequireNonZero(g2, "the second norm's gain");
        Func<Tensor, Tensor> Reader(Tensor g) => h =>
        {
            using var scope = NewDisposeScope();
            var gh = g.to_type(h.dtype);
            return (matmul(h / gh, Q.t().to_type(h.dtype)) * gh).MoveToOuterDisposeScope();
        };
        return new BlockMaps
        {
            Reader = Reader(g1),
            Reader2 = Reader(g2),
            Writer = y => matmul(y, Q.to_type(y.dtype)),
        };
    }

    /// <summary>The embedding (and with it the tied head) → ·Q; the final norm is kept.</summary>
    public void Apply(GlobalState g)
    {
        using var map = ResidualMap.Dense(Q);
        g.Embed.RightMultiply(map);
        g.Positions?.RightMultiply(map);
        g.Head?.RightMultiply(map);
    }

    public TiedResidualRotationAction Inverted() => new(Q.t().contiguous(), gain1, gain2);
    ILayerAction ILayerAction.Inverse() => Inverted();
    IGlobalAction IGlobalAction.Inverse() => Inverted();
}
