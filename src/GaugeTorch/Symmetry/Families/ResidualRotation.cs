using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 16 (GAUGE.md §2b; §6.2 family 8), residual rotation without folding (van Nierop; QuaRot's "computational
/// invariance"): the residual stream becomes x·Q for an orthogonal Q (with Q·1 = 1 under LayerNorm). Why it is a
/// symmetry: such a Q preserves the mean and the centred norm of a row (RMSNorm: the norm), so the normalized vector
/// turns with it, norm(xQ) = n(x)·Q∘γ + β′, and each reader absorbs M = diag(γ)⁻¹ Qᵀ diag(γ) (W → M W, β → β M⁻¹),
/// the head included (head → head·Mᵀ with the final norm's γ_f); writers, embeddings and positions go to ·Q. Nothing
/// is folded: the norms keep their gains. With a tied head the embedding would have to be both ·Q and ·Mᵀ, which a
/// generic γ_f forbids, so it needs an untied head (a tied checkpoint can still be folded, untied and rotated:
/// <c>transform --residual-rotation</c>, <see cref="FoldedResidualRotation"/>). Dimension (d−1)(d−2)/2 under
/// LayerNorm, d(d−1)/2 under RMSNorm. Haar-random Q (on the complement of 1 under LayerNorm) (§4); on the streaming
/// evaluator the head change is a d×d map of the final states.
/// </summary>
public sealed class ResidualRotation : SymmetryFamily
{
    public static readonly ResidualRotation Instance = new();

    public override string Name => "residual-rotation";
    public override string Reference => "GAUGE.md §2b family 16";
    public override bool Discrete => false;
    public override string Requirement => "an untied head (lm_head differs from the embedding)";
    public override bool HoldsFor(ModelTraits t) => !t.Tied;
    public override string DimensionFormula(ModelTraits t) => t.Norm == NormKind.LayerNorm ? "(d − 1)(d − 2)/2" : "d(d − 1)/2";
    public override long Dimension(ModelTraits t) =>
        t.Norm == NormKind.LayerNorm ? (long)(t.Hidden - 1) * (t.Hidden - 2) / 2 : (long)t.Hidden * (t.Hidden - 1) / 2;

    /// <summary>The key of the family's draw (distinct from the one <c>transform --residual-rotation</c> has always used).</summary>
    private const string DrawKey = "residual-rotation:unfolded";

    public override FamilyElement Sample(SampleKey key, ModelTraits t)
    {
        var q = SharedTensor.Of(() =>
        {
            var g = key.For(-1, DrawKey);
            return t.Norm == NormKind.LayerNorm ? GaugeRandom.OrthogonalFixingOnes(t.Hidden, g) : GaugeRandom.Orthogonal(t.Hidden, g);
        });
        return new DrawnElement(layer: (_, _) => new ResidualRotationAction(q.Value), globals: _ => new ResidualRotationAction(q.Value), dispose: q.Dispose);
    }

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        // X skew-symmetric, and X·1 = 0 under LayerNorm (the tangent space of the rotations that fix 1).
        var x = SharedTensor.Of(() =>
        {
            var k = randn([t.Hidden, t.Hidden], ScalarType.Float64, generator: key.For(-1, DrawKey + "/generator"));
            var skew = (k - k.t()) / Math.Sqrt(2.0 * t.Hidden);
            if (t.Norm != NormKind.LayerNorm) return skew;
            var p = eye(t.Hidden, dtype: ScalarType.Float64) - full([t.Hidden, t.Hidden], 1.0 / t.Hidden, ScalarType.Float64);
            return matmul(matmul(p, skew), p);
        });
        return new DrawnGenerator(
            layer: (_, at) => ResidualRotationAction.LayerTangent(at, x.Value, t),
            globals: at => ResidualRotationAction.GlobalTangent(at, x.Value),
            exp: tau =>
            {
                var q = SharedTensor.Of(() => linalg.matrix_exp(x.Value * tau));
                return new DrawnElement(layer: (_, _) => new ResidualRotationAction(q.Value), globals: _ => new ResidualRotationAction(q.Value), dispose: q.Dispose);
            },
            dispose: x.Dispose);
    }
}

/// <summary>The residual x → x·Q with every norm kept (readers absorb diag(γ)⁻¹Qᵀdiag(γ)); one action for the blocks and the globals.</summary>
public sealed class ResidualRotationAction(Tensor q) : IResidualMapAction, IGlobalAction
{
    /// <summary>[d, d] orthogonal (not owned).</summary>
    public Tensor Q { get; } = q;
    public string Name => "residual-rotation";

    /// <summary>M·W = diag(1/γ)·Qᵀ·diag(γ)·W for a reader W [d, n] of a norm with gain γ.</summary>
    private static Tensor Reader(Tensor w, Tensor gamma, Tensor q) => gamma.reciprocal().unsqueeze(1) * matmul(q.t(), gamma.unsqueeze(1) * w);

    /// <summary>β·M⁻¹ = ((β/γ)·Q)∘γ.</summary>
    private static Tensor? NormBias(Tensor? beta, Tensor gamma, Tensor q) => beta is null ? null : matmul(beta / gamma, q) * gamma;

    public void Apply(LayerView w, ModelTraits t)
    {
        var g1 = w.Norm1.Gain;
        ViewOps.RequireNonZero(g1, "the first norm's gain");
        ViewOps.SetReader1(w, t, Reader(ViewOps.Reader1(w), g1, Q));
        w.Norm1 = new NormView { Gain = g1, Bias = NormBias(w.Norm1.Bias, g1, Q) };
        var g2 = w.Norm2.Gain;
        ViewOps.RequireNonZero(g2, "the second norm's gain");
        ViewOps.MapReaders2(w, m => Reader(m, g2, Q));
        w.Norm2 = new NormView { Gain = g2, Bias = NormBias(w.Norm2.Bias, g2, Q) };
        w.O = matmul(ViewOps.FlatO(w), Q).reshape(w.O.shape);                   // writers → ·Q
        if (w.OBias is not null) w.OBias = matmul(w.OBias, Q);
        w.Down = matmul(w.Down, Q);
        if (w.DownBias is not null) w.DownBias = matmul(w.DownBias, Q);
    }

    /// <summary>β → β·M⁻¹ for both norms, the gains kept (the other tensors shared).</summary>
    public LayerView OnNorms(LayerView w)
    {
        var v = w.Map(x => x.alias());
        ViewOps.RequireNonZero(w.Norm1.Gain, "the first norm's gain");
        ViewOps.RequireNonZero(w.Norm2.Gain, "the second norm's gain");
        v.Norm1 = new NormView { Gain = v.Norm1.Gain, Bias = NormBias(w.Norm1.Bias, w.Norm1.Gain, Q) };
        v.Norm2 = new NormView { Gain = v.Norm2.Gain, Bias = NormBias(w.Norm2.Bias, w.Norm2.Gain, Q) };
        return v;
    }

    /// <summary>
    /// Readers W → M·W with M = diag(1/γ)·Qᵀ·diag(γ) of their norm: h ↦ h·M = ((h/γ)·Qᵀ)∘γ; writers ·Q. 2·T·d² flop
    /// per map, against about 2·12·d³ for rotating the layer's weights.
    /// </summary>
    public BlockMaps Maps(LayerView w)
    {
        var g1 = w.Norm1.Gain;
        var g2 = w.Norm2.Gain;
        Func<Tensor, Tensor> Reader(Tensor gamma) => h =>
        {
            var g = gamma.to_type(h.dtype);
            return matmul(h / g, Q.t().to_type(h.dtype)) * g;
        };
        return new BlockMaps { Reader = Reader(g1), Reader2 = Reader(g2), Writer = y => matmul(y, Q.to_type(y.dtype)) };
    }

    public void Apply(GlobalState g)
    {
        var head = g.Head ?? throw new ArgumentException("residual-rotation needs an untied head");
        using (var map = ResidualMap.Dense(Q))
        {
            g.Embed.RightMultiply(map);
            g.Positions?.RightMultiply(map);
        }
        var f = g.FinalNorm;
        ViewOps.RequireNonZero(f.Gain, "the final norm's gain");
        // head → head·Mᵀ, Mᵀ = diag(γ_f)·Q·diag(1/γ_f)
        using (var mt = ResidualMap.Dense(f.Gain.unsqueeze(1) * Q * f.Gain.reciprocal().unsqueeze(0))) head.RightMultiply(mt);
        g.SetFinalNorm(f.Gain, NormBias(f.Bias, f.Gain, Q));
    }

    public ResidualRotationAction Inverted() => new(Q.t().contiguous());
    ILayerAction ILayerAction.Inverse() => Inverted();
    IGlobalAction IGlobalAction.Inverse() => Inverted();

    /// <summary>d/dτ of exp(τX) acting on a block: readers −diag(1/γ)·X·diag(γ)·W, norm biases (β/γ)·X∘γ, writers W·X.</summary>
    internal static LayerView LayerTangent(LayerView at, Tensor x, ModelTraits t)
    {
        var v = ViewOps.Zeros(at);
        Tensor R(Tensor w, Tensor gamma) => -(gamma.reciprocal().unsqueeze(1) * matmul(x, gamma.unsqueeze(1) * w));
        Tensor? B(Tensor? beta, Tensor gamma) => beta is null ? null : matmul(beta / gamma, x) * gamma;
        var g1 = at.Norm1.Gain;
        ViewOps.SetReader1(v, t, R(ViewOps.Reader1(at), g1));
        v.Norm1.Bias = B(at.Norm1.Bias, g1);
        var g2 = at.Norm2.Gain;
        v.Up = R(at.Up, g2);
        if (at.Gate is not null) v.Gate = R(at.Gate, g2);
        v.Norm2.Bias = B(at.Norm2.Bias, g2);
        v.O = matmul(ViewOps.FlatO(at), x).reshape(at.O.shape);
        if (at.OBias is not null) v.OBias = matmul(at.OBias, x);
        v.Down = matmul(at.Down, x);
        if (at.DownBias is not null) v.DownBias = matmul(at.DownBias, x);
        return v;
    }

    /// <summary>d/dτ on the globals: embeddings and positions ·X, β_f → (β_f/γ_f)·X∘γ_f, head → head·diag(γ_f)·X·diag(1/γ_f).</summary>
    internal static GlobalView GlobalTangent(GlobalView at, Tensor x)
    {
        var v = ViewOps.Zeros(at);
        var gamma = at.FinalNorm.Gain.to_type(ScalarType.Float64);
        v.Embed = matmul(at.Embed.to_type(ScalarType.Float64), x);
        if (at.Positions is not null) v.Positions = matmul(at.Positions.to_type(ScalarType.Float64), x);
        if (at.FinalNorm.Bias is not null) v.FinalNorm.Bias = matmul(at.FinalNorm.Bias.to_type(ScalarType.Float64) / gamma, x) * gamma;
        var head = ViewOps.Required(at.Head, "untied head").to_type(ScalarType.Float64);
        v.Head = matmul(head, gamma.unsqueeze(1) * x * gamma.reciprocal().unsqueeze(0));
        return v;
    }
}
