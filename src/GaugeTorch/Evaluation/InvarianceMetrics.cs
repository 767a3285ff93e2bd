using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Evaluation;

/// <summary>The comparison of two logit matrices [T, V] (GAUGE.md §4), computed in float64.</summary>
public sealed record LogitComparison(double RelativeError, double Top1Agreement, double MaxKl);

public static class InvarianceMetrics
{
    public static double EpsMach(ScalarType t) => t == ScalarType.Float64 ? Math.Pow(2, -52) : Math.Pow(2, -23);

    /// <summary>ε_rel = ‖Y′ − Y‖_F / (‖Y‖_F + ε_mach), with Y the row-centred logits.</summary>
    public static double RelativeError(Tensor reference, Tensor other, double epsMach)
    {
        using var scope = NewDisposeScope();
        var y = GaugeTorch.Model.Forward.RowCentre(reference.to_type(ScalarType.Float64));
        var y2 = GaugeTorch.Model.Forward.RowCentre(other.to_type(ScalarType.Float64));
        double num = (y2 - y).norm().item<double>();
        double den = y.norm().item<double>() + epsMach;
        return num / den;
    }

    public static LogitComparison Compare(Tensor reference, Tensor other, double epsMach)
    {
        using var scope = NewDisposeScope();
        double rel = RelativeError(reference, other, epsMach);
        var a = reference.to_type(ScalarType.Float64);
        var b = other.to_type(ScalarType.Float64);
        double top1 = (a.argmax(-1) == b.argmax(-1)).to_type(ScalarType.Float64).mean().item<double>();
        var la = a.log_softmax(-1);
        var lb = b.log_softmax(-1);
        double kl = (la.exp() * (la - lb)).sum(-1).max().item<double>();
        return new LogitComparison(rel, top1, Math.Max(0, kl));
    }

    /// <summary>Quantile by linear interpolation between order statistics (q in [0, 1]).</summary>
    public static double Quantile(IReadOnlyList<double> values, double q)
    {
        if (values.Count == 0) return double.NaN;
        var s = values.OrderBy(v => v).ToArray();
        double pos = q * (s.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return s[lo] + (s[hi] - s[lo]) * (pos - lo);
    }
}
