using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using GaugeTorch.Evaluation;
using GaugeTorch.Symmetry;
using Spectre.Console;
using TorchSharp;

namespace GaugeTorch.Cli.Commands;

public static class VerifyInvarianceCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var text = new Option<string?>("--text") { Description = "Text to tokenize (default: a built-in paragraph)." };
        var textFile = new Option<string?>("--text-file") { Description = "Read the text from this file." };
        var tokenList = new Option<string?>("--tokens") { Description = "Comma-separated token ids instead of text (for models with a small vocabulary)." };
        var transforms = new Option<int>("--transforms") { Description = "Random elements per family, per all-together group and per invalid control.", DefaultValueFactory = _ => 4 };
        var families = new Option<string>("--families") { Description = "all (every family that holds for the model), paper, or a comma list of: " + string.Join(", ", SymmetryCatalog.Names), DefaultValueFactory = _ => "all" };
        var dtype = CliCommon.DTypeOption();
        var seed = new Option<long>("--seed") { Description = "Seed; the same seed samples the same elements.", DefaultValueFactory = _ => 0 };
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file." };
        var plot = new Option<string?>("--plot") { Description = "Write an SVG histogram of log10 errors (valid vs invalid) to this file." };
        var tolerance = new Option<double?>("--tolerance") { Description = $"Pass bound for valid families, in ε of the compute dtype (default {InvarianceVerdict.PaperToleranceEps} ε for families 1–3, {InvarianceVerdict.ExtendedToleranceEps} ε for the others and all together)." };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Truncate the tokenized text to this many tokens (0 = the model's context).", DefaultValueFactory = _ => 0 };
        var noControls = new Option<bool>("--no-controls") { Description = "Skip the invalid controls." };
        var cmd = new Command("verify-invariance",
            "Apply random gauge transformations (and invalid controls) and measure the relative error of the row-centred logits on text.\n" +
            "Streams the checkpoint layer by layer, so gpt2-xl fits in float64. Exit 0: all checks pass; 1: a check failed; 2: error.")
        {
            model, text, textFile, tokenList, transforms, families, dtype, seed, json, plot, tolerance, maxTokens, noControls,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            int n = r.GetValue(transforms);
            if (n < 1) throw new ArgumentException("--transforms must be at least 1");
            double? tolOpt = r.GetValue(tolerance);
            if (tolOpt is <= 0) throw new ArgumentException("--tolerance must be positive");
            string? textValue = r.GetValue(text);
            string? file = r.GetValue(textFile);
            if (textValue is not null && file is not null) throw new ArgumentException("give --text or --text-file, not both");
            if (file is not null)
            {
                if (!File.Exists(file)) throw new FileNotFoundException($"--text-file: {file} not found");
                textValue = File.ReadAllText(file);
            }
            using var ck = CliCommon.OpenCheckpoint(r.GetValue(model));
            var fams = CliCommon.Families(r.GetValue(families)!, ck.Traits);
            var tokens = CliCommon.Tokens(textValue, r.GetValue(tokenList), ck.Traits.Vocab);
            int cap = r.GetValue(maxTokens) > 0 ? Math.Min(r.GetValue(maxTokens), ck.Traits.MaxPositions) : ck.Traits.MaxPositions;
            if (tokens.Length > cap) tokens = tokens[..cap];
            var cases = InvarianceEvaluator.StandardCases(ck.Traits, fams, n, r.GetValue(seed), !r.GetValue(noControls));
            double eps = InvarianceMetrics.EpsMach(dt);

            InvarianceRunResult? run = null;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            if (Console.IsErrorRedirected)
                run = InvarianceEvaluator.Run(ck, tokens, dt, cases);
            else
                CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask($"{cases.Count} transformed copies, {ck.Traits.Layers} layers", maxValue: ck.Traits.Layers);
                    run = InvarianceEvaluator.Run(ck, tokens, dt, cases, new Progress<(int Layer, int Layers)>(p => task.Value = p.Layer));
                });
            sw.Stop();

            if (run is null) throw new InvalidOperationException("the evaluation produced no result");
            var groups = InvarianceVerdict.Summarize(run, tolOpt);
            bool allPassed = InvarianceVerdict.AllPassed(groups);
            PrintTable(ck, tokens.Length, dt, eps, groups, run, sw.Elapsed.TotalSeconds);

            if (r.GetValue(json) is string jsonPath)
            {
                var o = new JsonObject
                {
                    ["model"] = ck.Directory,
                    ["dtype"] = dt == torch.ScalarType.Float64 ? "float64" : "float32",
                    ["eps_mach"] = eps,
                    ["tokens"] = tokens.Length,
                    ["seed"] = r.GetValue(seed),
                    ["transforms_per_group"] = n,
                    ["families"] = new JsonArray(groups.Select(g => (JsonNode)new JsonObject
                    {
                        ["name"] = g.Name, ["valid"] = g.Valid, ["count"] = g.Count, ["min"] = g.Min, ["max"] = g.Max, ["median"] = g.Median,
                        ["p90"] = g.P90, ["p99"] = g.P99, ["max_eps"] = g.Max / eps, ["bound"] = g.Bound, ["passed"] = g.Passed,
                        ["top1_agreement_min"] = g.Top1, ["max_kl"] = g.MaxKl,
                    }).ToArray()),
                    ["errors"] = new JsonArray(run.Cases.Select(c => (JsonNode)new JsonObject { ["group"] = c.Group, ["valid"] = c.Valid, ["error"] = c.RelativeError }).ToArray()),
                    ["timing"] = new JsonObject
                    {
                        ["total_s"] = sw.Elapsed.TotalSeconds, ["gauge_s"] = run.GaugeSeconds, ["forward_s"] = run.ForwardSeconds, ["load_s"] = run.LoadSeconds,
                        ["gauge_over_forward"] = run.GaugeSeconds / Math.Max(1e-9, run.ForwardSeconds),
                    },
                    ["passed"] = allPassed,
                };
                AtomicFile.WriteAllText(jsonPath, o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }), ck.InputFiles);
            }
            if (r.GetValue(plot) is string plotPath)
            {
                string title = $"gauge invariance of {Path.GetFileName(ck.Directory.TrimEnd('/'))} ({(dt == torch.ScalarType.Float64 ? "float64" : "float32")}, {tokens.Length} tokens)";
                AtomicFile.WriteAllText(plotPath, SvgHistogram.Render(title,
                    run.Cases.Where(c => c.Valid).Select(c => c.RelativeError).ToList(),
                    run.Cases.Where(c => !c.Valid).Select(c => c.RelativeError).ToList(), eps), ck.InputFiles);
            }
            return allPassed ? ExitCodes.Ok : ExitCodes.CheckFailed;
        }));
        return cmd;
    }

    private static void PrintTable(GaugeTorch.Model.Checkpoint ck, int tokens, torch.ScalarType dt, double eps, IReadOnlyList<InvarianceGroup> groups, InvarianceRunResult run, double seconds)
    {
        bool f32 = dt == torch.ScalarType.Float32;
        var t = new Table().Title($"relative error of row-centred logits — {Markup.Escape(ck.Directory)}, {(f32 ? "float32" : "float64")}, {tokens} tokens, ε = {eps:G3}");
        t.AddColumn("family");
        t.AddColumn("valid");
        t.AddColumn(new TableColumn("n").RightAligned());
        foreach (var h in new[] { "min", "median", "p90", "p99", "max", "max / ε" }) t.AddColumn(new TableColumn(h).RightAligned());
        if (f32)
        {
            t.AddColumn(new TableColumn("top-1 agree").RightAligned());
            t.AddColumn(new TableColumn("max KL").RightAligned());
        }
        t.AddColumn("bound");
        t.AddColumn("result");
        foreach (var g in groups)
        {
            var row = new List<string>
            {
                Markup.Escape(g.Name), g.Valid ? "yes" : "[red]no[/]", g.Count.ToString(),
                g.Min.ToString("0.00e+00"), g.Median.ToString("0.00e+00"), g.P90.ToString("0.00e+00"), g.P99.ToString("0.00e+00"), g.Max.ToString("0.00e+00"),
                (g.Max / eps) < 1e5 ? (g.Max / eps).ToString("0.0") : (g.Max / eps).ToString("0.0e+0"),
            };
            if (f32)
            {
                row.Add(g.Top1.ToString("P1"));
                row.Add(g.MaxKl.ToString("0.0e+00"));
            }
            row.Add(g.Valid ? $"≤ {g.Bound:0.0e+00}" : $"≥ {g.Bound:0.0e+00}");
            row.Add(g.Passed ? "[green]pass[/]" : "[red]FAIL[/]");
            t.AddRow(row.ToArray());
        }
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine($"{(groups.All(g => g.Passed) ? "[green]PASSED[/]" : "[red]FAILED[/]")}: {groups.Count(g => g.Passed)}/{groups.Count} groups; " +
                               $"{seconds:0.0} s (forwards {run.ForwardSeconds:0.0} s, gauge work {run.GaugeSeconds:0.0} s, loading {run.LoadSeconds:0.0} s)");
    }
}
