using System.CommandLine;
using System.Text.Json.Nodes;
using GaugeTorch.Alignment;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

/// <summary><c>gaugetorch align A B --out DIR [--json FILE] [--untie] [--permutations-only]</c> (docs/merging.md).</summary>
public static class AlignCommand
{
    public static Command Create()
    {
        var a = new Argument<string>("A") { Description = "The model to align to (directory, or .safetensors with config.json beside it)." };
        var b = new Argument<string>("B") { Description = "The model to move (same architecture and shapes as A)." };
        var output = new Option<string>("--out") { Description = "Output directory for B aligned to A (B's layout and dtype; must not exist or be empty; its parent must exist).", Required = true };
        var json = JsonOutput.Option("the alignment report");
        var untie = new Option<bool>("--untie") { Description = "Untie both heads first (exact) and also align the residual rotation (the output is untied)." };
        var perms = new Option<bool>("--permutations-only") { Description = "Only permutations (Git Re-Basin weight matching on raw weights), for comparison; see docs/merging.md." };
        var allowNonFinite = CliCommon.AllowNonFiniteOption("Align");
        var cmd = new Command("align", "Move B by an element of its gauge group (data-free, float64) so that its weights come as close to A's as possible; B's function is unchanged (checked in float64). Reports the distance before and after, per layer. See docs/merging.md.")
            { a, b, output, json, untie, perms, allowNonFinite };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            using var ca = CliCommon.OpenCheckpoint(r.GetValue(a));
            using var cb = CliCommon.OpenCheckpoint(r.GetValue(b));
            string dir = r.GetValue(output)!;
            var inputs = ca.InputFiles.Concat(cb.InputFiles).ToList();
            OutputPaths.Directory("--out", dir, cb.Directory, inputs);
            OutputPaths.Directory("--out", dir, ca.Directory, inputs);
            string? jsonPath = r.GetValue(json);
            OutputPaths.File("--json", jsonPath, inputs, stdoutAllowed: true);
            var options = new AlignmentOptions { Untie = r.GetValue(untie), Mode = r.GetValue(perms) ? AlignmentMode.PermutationsOnly : AlignmentMode.Full };
            var report = CheckpointAlignment.Align(ca, cb, dir, options, r.GetValue(allowNonFinite));
            if (jsonPath is not null)
            {
                var node = ToJson(report);
                node["a"] = ca.Directory;
                node["b"] = cb.Directory;
                node["out"] = Path.GetFullPath(dir);
                JsonOutput.Write(jsonPath, node, inputs);
                if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;
            }
            Render(report, "distance ‖B − A‖_F before and after alignment");
            Console.Error.WriteLine($"wrote {dir}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    internal static string ModeName(AlignmentMode m) => m == AlignmentMode.Full ? "full" : "permutations-only";

    internal static void Render(AlignCheckpointReport r, string title)
    {
        var t = new Table().Title(title).AddColumn("part").AddColumn(new TableColumn("before").RightAligned()).AddColumn(new TableColumn("after").RightAligned())
            .AddColumn(new TableColumn("relative before").RightAligned()).AddColumn(new TableColumn("relative after").RightAligned());
        foreach (var p in r.Parts) t.AddRow(p.Part, $"{p.Before:E3}", $"{p.After:E3}", $"{p.RelativeBefore:E2}", $"{p.RelativeAfter:E2}");
        t.AddRow("[bold]total[/]", $"{r.TotalBefore:E3}", $"{r.TotalAfter:E3}", $"{r.TotalBefore / r.TotalReference:E2}", $"{r.TotalAfter / r.TotalReference:E2}");
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine($"mode {ModeName(r.Mode)}{(r.Untied ? ", untied head (residual rotation aligned)" : $", tied head (residual sign {r.ResidualSign:+0;-0})")}, {r.Rounds} round(s) of coordinate descent");
        AnsiConsole.MarkupLine($"function: float64 logits of the aligned B differ from B's by {r.FunctionError:E2} (relative, row-centred, {r.FunctionTokens} probe tokens; limit {r.FunctionTolerance:E0}); stored as {CliCommon.DTypeName(r.StorageDType)}: {r.StorageLogitsError:E2}");
    }

    internal static JsonObject ToJson(AlignCheckpointReport r) => new()
    {
        ["mode"] = ModeName(r.Mode),
        ["untied"] = r.Untied,
        ["rounds"] = r.Rounds,
        ["residual_sign"] = r.ResidualSign,
        ["distance"] = new JsonObject
        {
            ["before"] = r.TotalBefore, ["after"] = r.TotalAfter, ["reference_norm"] = r.TotalReference,
            ["relative_before"] = r.TotalBefore / r.TotalReference, ["relative_after"] = r.TotalAfter / r.TotalReference,
        },
        ["parts"] = new JsonArray(r.Parts.Select(p => (JsonNode)new JsonObject
        {
            ["part"] = p.Part, ["before"] = p.Before, ["after"] = p.After, ["reference_norm"] = p.ReferenceNorm,
            ["relative_before"] = p.RelativeBefore, ["relative_after"] = p.RelativeAfter,
        }).ToArray()),
        ["function_error"] = r.FunctionError,
        ["function_tolerance"] = r.FunctionTolerance,
        ["function_tokens"] = r.FunctionTokens,
        ["storage_dtype"] = CliCommon.DTypeName(r.StorageDType),
        ["storage_logits_error"] = r.StorageLogitsError,
    };
}
