using System.CommandLine;
using System.Text.Json.Nodes;
using GaugeTorch.Alignment;
using GaugeTorch.Evaluation;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

/// <summary><c>gaugetorch interpolate A B [--text | --text-file F | --tokens] [--steps N] [--no-align] [--json FILE] [--plot FILE.svg]</c>.</summary>
public static class InterpolateCommand
{
    public static Command Create()
    {
        var a = new Argument<string>("A") { Description = "First model (λ = 0)." };
        var b = new Argument<string>("B") { Description = "Second model (λ = 1), same architecture and shapes." };
        var text = new TextInput();
        var steps = new Option<int>("--steps") { Description = "Number of intervals of λ in [0, 1] (N + 1 points).", DefaultValueFactory = _ => 10 };
        var noAlign = new Option<bool>("--no-align") { Description = "Only the naive curve (no alignment)." };
        var perms = new Option<bool>("--permutations-only") { Description = "Align by permutations only (Git Re-Basin weight matching), for comparison." };
        var untie = new Option<bool>("--untie") { Description = "Untie both heads first (exact) so the alignment includes the residual rotation." };
        var json = JsonOutput.Option("both curves and barriers");
        var plot = new Option<string?>("--plot") { Description = "Write an SVG plot of both curves to this file." };
        var allowNonFinite = CliCommon.AllowNonFiniteOption("Interpolate");
        var cmd = new Command("interpolate", "Cross-entropy on a text along (1−λ)·A + λ·B, naive and after data-free alignment of B to A, with the loss barrier max_λ [L(λ) − ((1−λ)L(0) + λL(1))]. See docs/merging.md.")
            { a, b, steps, noAlign, perms, untie, json, plot, allowNonFinite };
        foreach (var o in text.Options) cmd.Add(o);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            using var ca = CliCommon.OpenCheckpoint(r.GetValue(a));
            using var cb = CliCommon.OpenCheckpoint(r.GetValue(b));
            int n = r.GetValue(steps);
            if (n < 1 || n > 1000) throw new ArgumentException($"--steps: {n} is not between 1 and 1000");
            var inputs = ca.InputFiles.Concat(cb.InputFiles).ToList();
            string? jsonPath = r.GetValue(json), plotPath = r.GetValue(plot);
            OutputPaths.File("--json", jsonPath, inputs, stdoutAllowed: true);
            OutputPaths.File("--plot", plotPath, inputs);
            if (plotPath is not null && jsonPath is not null && !OutputPaths.IsStdout(jsonPath) && Path.GetFullPath(plotPath) == Path.GetFullPath(jsonPath))
                throw new ArgumentException("--plot and --json name the same file");
            var tokens = text.Resolve(r, ca);
            if (tokens.Ids.Length < 2) throw new ArgumentException("the text must have at least two tokens");
            AlignmentOptions? options = r.GetValue(noAlign) ? null
                : new AlignmentOptions { Untie = r.GetValue(untie), Mode = r.GetValue(perms) ? AlignmentMode.PermutationsOnly : AlignmentMode.Full };
            InterpolationReport report = null!;
            if (Console.IsErrorRedirected)
                report = CheckpointAlignment.Interpolate(ca, cb, tokens.Ids, n, options, r.GetValue(allowNonFinite));
            else
                CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask("loss along the path", maxValue: (n + 1) * (options is null ? 1 : 2));
                    report = CheckpointAlignment.Interpolate(ca, cb, tokens.Ids, n, options, r.GetValue(allowNonFinite), new SyncProgress<int>(i => task.Value = i));
                    task.Value = task.MaxValue;
                });
            string alignedLabel = options is null ? "" : $"aligned ({AlignCommand.ModeName(options.Mode)}{(report.Alignment!.Untied ? ", untied" : "")})";
            if (plotPath is not null)
            {
                var series = new List<SvgCurves.Series> { new($"naive (barrier {report.Naive.Barrier:0.####})", report.Naive.Lambdas, report.Naive.Losses, "#e34a33") };
                if (report.Aligned is { } al) series.Add(new($"{alignedLabel} (barrier {al.Barrier:0.####})", al.Lambdas, al.Losses, "#2b8cbe"));
                AtomicFile.WriteAllText(plotPath, SvgCurves.Render($"cross-entropy along (1−λ)·A + λ·B ({tokens.Description})", "λ", "cross-entropy (nats/token)", series), inputs);
            }
            if (jsonPath is not null)
            {
                var node = new JsonObject
                {
                    ["a"] = ca.Directory, ["b"] = cb.Directory, ["text"] = tokens.Description, ["tokens"] = report.Tokens, ["steps"] = n,
                    ["naive"] = Curve(report.Naive),
                };
                if (report.Aligned is { } al)
                {
                    var c = Curve(al);
                    c["mode"] = AlignCommand.ModeName(options!.Mode);
                    c["untied"] = report.Alignment!.Untied;
                    c["alignment"] = AlignCommand.ToJson(report.Alignment);
                    node["aligned"] = c;
                }
                JsonOutput.Write(jsonPath, node, inputs);
                if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;
            }
            var t = new Table().Title($"cross-entropy (nats/token) on {Markup.Escape(tokens.Description)}").AddColumn(new TableColumn("λ").RightAligned()).AddColumn(new TableColumn("naive").RightAligned());
            if (report.Aligned is not null) t.AddColumn(new TableColumn(Markup.Escape(alignedLabel)).RightAligned());
            for (int i = 0; i < report.Naive.Lambdas.Count; i++)
            {
                var row = new List<string> { $"{report.Naive.Lambdas[i]:0.###}", $"{report.Naive.Losses[i]:F4}" };
                if (report.Aligned is { } al) row.Add($"{al.Losses[i]:F4}");
                t.AddRow(row.ToArray());
            }
            AnsiConsole.Write(t);
            AnsiConsole.MarkupLine($"barrier: naive {report.Naive.Barrier:F4} (at λ = {report.Naive.BarrierLambda:0.###})" +
                (report.Aligned is { } x ? $", {Markup.Escape(alignedLabel)} {x.Barrier:F4} (at λ = {x.BarrierLambda:0.###})" : ""));
            if (report.Alignment is { } ar)
                AnsiConsole.MarkupLine($"alignment: distance {ar.TotalBefore / ar.TotalReference:E2} → {ar.TotalAfter / ar.TotalReference:E2} (relative); function change {ar.FunctionError:E2}");
            if (plotPath is not null) Console.Error.WriteLine($"wrote {plotPath}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static JsonObject Curve(LossCurve c) => new()
    {
        ["barrier"] = c.Barrier,
        ["barrier_lambda"] = c.BarrierLambda,
        ["curve"] = new JsonArray(c.Lambdas.Zip(c.Losses).Select(p => (JsonNode)new JsonObject { ["lambda"] = p.First, ["loss"] = p.Second }).ToArray()),
    };
}
