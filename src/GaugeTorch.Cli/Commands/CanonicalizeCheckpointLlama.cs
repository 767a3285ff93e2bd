using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using GaugeTorch.Canonical.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

/// <summary>canonicalize-checkpoint and compare on Llama / Qwen2 / Mistral checkpoints (the LLaMA-family canonical form of docs/canonical-form.md).</summary>
internal static class CanonicalizeCheckpointLlama
{
    /// <summary>The config's model_type of MODEL without opening its weights ("gpt2" for the built-in model, a missing config or no model_type).</summary>
    public static string ModelType(string? path)
    {
        if (path is null) return "gpt2";
        string full = Path.GetFullPath(path);
        string dir = Directory.Exists(full) ? full : Path.GetDirectoryName(full)!;
        string config = Path.Combine(dir, "config.json");
        if (!File.Exists(config)) return "gpt2";   // the GPT-2 path reports the missing file as before
        try
        {
            var o = Checkpoint.ReadConfig(config);
            return o["model_type"] is JsonValue v && v.TryGetValue(out string? s) ? s : "gpt2";
        }
        catch (ModelFormatException)
        {
            return "gpt2";                          // unreadable config: the GPT-2 path reports it as before
        }
    }

    public static bool IsLlamaFamily(string modelType) => modelType is "llama" or "qwen2" or "mistral";

    /// <summary>Token ids for the check: the given text (the directory's tokenizer.json), or the built-in text when none is given.</summary>
    private static TokenText Tokens(ParseResult r, TextInput text, Checkpoint ck)
    {
        bool anyGiven = r.GetValue(text.Text) is not null || r.GetValue(text.TextFile) is not null || r.GetValue(text.Tokens) is not null;
        if (anyGiven || File.Exists(Path.Combine(ck.Directory, GaugeTorch.Text.HfTokenizer.FileName))) return text.Resolve(r, ck);
        // No tokenizer and no text: the built-in paragraph through GPT-2's BPE, ids folded into the vocabulary.
        var t = text.Resolve(r, ck.Traits.Vocab);
        return t with { Description = t.Description + " (GPT-2 BPE ids; the model directory has no tokenizer.json)" };
    }

    public static int Canonicalize(ParseResult r, string? modelPath, string formName, string dtypeName, string outDir, string? jsonPath, int? nCheck, TextInput text)
    {
        if (formName.Trim().ToLowerInvariant() != "full")
            throw new ArgumentException($"--form: '{formName}' is not available for llama, qwen2 and mistral checkpoints (only 'full')");
        bool f64 = CliCommon.ParseDType(dtypeName, [DType.F64], same: true) is not null;
        if (nCheck < 0) throw new ArgumentException($"--check-tokens: {nCheck} is negative");
        using var ck = CliCommon.OpenCheckpoint(modelPath);
        OutputPaths.Directory("--out", outDir, ck.Directory, ck.InputFiles);
        OutputPaths.File("--json", jsonPath, ck.InputFiles, stdoutAllowed: true);
        var input = nCheck == 0 ? new TokenText([], "no tokens") : Tokens(r, text, ck).Take(Math.Min(ck.Traits.MaxPositions, nCheck ?? int.MaxValue));
        var options = new LlamaCanonicalizeOptions { Float64Output = f64, Tokens = input.Ids };
        var sw = Stopwatch.StartNew();
        LlamaCanonicalReport report = null!;
        int layers = ck.Traits.Layers;
        if (Console.IsErrorRedirected) report = LlamaCanonicalCheckpoint.Write(ck, outDir, options);
        else
            CliCommon.Progress().Start(ctx =>
            {
                var task = ctx.AddTask($"canonicalizing {layers} layers", maxValue: layers + 1);
                report = LlamaCanonicalCheckpoint.Write(ck, outDir, options with { Progress = SyncProgress.Create(p => task.Value = p.Done) });
                task.Value = layers + 1;
            });
        double seconds = sw.Elapsed.TotalSeconds;
        if (PhaseClock.Enabled) Console.Error.WriteLine(PhaseClock.Report());
        var outType = f64 ? DType.F64 : ck.StorageDType;
        double eps = 2 * LlamaCanonicalPrecision.UnitRoundoff(outType);
        var fr = report.Frame;
        var o = new JsonObject
        {
            ["model"] = ck.Directory,
            ["out"] = Path.GetFullPath(outDir),
            ["form"] = "full",
            ["architecture"] = ck.Traits.Architecture,
            ["dtype"] = outType.ToString(),
            ["tool_version"] = ToolInfo.Version,
            ["tokens"] = input.Ids.Length,
            ["logits_error_storage"] = report.StorageLogitsError,
            ["logits_error_storage_eps"] = report.StorageLogitsError / eps,
            ["near_degenerate_singular_values"] = report.Layers.Sum(l => l.VoNearDegenerate),
            ["near_tied_heads"] = report.Layers.Sum(l => l.NearTiedHeads),
            ["near_tied_groups"] = report.Layers.Sum(l => l.NearTiedGroups),
            ["near_tied_units"] = report.Layers.Sum(l => l.NearTiedUnits),
            ["near_tied_signs"] = report.Layers.Sum(l => l.NearTiedSigns + l.QkSignTies),
            ["qk_phase_degenerate"] = report.Layers.Sum(l => l.QkPhaseDegenerate),
            ["tie_tolerance"] = report.Precision.Tie,
            ["kept_layers"] = report.KeptLayers,
            ["residual_frame"] = new JsonObject
            {
                ["kind"] = fr.Kind, ["identity"] = fr.Identity, ["kept"] = fr.Kept, ["gain_ties"] = fr.GainTies,
                ["gain_ties_unbroken"] = fr.GainTiesUnbroken, ["near_tied_signs"] = fr.NearTiedSigns, ["embedding_near_degenerate"] = fr.EmbeddingNearDegenerate,
            },
            ["zeroed_singular_values"] = report.Layers.Sum(l => l.VoZeroed),
            ["seconds"] = seconds,
            ["layers"] = new JsonArray(report.Layers.Select(l => (JsonNode)new JsonObject
            {
                ["layer"] = l.Layer, ["kept"] = l.Kept, ["qk_phase_degenerate"] = l.QkPhaseDegenerate, ["qk_sign_ties"] = l.QkSignTies,
                ["vo_near_degenerate"] = l.VoNearDegenerate, ["vo_zeroed"] = l.VoZeroed, ["near_tied_heads"] = l.NearTiedHeads,
                ["near_tied_groups"] = l.NearTiedGroups, ["near_tied_units"] = l.NearTiedUnits, ["near_tied_signs"] = l.NearTiedSigns,
                ["head_order"] = new JsonArray(l.HeadOrder.Select(i => (JsonNode)i).ToArray()),
                ["group_order"] = new JsonArray(l.GroupOrder.Select(i => (JsonNode)i).ToArray()),
            }).ToArray()),
        };
        if (input.Ids.Length > 0) o["text"] = input.Description;
        if (jsonPath is not null) JsonOutput.Write(jsonPath, o, ck.InputFiles);
        if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;
        var t = new Table().Title($"canonicalize-checkpoint (full form, {Markup.Escape(ck.Traits.Describe())})").AddColumn("quantity").AddColumn(new TableColumn("value").RightAligned());
        t.AddRow("output", Markup.Escape(Path.GetFullPath(outDir)));
        t.AddRow("output dtype", outType.ToString());
        t.AddRow($"logits error of the export ({outType} rounding; {Markup.Escape(input.Ids.Length > 0 ? input.Description : "no tokens")}, row-centred, float64)",
            report.StorageLogitsError is double se ? $"{se:E2} ({se / eps:F1} ε_{outType})" : "not measured (--check-tokens 0)");
        t.AddRow("residual frame", fr.Kept ? $"{fr.Kind}: already canonical, kept" : fr.Identity ? $"{fr.Kind}: identity" : fr.Kind);
        if (fr.Kind == "signed-permutation") t.AddRow("g_f ties (ordered by embedding column norms / unbroken)", $"{fr.GainTies} / {fr.GainTiesUnbroken}");
        else t.AddRow("embedding near-degenerate singular values", fr.EmbeddingNearDegenerate.ToString());
        t.AddRow($"tie tolerance ({report.Precision.Storage} precision)", $"{report.Precision.Tie:G2}");
        t.AddRow("layers already canonical, kept as stored", $"{report.KeptLayers} of {report.Layers.Count}");
        t.AddRow("QK planes with undetermined phase / sign near-ties", $"{report.Layers.Sum(l => l.QkPhaseDegenerate)} / {report.Layers.Sum(l => l.QkSignTies)}");
        t.AddRow("VO near-degenerate / zeroed singular values", $"{report.Layers.Sum(l => l.VoNearDegenerate)} / {report.Layers.Sum(l => l.VoZeroed)}");
        t.AddRow("near-tied heads / groups / MLP units / signs", $"{report.Layers.Sum(l => l.NearTiedHeads)} / {report.Layers.Sum(l => l.NearTiedGroups)} / {report.Layers.Sum(l => l.NearTiedUnits)} / {report.Layers.Sum(l => l.NearTiedSigns) + fr.NearTiedSigns}");
        t.AddRow("time", $"{seconds:F1} s");
        AnsiConsole.Write(t);
        if (!report.Clean) AnsiConsole.MarkupLine("[yellow]The form is unique only up to the residual freedom of the degeneracies and ties above.[/]");
        return ExitCodes.Ok;
    }

    public static int Compare(string pathA, string pathB, string? jsonPath, double? given)
    {
        using var ca = CliCommon.OpenCheckpoint(pathA);
        using var cb = CliCommon.OpenCheckpoint(pathB);
        OutputPaths.File("--json", jsonPath, ca.InputFiles.Concat(cb.InputFiles), stdoutAllowed: true);
        var options = new LlamaCompareOptions { Tolerance = given, Tokens = LlamaCanonicalCompare.BuiltInTokens(ca.Traits) };
        LlamaComparison res = null!;
        int total = ca.Traits.Layers + 1;
        if (Console.IsErrorRedirected) res = LlamaCanonicalCompare.Compare(ca, cb, options);
        else
            CliCommon.Progress().Start(ctx =>
            {
                var task = ctx.AddTask("canonicalizing and comparing", maxValue: total);
                res = LlamaCanonicalCompare.Compare(ca, cb, options with { Progress = SyncProgress.Create(p => task.Value = p.Done) });
                task.Value = total;
            });
        bool eq = res.Equivalent;
        if (jsonPath is not null)
        {
            var o = new JsonObject
            {
                ["a"] = ca.Directory, ["b"] = cb.Directory, ["architecture"] = ca.Traits.Architecture,
                ["tolerance"] = res.Tolerance, ["tolerance_basis"] = res.ToleranceBasis, ["rounding_a"] = res.RoundingA, ["rounding_b"] = res.RoundingB,
                ["equivalent"] = eq, ["weights_equivalent"] = res.WeightsEquivalent, ["function_equivalent"] = res.FunctionEquivalent,
                ["head_form"] = res.HeadForm, ["largest"] = res.Largest, ["largest_where"] = res.LargestWhere,
                ["function_tokens"] = res.FunctionTokens, ["function_distance"] = res.FunctionDistance, ["function_tolerance"] = res.FunctionTolerance,
                ["function_tolerance_basis"] = res.FunctionToleranceBasis, ["function_rounding_a"] = res.FunctionRoundingA, ["function_rounding_b"] = res.FunctionRoundingB,
                ["globals"] = new JsonObject(res.Globals.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
                ["near_ties"] = new JsonObject { ["a"] = res.ReportA.NearTies, ["b"] = res.ReportB.NearTies },
                ["layers"] = new JsonArray(res.Layers.Select(l => (JsonNode)new JsonObject
                {
                    ["layer"] = l.Layer, ["distance"] = l.Distance, ["qk_distance"] = l.QkDistance, ["vo_distance"] = l.VoDistance,
                    ["mlp_distance"] = l.MlpDistance, ["bias_distance"] = l.BiasDistance, ["norm_distance"] = l.NormDistance,
                    ["qk_distances"] = new JsonArray(l.QkDistances.Select(x => (JsonNode)x).ToArray()),
                    ["vo_distances"] = new JsonArray(l.VoDistances.Select(x => (JsonNode)x).ToArray()),
                    ["vo_singular_values_a"] = new JsonArray(res.ReportA.Layers[l.Layer].VoSingularValues.Select(s => (JsonNode)new JsonArray(s.Select(x => (JsonNode)x).ToArray())).ToArray()),
                }).ToArray()),
            };
            JsonOutput.Write(jsonPath, o, ca.InputFiles.Concat(cb.InputFiles));
            if (OutputPaths.IsStdout(jsonPath)) return eq ? ExitCodes.Ok : ExitCodes.CheckFailed;
        }
        string F(double v) => v > res.Tolerance ? $"[red]{v:E2}[/]" : $"{v:E2}";
        var lt = new Table().Title("distance per layer (relative Frobenius, canonical forms; worst KV group)").AddColumn("layer")
            .AddColumn(new TableColumn("largest").RightAligned()).AddColumn(new TableColumn("QK").RightAligned()).AddColumn(new TableColumn("VO").RightAligned())
            .AddColumn(new TableColumn("MLP").RightAligned()).AddColumn(new TableColumn("biases").RightAligned());
        foreach (var l in res.Layers) lt.AddRow(l.Layer.ToString(), F(l.Distance), $"{l.QkDistance:E2}", $"{l.VoDistance:E2}", $"{l.MlpDistance:E2}", $"{l.BiasDistance:E2}");
        foreach (var (k, v) in res.Globals) lt.AddRow(Markup.Escape(k), F(v), "", "", "", "");
        AnsiConsole.Write(lt);
        string where = Markup.Escape(res.LargestWhere);
        AnsiConsole.MarkupLine($"weights: largest distance {res.Largest:E2} ({where}); tolerance {res.Tolerance:E2} = {Markup.Escape(res.ToleranceBasis)}");
        AnsiConsole.MarkupLine(res.FunctionDistance is double fd
            ? $"function: row-centred logits differ by {fd:E2} on {res.FunctionTokens} tokens of the built-in text; tolerance {res.FunctionTolerance:E2} = {Markup.Escape(res.FunctionToleranceBasis)}"
            : "function: not compared");
        if (eq) AnsiConsole.MarkupLine($"[green]equivalent[/] up to gauge ({res.HeadForm} form): weights and function within their tolerances");
        else AnsiConsole.MarkupLine($"[red]not equivalent[/] ({res.HeadForm} form): {(res.WeightsEquivalent ? "" : $"largest weight distance {res.Largest:E2} at {where} exceeds {res.Tolerance:E2}")}{(res.WeightsEquivalent || res.FunctionEquivalent ? "" : "; ")}{(res.FunctionEquivalent ? "" : $"function distance {res.FunctionDistance:E2} exceeds {res.FunctionTolerance:E2}")}");
        return eq ? ExitCodes.Ok : ExitCodes.CheckFailed;
    }
}
