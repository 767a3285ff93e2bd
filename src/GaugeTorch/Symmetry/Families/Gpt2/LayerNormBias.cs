using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 7 (GAUGE.md §2), LayerNorm bias ↔ reader bias, for both norms of a block: β → β + t, b → b − t·W for every
/// reader. Why it is a symmetry: the reader computes (n∘γ + β + t)·W + b − t·W = (n∘γ + β)·W + b. It needs biases on
/// the readers. Dimension 2d per layer. Shifts of 0.1 × the norm bias's RMS (§4).
/// </summary>
public sealed class LayerNormBias : SymmetryFamily
{
    public static readonly LayerNormBias Instance = new();

    public override string Name => "ln-bias";
    public override string Reference => "GAUGE.md §2 family 7";
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm and biases on the q, k, v and MLP input projections";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm && t.QkvBias && t.MlpBias;
    public override string DimensionFormula(ModelTraits t) => "L·2d";
    public override long Dimension(ModelTraits t) => 2L * t.Layers * t.Hidden;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, w) =>
    {
        var g = key.For(l, Name);
        var t1 = GaugeRandom.Shift([t.Hidden], ViewOps.Required(w.Norm1.Bias, "norm bias"), g);
        var t2 = GaugeRandom.Shift([t.Hidden], ViewOps.Required(w.Norm2.Bias, "norm bias"), g);
        return new NormBiasAction(t1, t2);
    });

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        (Tensor, Tensor) X(int l, LayerView at)
        {
            var g = key.For(l, Name + "/generator");
            return (GaugeRandom.Shift([t.Hidden], ViewOps.Required(at.Norm1.Bias, "norm bias"), g),
                    GaugeRandom.Shift([t.Hidden], ViewOps.Required(at.Norm2.Bias, "norm bias"), g));
        }
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                var (t1, t2) = X(l, at);
                var v = ViewOps.Zeros(at);
                v.Norm1.Bias = t1;
                ViewOps.SetReader1Bias(v, t, -matmul(t1, ViewOps.Reader1(at)));
                v.Norm2.Bias = t2;
                v.UpBias = -matmul(t2, at.Up);
                if (at.Gate is not null) v.GateBias = -matmul(t2, at.Gate);
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, w) =>
            {
                var (t1, t2) = X(l, w);
                return new NormBiasAction(t1 * tau, t2 * tau);
            }));
    }
}

public sealed class NormBiasAction(Tensor t1, Tensor t2) : ILayerAction
{
    public Tensor T1 { get; } = t1;
    public Tensor T2 { get; } = t2;
    public string Name => "ln-bias";

    public void Apply(LayerView w, ModelTraits t)
    {
        w.Norm1 = new NormView { Gain = w.Norm1.Gain, Bias = ViewOps.Required(w.Norm1.Bias, "norm bias") + T1 };
        // One product with Q | K | V as one matrix, as on a fused c_attn.
        ViewOps.SetReader1Bias(w, t, ViewOps.Required(ViewOps.Reader1Bias(w), "q, k, v biases") - matmul(T1, ViewOps.Reader1(w)));
        w.Norm2 = new NormView { Gain = w.Norm2.Gain, Bias = ViewOps.Required(w.Norm2.Bias, "norm bias") + T2 };
        ViewOps.MapReaderBiases2(w, (m, b) => b - matmul(T2, m));
    }

    public ILayerAction Inverse() => new NormBiasAction(-T1, -T2);
}
