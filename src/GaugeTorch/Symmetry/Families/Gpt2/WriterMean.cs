using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 9 (GAUGE.md §2), writer mean: W_O → W_O + a·1ᵀ (a ∈ R^{H·hd}), b_O → b_O + κ·1, and likewise the MLP's down
/// projection (a ∈ R^F) and its bias. Why it is a symmetry: every reader of the residual stream is a LayerNorm, which
/// removes the mean, so the residual's component along 1 is never read, and these add only multiples of 1 to it.
/// It needs LayerNorm and writer biases. Dimension L·(d + F + 2) for GPT-2. Shifts of 0.1 × the RMS of the writer
/// (for a) and of its bias (for κ) (§4).
/// </summary>
public sealed class WriterMean : SymmetryFamily
{
    public static readonly WriterMean Instance = new();

    public override string Name => "writer-mean";
    public override string Reference => "GAUGE.md §2 family 9";
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm and biases on the attention output and MLP down projections";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm && t.OutBias && t.MlpBias;
    public override string DimensionFormula(ModelTraits t) => t.QueryHeads * t.HeadDim == t.Hidden ? "L·(d + F + 2)" : "L·(H·hd + F + 2)";
    public override long Dimension(ModelTraits t) => (long)t.Layers * ((long)t.QueryHeads * t.HeadDim + t.Inner + 2);

    private static WriterMeanAction Draw(Generator g, LayerView w, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        // The four RMS once per stored view (LayerStats), then Shift's draws exactly as GaugeRandom.Shift makes them.
        var oBias = ViewOps.Required(w.OBias, "output bias");
        var downBias = ViewOps.Required(w.DownBias, "down bias");
        var rms = LayerStats.Get(w, "writer-mean", [w.O, w.Down, oBias, downBias],
            () => [GaugeRandom.Rms(w.O), GaugeRandom.Rms(w.Down), GaugeRandom.Rms(oBias), GaugeRandom.Rms(downBias)]);
        var aAttn = GaugeRandom.Shift([(long)t.QueryHeads * t.HeadDim], rms[0], g).MoveToOuterDisposeScope();
        var aMlp = GaugeRandom.Shift([t.Inner], rms[1], g).MoveToOuterDisposeScope();
        double k1 = GaugeRandom.Shift([], rms[2], g).item<double>();
        double k2 = GaugeRandom.Shift([], rms[3], g).item<double>();
        return new WriterMeanAction(aAttn, k1, aMlp, k2);
    }

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(layer: (l, w) => Draw(key.For(l, Name), w, t));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t) => new DrawnGenerator(
        layer: (l, at) =>
        {
            var a = Draw(key.For(l, Name + "/generator"), at, t);
            var v = ViewOps.Zeros(at);
            v.O = (a.AAttn.reshape(t.QueryHeads, t.HeadDim, 1) * ones(t.Hidden, ScalarType.Float64)).contiguous();
            v.OBias = full(t.Hidden, a.KAttn, ScalarType.Float64);
            v.Down = (a.AMlp.unsqueeze(1) * ones(t.Hidden, ScalarType.Float64)).contiguous();
            v.DownBias = full(t.Hidden, a.KMlp, ScalarType.Float64);
            return v;
        },
        globals: null,
        exp: tau => new DrawnElement(layer: (l, w) => Draw(key.For(l, Name + "/generator"), w, t).Scaled(tau)));
}

public sealed class WriterMeanAction(Tensor aAttn, double kAttn, Tensor aMlp, double kMlp) : ILayerAction
{
    public Tensor AAttn { get; } = aAttn;
    public double KAttn { get; } = kAttn;
    public Tensor AMlp { get; } = aMlp;
    public double KMlp { get; } = kMlp;
    public string Name => "writer-mean";

    public void Apply(LayerView w, ModelTraits t)
    {
        w.O = w.O + AAttn.reshape(t.QueryHeads, t.HeadDim, 1);
        w.OBias = ViewOps.Required(w.OBias, "output bias") + KAttn;
        w.Down = w.Down + AMlp.unsqueeze(1);
        w.DownBias = ViewOps.Required(w.DownBias, "down bias") + KMlp;
    }

    internal WriterMeanAction Scaled(double tau) => new(AAttn * tau, KAttn * tau, AMlp * tau, KMlp * tau);

    public ILayerAction Inverse() => new WriterMeanAction(-AAttn, -KAttn, -AMlp, -KMlp);
}
