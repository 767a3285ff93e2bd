using System.Globalization;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Alignment;

/// <summary>The outcome of aligning one checkpoint to another and writing it.</summary>
public sealed record AlignCheckpointReport(
    IReadOnlyList<PartDistance> Parts, double TotalBefore, double TotalAfter, double TotalReference, int Rounds, AlignmentMode Mode, bool Untied,
    double ResidualSign, double FunctionError, double FunctionTolerance, int FunctionTokens, DType StorageDType, double StorageLogitsError);

/// <summary>The outcome of a merge.</summary>
public sealed record MergeReport(IReadOnlyList<double> Weights, bool Aligned, bool Untied, IReadOnlyList<AlignCheckpointReport?> Alignments,
    DType StorageDType, double StorageLogitsError);

/// <summary>Naive and aligned loss curves between two checkpoints.</summary>
public sealed record InterpolationReport(LossCurve Naive, LossCurve? Aligned, AlignCheckpointReport? Alignment, int Tokens);

/// <summary>
/// align, merge and interpolate on checkpoints (docs/merging.md): load in float64 (weights must be finite), check that
/// the models match, align (<see cref="GaugeAlignment"/>), check that the aligned model computes B's function
/// (float64 logits within <see cref="ModelEvaluation.SameFunctionTolerance"/>, else an error), and write standard
/// checkpoints atomically.
/// </summary>
public static class CheckpointAlignment
{
    /// <summary>Loads both, aligns B to A and checks B's function; the caller disposes the result.</summary>
    public static (AlignmentResult Result, AlignCheckpointReport Report) AlignLoaded(Checkpoint a, Checkpoint b, AlignmentOptions options, bool allowNonFinite = false)
    {
        ModelCompatibility.RequireSameShapes([a, b]);
        using var ma = ModelExport.Load(a, allowNonFinite);
        using var mb = ModelExport.Load(b, allowNonFinite);
        var r = GaugeAlignment.Align(ma, mb, options);
        try
        {
            var tokens = ModelEvaluation.ProbeTokens(r.Aligned.Traits);
            double fn = ModelEvaluation.RelativeLogitsError(r.Original, r.Aligned, tokens);
            if (!(fn <= ModelEvaluation.SameFunctionTolerance))
                throw new InvalidOperationException($"{b.Directory}: the aligned model's float64 logits differ from the input's by {fn:E2} (relative), above {ModelEvaluation.SameFunctionTolerance:E0}; nothing written");
            var storage = b.StorageDType.ToScalarType();
            using var stored = ModelEvaluation.AsStored(r.Aligned, storage);
            double rounding = ModelEvaluation.RelativeLogitsError(r.Original, stored, tokens);
            var report = new AlignCheckpointReport(r.Parts, r.TotalBefore, r.TotalAfter, r.TotalReference, r.Rounds, r.Mode, r.Untied, r.ResidualSign,
                fn, ModelEvaluation.SameFunctionTolerance, tokens.Length, b.StorageDType, rounding);
            return (r, report);
        }
        catch
        {
            r.Dispose();
            throw;
        }
    }

    /// <summary>Writes B aligned to A into <paramref name="outDir"/> (B's storage dtype, B's layout).</summary>
    public static AlignCheckpointReport Align(Checkpoint a, Checkpoint b, string outDir, AlignmentOptions options, bool allowNonFinite = false)
    {
        var (r, report) = AlignLoaded(a, b, options, allowNonFinite);
        using (r)
            ModelExport.Write(b, r.Aligned, outDir, b.StorageDType, Metadata(options, "align"));
        return report;
    }

    private static Dictionary<string, string> Metadata(AlignmentOptions o, string what) => new()
    {
        ["gaugetorch_transform"] = what,
        ["gaugetorch_alignment"] = o.Mode == AlignmentMode.Full ? "full" : "permutations",
        ["gaugetorch_untie"] = o.Untie ? "true" : "false",
    };

    /// <summary>Normalized merge weights: one per model, finite and non-negative with a positive sum; null means equal.</summary>
    public static double[] MergeWeights(IReadOnlyList<double>? weights, int models)
    {
        if (weights is null) return Enumerable.Repeat(1.0 / models, models).ToArray();
        if (weights.Count != models) throw new ArgumentException($"{weights.Count} weight(s) for {models} models (give one per model)");
        foreach (var w in weights)
            if (!double.IsFinite(w) || w < 0) throw new ArgumentException($"merge weight {w.ToString(CultureInfo.InvariantCulture)} is not a finite non-negative number");
        double s = weights.Sum();
        if (!(s > 0)) throw new ArgumentException("merge weights sum to 0");
        return weights.Select(w => w / s).ToArray();
    }

    /// <summary>Aligns every model to the first (unless <paramref name="align"/> is false), averages with the weights and writes the first model's layout and dtype.</summary>
    public static MergeReport Merge(IReadOnlyList<Checkpoint> models, IReadOnlyList<double>? weights, bool align, string outDir, bool allowNonFinite = false)
    {
        if (models.Count < 2) throw new ArgumentException("merge needs at least two models");
        ModelCompatibility.RequireSameShapes(models);
        var w = MergeWeights(weights, models.Count);
        bool untie = models.Any(m => !m.Tied);
        var options = new AlignmentOptions { Untie = untie };
        var members = new List<ModelWeights>();
        var reports = new List<AlignCheckpointReport?> { null };
        try
        {
            using (var first = ModelExport.Load(models[0], allowNonFinite)) members.Add(GaugeAlignment.Copy64(first, untie));
            for (int k = 1; k < models.Count; k++)
            {
                if (align)
                {
                    var (r, report) = AlignLoaded(models[0], models[k], options, allowNonFinite);
                    members.Add(GaugeAlignment.Copy64(r.Aligned, untie));
                    r.Dispose();
                    reports.Add(report);
                }
                else
                {
                    using var m = ModelExport.Load(models[k], allowNonFinite);
                    members.Add(GaugeAlignment.Copy64(m, untie));
                    reports.Add(null);
                }
            }
            using var merged = ModelEvaluation.WeightedAverage(members, w);
            var storage = models[0].StorageDType;
            using var stored = ModelEvaluation.AsStored(merged, storage.ToScalarType());
            double rounding = ModelEvaluation.RelativeLogitsError(merged, stored, ModelEvaluation.ProbeTokens(merged.Traits));
            var meta = Metadata(options, "merge");
            meta["gaugetorch_merge_weights"] = string.Join(",", w.Select(x => x.ToString("R", CultureInfo.InvariantCulture)));
            meta["gaugetorch_alignment"] = align ? "full" : "none";
            ModelExport.Write(models[0], merged, outDir, storage, meta);
            return new MergeReport(w, align, untie, reports, storage, rounding);
        }
        finally
        {
            foreach (var m in members) m.Dispose();
        }
    }

    /// <summary>
    /// Cross-entropy along (1−λ)·A + λ·B on <paramref name="tokens"/>: naive, and after aligning B to A with
    /// <paramref name="align"/> (null: naive only).
    /// </summary>
    public static InterpolationReport Interpolate(Checkpoint a, Checkpoint b, int[] tokens, int steps, AlignmentOptions? align,
        bool allowNonFinite = false, IProgress<int>? progress = null)
    {
        ModelCompatibility.RequireSameShapes([a, b]);
        var lambdas = LossInterpolation.Lambdas(steps);
        bool untie = !a.Tied || !b.Tied || align?.Untie == true;
        LossCurve naive;
        using (var ma = ModelExport.Load(a, allowNonFinite))
        using (var mb = ModelExport.Load(b, allowNonFinite))
        using (var ua = GaugeAlignment.Copy64(ma, untie))
        using (var ub = GaugeAlignment.Copy64(mb, untie))
            naive = LossInterpolation.Curve(ua, ub, tokens, lambdas, progress);
        if (align is null) return new InterpolationReport(naive, null, null, tokens.Length);
        var (r, report) = AlignLoaded(a, b, align, allowNonFinite);
        using (r)
        {
            int offset = lambdas.Length;
            var aligned = LossInterpolation.Curve(r.Reference, r.Aligned, tokens, lambdas, progress is null ? null : new Offset(progress, offset));
            return new InterpolationReport(naive, aligned, report, tokens.Length);
        }
    }

    private sealed class Offset(IProgress<int> inner, int offset) : IProgress<int>
    {
        public void Report(int value) => inner.Report(offset + value);
    }
}
