using System.CommandLine;
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
        var text = new TextInput();
        var transforms = new Option<int>("--transforms") { Description = "Random elements per family, per all-together group and per invalid control.", DefaultValueFactory = _ => 4 };
        var families = new Option<string>("--families") { Description = "all (every family that holds for the model), paper, or a comma list of: " + string.Join(", ", SymmetryCatalog.Names), DefaultValueFactory = _ => "all" };
        var dtype = CliCommon.DTypeOption();
        var seed = new Option<long>("--seed") { Description = "Seed; the same seed samples the same elements.", DefaultValueFactory = _ => 0 };
        var json = JsonOutput.Option();
        var plot = new Option<string?>("--plot") { Description = "Write an SVG histogram of log10 errors (valid vs invalid) to this file." };
        var tolerance = new Option<double?>("--tolerance")
        {
            Description = $"Pass bound for the valid families, in units of ε, the machine epsilon of --dtype (2.2e-16 for float64, 1.2e-7 for float32): " +
                          $"the largest relative error of the row-centred logits allowed is tolerance·ε. Default {InvarianceVerdict.PaperToleranceEps} for families 1–3, " +
                          $"{InvarianceVerdict.ExtendedToleranceEps} for the other families and all together (docs/invariance.md).",
        };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Use at most this many tokens of the text (0 = up to the model's context).", DefaultValueFactory = _ => 0 };
        var noControls = new Option<bool>("--no-controls") { Description = "Skip the invalid controls." };
        var allowNonFinite = CliCommon.AllowNonFiniteOption();
        var cmd = new Command("verify-invariance",
            "Apply random gauge transformations (and invalid controls) and measure the relative error of the row-centred logits on text.\n" +
            "Streams the checkpoint layer by layer, so gpt2-xl fits in float64. Exit 0: all checks pass; 1: a check failed; 2: error.")
        {
            model, transforms, families, dtype, seed, json, plot, tolerance, maxTokens, noControls, allowNonFinite,
        };
        foreach (var o in text.Options) cmd.Options.Add(o);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            int n = r.GetValue(transforms);
            if (n < 1) throw new ArgumentException($"--transforms: {n} is less than 1");
            double? tolOpt = r.GetValue(tolerance);
            if (tolOpt is not null && !(tolOpt > 0 && double.IsFinite(tolOpt.Value))) throw new ArgumentException($"--tolerance: {tolOpt} is not a positive number (units of ε)");
            int maxTok = r.GetValue(maxTokens);
            if (maxTok < 0) throw new ArgumentException($"--max-tokens: {maxTok} is negative (0 means up to the model's context)");
            string? jsonPath = r.GetValue(json), plotPath = r.GetValue(plot);
            using var ck = CliCommon.OpenCheckpoint(r.GetValue(model));
            var fams = CliCommon.Families(r.GetValue(families)!, ck.Traits);
            // Every output is checked before the work: a read-only --json directory used to fail after PASSED.
            OutputPaths.File("--json", jsonPath, ck.InputFiles, stdoutAllowed: true);
            OutputPaths.File("--plot", plotPath, ck.InputFiles);
            var input = text.Resolve(r, ck).Take(maxTok > 0 ? Math.Min(maxTok, ck.Traits.MaxPositions) : ck.Traits.MaxPositions);
            var tokens = input.Ids;
            var cases = InvarianceEvaluator.StandardCases(ck.Traits, fams, n, r.GetValue(seed), !r.GetValue(noControls));
            double eps = InvarianceMetrics.EpsMach(dt);

            InvarianceRunResult? run = null;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask($"{cases.Count} transformed copies, {ck.Traits.Layers} layers and the heads", maxValue: ck.Traits.Layers + 1);
                    run = InvarianceEvaluator.Run(ck, tokens, dt, cases, new Progress<(int Layer, int Layers)>(p => task.Value = p.Layer), r.GetValue(allowNonFinite));
                });
            sw.Stop();

            if (run is null) throw new InvalidOperationException("the evaluation produced no result");
            var groups = InvarianceVerdict.Summarize(run, tolOpt);
            bool allPassed = InvarianceVerdict.AllPassed(groups);
            if (!OutputPaths.IsStdout(jsonPath)) PrintTable(ck, input.Description, dt, eps, groups, run, sw.Elapsed.TotalSeconds);

            if (jsonPath is not null)
            {
                var o = new JsonObject
                {
                    ["model"] = ck.Directory,
                    ["dtype"] = InvarianceVerdict.DTypeName(dt),
                    ["eps_mach"] = eps,
                    ["tokens"] = tokens.Length,
                    ["text"] = input.Description,
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
                JsonOutput.Write(jsonPath, o, ck.InputFiles);
            }
            if (plotPath is not null)
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

    private static void PrintTable(GaugeTorch.Model.Checkpoint ck, string text, torch.ScalarType dt, double eps, IReadOnlyList<InvarianceGroup> groups, InvarianceRunResult run, double seconds)
    {
        bool f32 = dt == torch.ScalarType.Float32;
        static string E(double v) => double.IsNaN(v) ? "NaN" : v.ToString("0.00e+00");
        // Priority 0 columns always show; in a narrow terminal the others go, highest number first (TableFit).
        var columns = new List<FitColumn>
        {
            new("family"), new("valid", "ok?", 3), new("n", Priority: 8, Right: true),
            new("min", Priority: 9, Right: true), new("median", "med", 5, true), new("p90", Priority: 11, Right: true), new("p99", Priority: 10, Right: true),
            new("max", Right: true), new("max / ε", "/ε", 1, true),
        };
        if (f32)
        {
            columns.Add(new FitColumn("top-1 agree", "top-1", 4, true));
            columns.Add(new FitColumn("max KL", "KL", 6, true));
        }
        columns.Add(new FitColumn("bound", Priority: 2));
        columns.Add(new FitColumn("result"));
        var rows = new List<string[]>();
        foreach (var g in groups)
        {
            double inEps = g.Max / eps;
            var row = new List<string>
            {
                Markup.Escape(g.Name), g.Valid ? "yes" : "[red]no[/]", g.Count.ToString(),
                E(g.Min), E(g.Median), E(g.P90), E(g.P99), E(g.Max),
                double.IsNaN(inEps) ? "NaN" : inEps < 1e5 ? inEps.ToString("0.0") : inEps.ToString("0.0e+0"),
            };
            if (f32)
            {
                row.Add(double.IsNaN(g.Top1) ? "NaN" : g.Top1.ToString("P1"));
                row.Add(double.IsNaN(g.MaxKl) ? "NaN" : g.MaxKl.ToString("0.0e+00"));
            }
            row.Add(g.Valid ? $"≤ {g.Bound:0.0e+00}" : $"≥ {g.Bound:0.0e+00}");
            row.Add(g.Passed ? "[green]pass[/]" : "[red]FAIL[/]");
            rows.Add(row.ToArray());
        }
        // The title stays short (it wraps to the table's width); the long facts go on their own line.
        AnsiConsole.MarkupLine(Markup.Escape($"{ck.Directory}: {(f32 ? "float32" : "float64")}, {text}, ε = {eps:0.00e+00}"));
        var (t, dropped) = TableFit.Build(columns, rows, TableFit.ConsoleWidth, "relative error of row-centred logits");
        AnsiConsole.Write(t);
        if (dropped.Count > 0) AnsiConsole.MarkupLine(Markup.Escape($"(columns left out to fit {TableFit.ConsoleWidth} columns: {string.Join(", ", dropped)}; --json has all)"));
        AnsiConsole.MarkupLine($"{(groups.All(g => g.Passed) ? "[green]PASSED[/]" : "[red]FAILED[/]")}: {groups.Count(g => g.Passed)}/{groups.Count} groups; " +
                               $"{seconds:0.0} s (forwards {run.ForwardSeconds:0.0} s, gauge work {run.GaugeSeconds:0.0} s, loading {run.LoadSeconds:0.0} s)");
    }
}
