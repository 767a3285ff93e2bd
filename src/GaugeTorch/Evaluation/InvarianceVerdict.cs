using static TorchSharp.torch;

namespace GaugeTorch.Evaluation;

/// <summary>The summary of one group of cases (one family, all families together, or one control) and its verdict.</summary>
public sealed record InvarianceGroup(
    string Name, bool Valid, int Count, double Min, double Median, double P90, double P99, double Max,
    double Bound, bool Passed, double Top1, double MaxKl)
{
    /// <summary>The largest error in units of the compute dtype's ε.</summary>
    public double MaxEps(double eps) => Max / eps;
}

/// <summary>
/// The pass/fail rules of verify-invariance, with their default tolerances (GAUGE.md §4): a valid group passes when
/// its largest relative error is at most its bound (in ε of the compute dtype), an invalid control when its smallest
/// error reaches <see cref="InvalidThreshold"/>.
/// </summary>
public static class InvarianceVerdict
{
    /// <summary>Default tolerance (in ε of the compute dtype) for the papers' families 1–3.</summary>
    public const double PaperToleranceEps = 100;

    /// <summary>
    /// Default tolerance (in ε) for every other family and for all families together. Chosen from measurements
    /// (docs/invariance.md): the worst valid error measured was 40.5 ε (all families together on gpt2-xl shapes,
    /// 48 layers); rounding grows with depth, so the bound leaves a 25× margin while any real error (≥ 1e-3) is
    /// ten orders of magnitude above it.
    /// </summary>
    public const double ExtendedToleranceEps = 1000;

    /// <summary>An invalid control passes when every sample changes the logits by at least this much (relative).</summary>
    public const double InvalidThreshold = 1e-3;

    /// <summary>The default bound of a valid group, in ε.</summary>
    public static double DefaultToleranceEps(bool paper) => paper ? PaperToleranceEps : ExtendedToleranceEps;

    /// <summary>
    /// Groups the cases (in their order of first appearance) and judges each. <paramref name="toleranceEps"/>
    /// overrides every valid group's bound; it must be positive.
    /// </summary>
    public static IReadOnlyList<InvarianceGroup> Summarize(InvarianceRunResult run, double? toleranceEps = null)
    {
        if (toleranceEps is { } tol && !(tol > 0)) throw new ArgumentException($"the tolerance must be positive (got {tol})");
        double eps = InvarianceMetrics.EpsMach(run.ComputeType);
        var groups = new List<InvarianceGroup>();
        foreach (var g in run.Cases.GroupBy(c => c.Group))
        {
            var errs = g.Select(c => c.RelativeError).ToList();
            bool valid = g.First().Valid;
            double bound = valid ? (toleranceEps ?? DefaultToleranceEps(g.First().Paper)) * eps : InvalidThreshold;
            // NaN counts as a failure on both sides (Max/Min would skip it or keep it depending on position).
            double max = errs.Any(double.IsNaN) ? double.NaN : errs.Max();
            bool passed = valid ? max <= bound : errs.All(e => e >= InvalidThreshold);
            groups.Add(new InvarianceGroup(g.Key, valid, errs.Count, errs.Min(), InvarianceMetrics.Quantile(errs, 0.5), InvarianceMetrics.Quantile(errs, 0.9),
                InvarianceMetrics.Quantile(errs, 0.99), max, bound, passed, g.Min(c => c.Top1Agreement), g.Max(c => c.MaxKl)));
        }
        return groups;
    }

    /// <summary>True when every group passed.</summary>
    public static bool AllPassed(IReadOnlyList<InvarianceGroup> groups) => groups.All(g => g.Passed);

    /// <summary>"float64" or "float32".</summary>
    public static string DTypeName(ScalarType t) => t == ScalarType.Float64 ? "float64" : "float32";
}
