using System.CommandLine;
using System.Text.Json.Nodes;
using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

public static class CompareCommand
{
    public static Command Create()
    {
        var a = new Argument<string>("A") { Description = "First model directory (or .safetensors file with config.json beside it)." };
        var b = new Argument<string>("B") { Description = "Second model directory." };
        var json = JsonOutput.Option("the comparison");
        var tol = new Option<double?>("--tolerance") { Description = $"Largest relative Frobenius distance ‖A − B‖ / ‖A‖ between the canonical forms still called equivalent (a plain ratio, not in ε). Default: derived from the measured rounding of both inputs ({CanonicalCompare.RoundingSafety:G} × the sum; at least {CanonicalCompare.Float64WeightFloor:G}), stated in the output." };
        var cmd = new Command("compare", "Decide whether two checkpoints are the same function up to gauge: canonicalize both (float64, layer by layer) and report distances per layer and head, with gauge-invariant head fingerprints, beside the change of the row-centred logits on the built-in text. Exit 0: equivalent; 1: not; 2: error.")
            { a, b, json, tol };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            bool llamaA = CanonicalizeCheckpointLlama.IsLlamaFamily(CanonicalizeCheckpointLlama.ModelType(r.GetValue(a)));
            bool llamaB = CanonicalizeCheckpointLlama.IsLlamaFamily(CanonicalizeCheckpointLlama.ModelType(r.GetValue(b)));
            if (llamaA != llamaB) throw new ArgumentException($"{r.GetValue(a)} and {r.GetValue(b)} have different architectures (one is GPT-2, the other of the LLaMA family): not comparable");
            if (llamaA)
            {
                double? t = r.GetValue(tol);
                if (t is double tv && !(tv >= 0)) throw new ArgumentException($"--tolerance: {tv} is not a non-negative number");
                return CanonicalizeCheckpointLlama.Compare(r.GetValue(a)!, r.GetValue(b)!, r.GetValue(json), t);
            }
            using var ca = CliCommon.OpenModel(r.GetValue(a));
            using var cb = CliCommon.OpenModel(r.GetValue(b));
            string? jsonPath = r.GetValue(json);
            OutputPaths.File("--json", jsonPath, ca.InputFiles.Concat(cb.InputFiles), stdoutAllowed: true);
            double? given = r.GetValue(tol);
            if (given is double g && !(g >= 0)) throw new ArgumentException($"--tolerance: {g} is not a non-negative number");
            ComparisonResult res = null!;
            int total = ca.Config.NLayer + 1;
            var options = new CompareOptions { Tolerance = given };
            CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask("canonicalizing and comparing", maxValue: total);
                    res = CanonicalCompare.Compare(ca, cb, options with { Progress = SyncProgress.Create(p => task.Value = p.Done) });
                    task.Value = total;
                });
            if (PhaseClock.Enabled) Console.Error.WriteLine(PhaseClock.Report());
            double tolerance = res.Tolerance;
            bool equivalent = res.Equivalent;
            if (jsonPath is not null)
            {
                JsonOutput.Write(jsonPath, ToJson(ca, cb, res, tolerance, equivalent), ca.InputFiles.Concat(cb.InputFiles));
                if (OutputPaths.IsStdout(jsonPath)) return equivalent ? ExitCodes.Ok : ExitCodes.CheckFailed;
            }
            var lt = new Table().Title("distance per layer (relative Frobenius, canonical forms)").AddColumn("layer")
                .AddColumn(new TableColumn("largest").RightAligned()).AddColumn(new TableColumn("worst head").RightAligned())
                .AddColumn(new TableColumn("MLP").RightAligned()).AddColumn(new TableColumn("attn b_O").RightAligned()).AddColumn(new TableColumn("mlp bias").RightAligned());
            foreach (var l in res.Layers)
                lt.AddRow(l.Layer.ToString(), Fmt(l.Distance, tolerance), $"{l.MaxHeadDistance:E2}", $"{l.MlpDistance:E2}", $"{l.AttnBiasDistance:E2}", $"{l.MlpBiasDistance:E2}");
            foreach (var (k, v) in res.Globals) lt.AddRow(Markup.Escape(k), Fmt(v, tolerance), "", "", "", "");
            AnsiConsole.Write(lt);
            var ht = new Table().Title("heads: distance and gauge-invariant fingerprints (top singular values of QK and VO composites)")
                .AddColumn("layer").AddColumn("head A→B").AddColumn(new TableColumn("QK dist").RightAligned()).AddColumn(new TableColumn("VO dist").RightAligned())
                .AddColumn("σ_QK (A)").AddColumn("σ_VO (A)");
            foreach (var l in res.Layers)
                foreach (var h in l.Heads)
                    ht.AddRow(l.Layer.ToString(), $"{h.HeadA}→{h.HeadB}", Fmt(h.QkDistance, tolerance), Fmt(h.VoDistance, tolerance), Top(h.A.QkSingularValues), Top(h.A.VoSingularValues));
            AnsiConsole.Write(ht);
            int ties = res.ReportA.NearTiedHeads + res.ReportB.NearTiedHeads + res.ReportA.NearTiedUnits + res.ReportB.NearTiedUnits + res.ReportA.NearDegenerate + res.ReportB.NearDegenerate;
            if (ties > 0) AnsiConsole.MarkupLine($"[yellow]note:[/] {ties} near-ties/near-degeneracies (A and B together); heads are matched by fingerprint, adjacent tied MLP units by the better of both orders.");
            string where = Markup.Escape(res.LargestWhere);
            AnsiConsole.MarkupLine($"weights: largest distance {res.Largest:E2} ({where}); tolerance {tolerance:E2} = {Markup.Escape(res.ToleranceBasis)}");
            AnsiConsole.MarkupLine(res.FunctionDistance is double fd
                ? $"function: row-centred logits differ by {fd:E2} on {res.FunctionTokens} tokens of the built-in text; tolerance {res.FunctionTolerance:E2} = {Markup.Escape(res.FunctionToleranceBasis)}"
                : "function: not compared");
            if (equivalent) AnsiConsole.MarkupLine($"[green]equivalent[/] up to gauge ({res.HeadForm} form): weights and function within their tolerances");
            else AnsiConsole.MarkupLine($"[red]not equivalent[/] ({res.HeadForm} form): {(res.WeightsEquivalent ? "" : $"largest weight distance {res.Largest:E2} at {where} exceeds {tolerance:E2}")}{(res.WeightsEquivalent || res.FunctionEquivalent ? "" : "; ")}{(res.FunctionEquivalent ? "" : $"function distance {res.FunctionDistance:E2} exceeds {res.FunctionTolerance:E2}")}");
            return equivalent ? ExitCodes.Ok : ExitCodes.CheckFailed;
        }));
        return cmd;
    }

    private static string Fmt(double v, double tol) => v > tol ? $"[red]{v:E2}[/]" : $"{v:E2}";

    private static string Top(double[] s) => string.Join(" ", s.Take(3).Select(x => x.ToString("G3")));

    private static JsonArray Arr(IEnumerable<double> xs) => new(xs.Select(x => (JsonNode)x).ToArray());

    private static JsonObject ToJson(Gpt2Checkpoint a, Gpt2Checkpoint b, ComparisonResult r, double tol, bool eq) => new()
    {
        ["a"] = a.Directory,
        ["b"] = b.Directory,
        ["tolerance"] = tol,
        ["tolerance_basis"] = r.ToleranceBasis,
        ["rounding_a"] = r.RoundingA,
        ["rounding_b"] = r.RoundingB,
        ["equivalent"] = eq,
        ["weights_equivalent"] = r.WeightsEquivalent,
        ["function_equivalent"] = r.FunctionEquivalent,
        ["head_form"] = r.HeadForm,
        ["largest"] = r.Largest,
        ["largest_where"] = r.LargestWhere,
        ["function_tokens"] = r.FunctionTokens,
        ["function_distance"] = r.FunctionDistance,
        ["function_tolerance"] = r.FunctionTolerance,
        ["function_tolerance_basis"] = r.FunctionToleranceBasis,
        ["function_rounding_a"] = r.FunctionRoundingA,
        ["function_rounding_b"] = r.FunctionRoundingB,
        ["globals"] = new JsonObject(r.Globals.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
        ["near_tied_heads"] = new JsonObject { ["a"] = r.ReportA.NearTiedHeads, ["b"] = r.ReportB.NearTiedHeads },
        ["near_tied_units"] = new JsonObject { ["a"] = r.ReportA.NearTiedUnits, ["b"] = r.ReportB.NearTiedUnits },
        ["near_degenerate_singular_values"] = new JsonObject { ["a"] = r.ReportA.NearDegenerate, ["b"] = r.ReportB.NearDegenerate },
        ["layers"] = new JsonArray(r.Layers.Select(l => (JsonNode)new JsonObject
        {
            ["layer"] = l.Layer,
            ["distance"] = l.Distance,
            ["max_head_distance"] = l.MaxHeadDistance,
            ["mlp_distance"] = l.MlpDistance,
            ["attn_bias_distance"] = l.AttnBiasDistance,
            ["mlp_bias_distance"] = l.MlpBiasDistance,
            ["heads"] = new JsonArray(l.Heads.Select(h => (JsonNode)new JsonObject
            {
                ["position"] = h.Position,
                ["head_a"] = h.HeadA,
                ["head_b"] = h.HeadB,
                ["distance"] = h.Distance,
                ["qk_distance"] = h.QkDistance,
                ["vo_distance"] = h.VoDistance,
                ["qk_singular_values_a"] = Arr(h.A.QkSingularValues),
                ["vo_singular_values_a"] = Arr(h.A.VoSingularValues),
                ["qk_singular_values_b"] = Arr(h.B.QkSingularValues),
                ["vo_singular_values_b"] = Arr(h.B.VoSingularValues),
            }).ToArray()),
        }).ToArray()),
    };
}
