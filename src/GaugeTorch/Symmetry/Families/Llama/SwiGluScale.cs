using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// LLaMA family, GAUGE.md §6.2 family 4, SwiGLU unit scale: up[u] → s_u·up[u] (its bias too, with mlp_bias),
/// down[:, u] → down[:, u]/s_u, for any s without zeros (signs included). Why it is a symmetry: unit u writes
/// silu(x·gate_u)·(x·up_u)·down_u, which is linear in the up factor, so s_u cancels against 1/s_u. silu is not
/// homogeneous, so the gate has no such freedom (and GELU models none at all). Dimension L·F. Gains with |s| ∈ [0.5, 2]
/// log-uniform and random signs (§4).
/// </summary>
public sealed class SwiGluScale : SymmetryFamily
{
    public static readonly SwiGluScale Instance = new();

    public override string Name => "mlp-scale";
    public override string Reference => "GAUGE.md §6.2 family 4";
    public override bool Discrete => false;
    public override string Requirement => "a gated SwiGLU MLP";
    public override bool HoldsFor(ModelTraits t) => t.Mlp == MlpKind.SwiGlu;
    public override string DimensionFormula(ModelTraits t) => "L·F";
    public override long Dimension(ModelTraits t) => (long)t.Layers * t.Inner;

    public override FamilyElement Sample(SampleKey key, ModelTraits t) =>
        new DrawnElement(layer: (l, _) => new SwiGluScaleAction(GaugeRandom.Gains(t.Inner, key.For(l, Name))));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t)
    {
        Tensor X(int l) => randn([t.Inner], ScalarType.Float64, generator: key.For(l, Name + "/generator"));
        return new DrawnGenerator(
            layer: (l, at) =>
            {
                var x = X(l);
                var v = ViewOps.Zeros(at);
                v.Up = at.Up * x;
                if (at.UpBias is not null) v.UpBias = at.UpBias * x;
                v.Down = -(at.Down * x.unsqueeze(1));
                return v;
            },
            globals: null,
            exp: tau => new DrawnElement(layer: (l, _) => new SwiGluScaleAction((X(l) * tau).exp())));
    }
}

/// <summary>Up columns (and bias) ∘ s, down rows ÷ s.</summary>
public sealed class SwiGluScaleAction(Tensor s) : ILayerAction
{
    /// <summary>[F] scales.</summary>
    public Tensor S { get; } = s;
    public string Name => "mlp-scale";

    public void Apply(LayerView w, ModelTraits t)
    {
        w.Up = w.Up * S;                                                         // [d, F]
        if (w.UpBias is not null) w.UpBias = w.UpBias * S;
        w.Down = w.Down / S.unsqueeze(1);                                        // [F, d]
    }

    public ILayerAction Inverse() => new SwiGluScaleAction(S.reciprocal());
}
