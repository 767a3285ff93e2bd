using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Invalid control (GAUGE.md §3): one random orthogonal Q (d×d) applied to every weight of the model as stored:
/// the residual stream is rotated (embeddings, positions, writers → ·Q; readers → Qᵀ·; an untied head → ·Q) but the
/// LayerNorm parameters are left as they are. LayerNorm's mean removal and a non-uniform γ do not commute with a
/// general rotation, so this is not a symmetry (it becomes one only with Q·1 = 1 and the gains absorbed, see
/// <see cref="ResidualRotation"/>). On the streaming evaluator the rotation of the embedding is applied to the
/// gathered rows and, for the head, to the final normalized states (n·(E Q)ᵀ = (n Qᵀ)·Eᵀ), never to a [V, d] matrix.
/// </summary>
public sealed class GlobalOrthogonal : SymmetryFamily
{
    public static readonly GlobalOrthogonal Instance = new();

    public override string Name => "invalid:global-orthogonal";
    public override string Reference => "GAUGE.md §3";
    public override bool Valid => false;
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm;
    public override string DimensionFormula(ModelTraits t) => "—";
    public override long Dimension(ModelTraits t) => 0;

    public override FamilyElement Sample(SampleKey key, ModelTraits t)
    {
        // Keyed "global-orthogonal" as every earlier release drew it, so that a seed gives the same control.
        var q = SharedTensor.Of(() => GaugeRandom.Orthogonal(t.Hidden, key.For(-1, "global-orthogonal")));
        return new DrawnElement(layer: (_, _) => new GlobalOrthogonalAction(q.Value), globals: _ => new GlobalOrthogonalAction(q.Value), dispose: q.Dispose);
    }
}

public sealed class GlobalOrthogonalAction(Tensor q) : IActivationMapAction, IGlobalAction
{
    /// <summary>[d, d] orthogonal (not owned).</summary>
    public Tensor Q { get; } = q;
    public string Name => "invalid:global-orthogonal";

    public void Apply(LayerView w, ModelTraits t)
    {
        var qt = Q.t();
        ViewOps.SetReader1(w, t, matmul(qt, ViewOps.Reader1(w)));
        ViewOps.MapReaders2(w, m => matmul(qt, m));
        w.O = matmul(ViewOps.FlatO(w), Q).reshape(w.O.shape);
        if (w.OBias is not null) w.OBias = matmul(w.OBias, Q);
        w.Down = matmul(w.Down, Q);
        if (w.DownBias is not null) w.DownBias = matmul(w.DownBias, Q);
    }

    /// <summary>
    /// The same rotation on the activations: readers see h·Qᵀ, each writer's output (bias included) is ·Q; the norms
    /// act on the rotated stream as stored. 2·T·d² flop per map instead of rotating 12·d² weights (2·12·d³ flop).
    /// </summary>
    public BlockMaps Maps(ModelTraits t) => new()
    {
        Reader = h => matmul(h, Q.t().to_type(h.dtype)),
        Writer = y => matmul(y, Q.to_type(y.dtype)),
    };

    public void Apply(GlobalState g)
    {
        using var map = ResidualMap.Dense(Q);
        g.Embed.RightMultiply(map);
        g.Positions?.RightMultiply(map);
        g.Head?.RightMultiply(map);
    }

    public GlobalOrthogonalAction Inverted() => new(Q.t().contiguous());
    ILayerAction ILayerAction.Inverse() => Inverted();
    IGlobalAction IGlobalAction.Inverse() => Inverted();
}
