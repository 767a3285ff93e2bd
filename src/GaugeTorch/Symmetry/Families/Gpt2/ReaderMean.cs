using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 8 (GAUGE.md §2), reader mean: W → W + (1/γ)·cᵀ with b → b − (β·(1/γ))·cᵀ for every reader of a LayerNorm
/// (c ∈ R^{(H+2G)·hd} for Q | K | V, R^F for the MLP's up projection and again for a gate). Why it is a symmetry:
/// LayerNorm's normalized vector n has zero mean, so (n∘γ + β)·(1/γ) = β·(1/γ) is the same for every input, and the
/// bias takes it away. It needs γ without zeros (a layer whose γ has a zero gets c = 0) and reader biases.
/// Dimension L·(3d + F) for GPT-2. Drawn so that (1/γ)cᵀ is 0.1 × the reader's RMS (§4).
/// </summary>
public sealed class ReaderMean : SymmetryFamily
{
    public static readonly ReaderMean Instance = new();

    public override string Name => "reader-mean";
    public override string Reference => "GAUGE.md §2 family 8";
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm and biases on the q, k, v and MLP input projections";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm && t.QkvBias && t.MlpBias;

    public override string DimensionFormula(ModelTraits t) =>
        t.KvHeads == t.QueryHeads && t.QueryHeads * t.HeadDim == t.Hidden && t.Mlp == MlpKind.GeluNew ? "L·(3d + F)"
        : t.Mlp == MlpKind.SwiGlu ? "L·((H + 2G)·hd + 2F)" : "L·((H + 2G)·hd + F)";

    public override long Dimension(ModelTraits t) =>
        (long)t.Layers * ((long)(t.QueryHeads + 2 * t.KvHeads) * t.HeadDim + (long)t.Inner * (t.Mlp == MlpKind.SwiGlu ? 2 : 1));

    /// <summary>c with 0.1·rms(W)/rms(1/γ) per entry, or 0 when γ has a zero (then the family cannot act).</summary>
    private static Tensor Draw(Generator g, double scale, long n) => randn([n], ScalarType.Float64, generator: g) * scale;

    /// <summary>0.1·rms(W)/rms(1/γ), or 0 when γ has a zero; computed once per stored view (<see cref="LayerStats"/>).</summary>
    private static double Scale(LayerView w, string purpose, object?[] inputs, Func<Tensor> weight, Tensor gamma) =>
        LayerStats.Get(w, "reader-mean:" + purpose, inputs, () =>
        {
            using var scope = NewDisposeScope();
            double invG = gamma.reciprocal().square().mean().sqrt().item<double>();
            double rms = weight().square().mean().sqrt().item<double>();
            bool usable = gamma.abs().min().item<double>() > 0;
            return [usable ? 0.1 * rms / invG : 0.0];
        })[0];

    private static (Tensor C1, Tensor C2, Tensor? C3) DrawAll(Generator g, LayerView w, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        long n1 = (long)(t.QueryHeads + 2 * t.KvHeads) * t.HeadDim;
        double s1 = Scale(w, "1", [w.Q, w.K, w.V, w.Norm1.Gain], () => ViewOps.Reader1(w), w.Norm1.Gain);
        double s2 = Scale(w, "2", [w.Up, w.Norm2.Gain], () => w.Up, w.Norm2.Gain);
        double s3 = w.Gate is null ? 0 : Scale(w, "3", [w.Gate, w.Norm2.Gain], () => w.Gate, w.Norm2.Gain);
        var c1 = Draw(g, s1, n1).MoveToOuterDisposeScope();
        var c2 = Draw(g, s2, t.Inner).MoveToOuterDisposeScope();
        var c3 = w.Gate is null ? null : Draw(g, s3, t.Inner).MoveToOuterDisposeScope();
        return (c1, c2, c3);
    }

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, w) =>
    {
        var (c1, c2, c3) = DrawAll(key.For(l, Name), w, t);
        return new ReaderMeanAction(c1, c2, c3);
    });

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t) => new DrawnGenerator(
        layer: (l, at) =>
        {
            var (c1, c2, c3) = DrawAll(key.For(l, Name + "/generator"), at, t);
            var v = ViewOps.Zeros(at);
            var inv1 = at.Norm1.Gain.reciprocal();
            ViewOps.SetReader1(v, t, outer(inv1, c1));
            ViewOps.SetReader1Bias(v, t, -(ViewOps.Required(at.Norm1.Bias, "norm bias").dot(inv1) * c1));
            var inv2 = at.Norm2.Gain.reciprocal();
            var k2 = ViewOps.Required(at.Norm2.Bias, "norm bias").dot(inv2);
            v.Up = outer(inv2, c2);
            v.UpBias = -(k2 * c2);
            if (c3 is not null)
            {
                v.Gate = outer(inv2, c3);
                v.GateBias = -(k2 * c3);
            }
            return v;
        },
        globals: null,
        exp: tau => new DrawnElement(layer: (l, w) =>
        {
            var (c1, c2, c3) = DrawAll(key.For(l, Name + "/generator"), w, t);
            return new ReaderMeanAction(c1 * tau, c2 * tau, c3 is null ? null : c3 * tau);
        }));
}

public sealed class ReaderMeanAction(Tensor c1, Tensor c2, Tensor? c3) : ILayerAction
{
    /// <summary>[(H+2G)·hd] for Q | K | V.</summary>
    public Tensor C1 { get; } = c1;
    /// <summary>[F] for the up projection.</summary>
    public Tensor C2 { get; } = c2;
    /// <summary>[F] for a SwiGLU gate, or null.</summary>
    public Tensor? C3 { get; } = c3;
    public string Name => "reader-mean";

    public void Apply(LayerView w, ModelTraits t)
    {
        var inv1 = w.Norm1.Gain.reciprocal();
        var b1 = ViewOps.Required(ViewOps.Reader1Bias(w), "q, k, v biases");
        ViewOps.SetReader1(w, t, ViewOps.Reader1(w) + outer(inv1, C1));
        ViewOps.SetReader1Bias(w, t, b1 - ViewOps.Required(w.Norm1.Bias, "norm bias").dot(inv1) * C1);
        var inv2 = w.Norm2.Gain.reciprocal();
        var k2 = ViewOps.Required(w.Norm2.Bias, "norm bias").dot(inv2);
        w.Up = w.Up + outer(inv2, C2);
        w.UpBias = ViewOps.Required(w.UpBias, "up bias") - k2 * C2;
        if (C3 is not null)
        {
            w.Gate = ViewOps.Required(w.Gate, "gate") + outer(inv2, C3);
            w.GateBias = ViewOps.Required(w.GateBias, "gate bias") - k2 * C3;
        }
    }

    public ILayerAction Inverse() => new ReaderMeanAction(-C1, -C2, C3 is null ? null : -C3);
}
