using System.CommandLine;
using System.Globalization;
using GaugeTorch.Alignment;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

/// <summary><c>gaugetorch merge A B [C …] --out DIR [--weights w1,w2,…] [--no-align]</c> (docs/merging.md).</summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var models = new Argument<string[]>("MODELS") { Description = "Two or more model directories of the same architecture and shapes; every model is aligned to the first.", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out") { Description = "Output directory (a standard checkpoint in the first model's layout and dtype; must not exist or be empty).", Required = true };
        var weights = new Option<string?>("--weights") { Description = "Comma-separated non-negative weights, one per model (normalized to sum 1). Default: equal." };
        var noAlign = new Option<bool>("--no-align") { Description = "Average the weights as stored (naive merge), without aligning." };
        var allowNonFinite = CliCommon.AllowNonFiniteOption("Merge");
        var cmd = new Command("merge", "Align every model to the first (data-free, complete gauge group) and average their weights into a standard checkpoint. See docs/merging.md.")
            { models, output, weights, noAlign, allowNonFinite };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var paths = r.GetValue(models) ?? [];
            if (paths.Length < 2) throw new ArgumentException($"merge needs at least two models (got {paths.Length})");
            double[]? w = r.GetValue(weights) is { } text ? ParseWeights(text) : null;
            var cks = new List<GaugeTorch.Model.Checkpoint>();
            try
            {
                foreach (var p in paths) cks.Add(CliCommon.OpenCheckpoint(p));
                string dir = r.GetValue(output)!;
                var inputs = cks.SelectMany(c => c.InputFiles).ToList();
                foreach (var c in cks) OutputPaths.Directory("--out", dir, c.Directory, inputs);
                if (w is not null)
                    try { CheckpointAlignment.MergeWeights(w, cks.Count); }
                    catch (ArgumentException e) { throw new ArgumentException($"--weights: {e.Message}"); }
                var report = CheckpointAlignment.Merge(cks, w, !r.GetValue(noAlign), dir, r.GetValue(allowNonFinite));
                for (int k = 1; k < cks.Count; k++)
                    if (report.Alignments[k] is { } a)
                        AnsiConsole.MarkupLine($"{Markup.Escape(cks[k].Directory)}: aligned to the first, distance {a.TotalBefore / a.TotalReference:E2} → {a.TotalAfter / a.TotalReference:E2} (relative); function change {a.FunctionError:E2}");
                AnsiConsole.MarkupLine($"merged {cks.Count} models with weights {string.Join(", ", report.Weights.Select(x => x.ToString("0.####", CultureInfo.InvariantCulture)))}{(report.Aligned ? ", aligned" : ", not aligned (--no-align)")}{(report.Untied ? ", untied head" : "")}; stored as {CliCommon.DTypeName(report.StorageDType)} (rounding changes the logits by {report.StorageLogitsError:E2})");
                Console.Error.WriteLine($"wrote {dir}");
                return ExitCodes.Ok;
            }
            finally
            {
                foreach (var c in cks) c.Dispose();
            }
        }));
        return cmd;
    }

    private static double[] ParseWeights(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var w = new double[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!double.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out w[i]))
                throw new ArgumentException($"--weights: '{parts[i]}' is not a number");
        try
        {
            CheckpointAlignment.MergeWeights(w, w.Length);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--weights: {e.Message}");
        }
        return w;
    }
}
