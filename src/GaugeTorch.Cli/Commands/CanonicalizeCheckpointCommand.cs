using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

public static class CanonicalizeCheckpointCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var output = new Option<string>("--out") { Description = "Output directory (must not exist or be empty; never the input's directory; its parent must exist).", Required = true };
        var form = new Option<string>("--form") { Description = "full: the canonical form of docs/canonical-form.md, unique on the whole catalog; paper: the papers' weaker form (families 1–3).", DefaultValueFactory = _ => "full" };
        var dtype = new Option<string>("--dtype") { Description = "Output dtype: same (the input's storage dtype) or float64.", DefaultValueFactory = _ => "same" };
        var json = JsonOutput.Option("the report");
        var text = new TextInput();
        var checkTokens = new Option<int?>("--check-tokens") { Description = "Measure the export's logits error on the first N tokens of the text (default: all of it, up to the model's positions; 0 skips the check, which costs two float64 forward passes)." };
        var cmd = new Command("canonicalize-checkpoint", "Write the gauge-canonical form of a checkpoint (GPT-2, Llama, Qwen2, Mistral) as a standard HuggingFace directory of the same architecture, streaming layer by layer.")
            { model, output, form, dtype, json, checkTokens };
        foreach (var o in text.Options) cmd.Options.Add(o);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            if (CanonicalizeCheckpointLlama.IsLlamaFamily(CanonicalizeCheckpointLlama.ModelType(r.GetValue(model))))
                return CanonicalizeCheckpointLlama.Canonicalize(r, r.GetValue(model), r.GetValue(form)!, r.GetValue(dtype)!, r.GetValue(output)!, r.GetValue(json), r.GetValue(checkTokens), text);
            var kind = CanonicalFormKinds.Parse(r.GetValue(form)!);
            bool f64 = CliCommon.ParseDType(r.GetValue(dtype)!, [DType.F64], same: true) is not null;
            string outDir = r.GetValue(output)!;
            string? jsonPath = r.GetValue(json);
            int? nCheck = r.GetValue(checkTokens);
            if (nCheck < 0) throw new ArgumentException($"--check-tokens: {nCheck} is negative");
            using var ck = CliCommon.OpenModel(r.GetValue(model));
            OutputPaths.Directory("--out", outDir, ck.Directory, ck.InputFiles);
            OutputPaths.File("--json", jsonPath, ck.InputFiles, stdoutAllowed: true);
            var c = ck.Config;
            // The built-in text's ids are folded into a small test model's vocabulary (id mod V), and the report says so.
            var input = text.Resolve(r, c.VocabSize).Take(Math.Min(c.NPositions, nCheck ?? int.MaxValue));
            var tokens = input.Ids;
            var sw = Stopwatch.StartNew();
            CanonicalReport report = null!;
            var options = new CanonicalizeOptions { Form = kind, Float64Output = f64, Tokens = tokens };
            {
                CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask($"canonicalizing {c.NLayer} layers", maxValue: c.NLayer + 1);
                    report = CanonicalCheckpoint.Write(ck, outDir, options with { Progress = SyncProgress.Create(p => task.Value = p.Done) });
                    task.Value = c.NLayer + 1;
                });
            }
            double seconds = sw.Elapsed.TotalSeconds;
            if (PhaseClock.Enabled) Console.Error.WriteLine(PhaseClock.Report());
            var outType = f64 ? DType.F64 : ck.StorageDType;
            double eps = Eps(outType);
            var o = ToJson(ck, Path.GetFullPath(outDir), report, outType, eps, tokens.Length, seconds);
            if (tokens.Length > 0) o["text"] = input.Description;
            if (jsonPath is not null) JsonOutput.Write(jsonPath, o, ck.InputFiles);
            if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;

            var t = new Table().Title($"canonicalize-checkpoint ({kind.Name()} form)").AddColumn("quantity").AddColumn(new TableColumn("value").RightAligned());
            t.AddRow("output", Markup.Escape(Path.GetFullPath(outDir)));
            t.AddRow("output dtype", outType.ToString());
            t.AddRow($"logits error of the export ({outType} rounding; {Markup.Escape(tokens.Length > 0 ? input.Description : "no tokens")}, row-centred, float64)",
                report.StorageLogitsError is double se ? $"{se:E2} ({se / eps:F1} ε_{outType})" : "not measured (--check-tokens 0)");
            var fr = report.Frame;
            t.AddRow("residual frame (step 4b)", fr.Kind == "none" ? "not fixed (paper form)"
                : fr.Kept ? "already canonical: kept" : fr.Identity ? $"{fr.Kind}: identity" : fr.Kind == "permutation" ? $"permutation, sign {fr.Sign:+0;-0}" : "rotation onto wte's principal axes");
            if (fr.Kind == "permutation")
                t.AddRow("residual freedom: γ_f ties (ordered by β_f, wte norms / by data / unbroken), β_f zero", $"{fr.GammaTies} / {fr.GammaTiesByData} / {fr.GammaTiesUnbroken}, {(fr.BetaZero ? "yes (sign from wte's third moment)" : "no")}");
            if (fr.Kind == "rotation")
                t.AddRow("residual freedom: wte rank, near-degenerate singular values, near-tied signs", $"{fr.EmbeddingRank} of {fr.Dimension - 1}, {fr.EmbeddingNearDegenerate}, {fr.EmbeddingNearTiedSigns}");
            t.AddRow($"tie tolerance ({report.Precision.Storage} precision)", $"{report.Precision.Tie:G2}");
            t.AddRow("layers already canonical, kept as stored", $"{report.KeptLayers} of {report.Layers.Count}");
            t.AddRow($"near-degenerate singular values (gap < {report.Precision.Tie:G2})", $"{report.NearDegenerate} (QK {report.QkNearDegenerate}, VO {report.VoNearDegenerate})");
            t.AddRow("near-tied heads / MLP units / signs; ties left unbroken", $"{report.NearTiedHeads} / {report.NearTiedUnits} / {report.NearTiedSigns}; {report.UnbrokenTies}");
            t.AddRow("singular values set to 0 (below rank tolerance)", report.Zeroed.ToString());
            t.AddRow("head factors on the Householder route (ill-conditioned or rank-deficient)", report.HouseholderFallbacks.ToString());
            t.AddRow("time", $"{seconds:F1} s");
            AnsiConsole.Write(t);
            foreach (var n in report.Layers.SelectMany(l => l.Notes).Concat(report.GlobalNotes).Take(20))
                AnsiConsole.MarkupLine($"[yellow]note:[/] {Markup.Escape(n)}");
            if (!report.Clean)
                AnsiConsole.MarkupLine("[yellow]The form is unique only up to the residual freedom of the degeneracies and ties above.[/]");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static double Eps(DType t) => t switch
    {
        DType.F64 => Math.Pow(2, -52),
        DType.F32 => Math.Pow(2, -23),
        DType.F16 => Math.Pow(2, -10),
        DType.BF16 => Math.Pow(2, -7),
        _ => double.NaN,
    };

    private static JsonObject ToJson(Gpt2Checkpoint ck, string outDir, CanonicalReport r, DType outType, double eps, int tokens, double seconds) => new()
    {
        ["model"] = ck.Directory,
        ["out"] = outDir,
        ["form"] = r.Form.Name(),
        ["dtype"] = outType.ToString(),
        ["tool_version"] = CanonicalCheckpoint.ToolVersion,
        ["tokens"] = tokens,
        ["logits_error_storage"] = r.StorageLogitsError,
        ["logits_error_storage_eps"] = r.StorageLogitsError / eps,
        ["near_degenerate_singular_values"] = r.NearDegenerate,
        ["near_tied_heads"] = r.NearTiedHeads,
        ["near_tied_units"] = r.NearTiedUnits,
        ["near_tied_signs"] = r.NearTiedSigns,
        ["unbroken_ties"] = r.UnbrokenTies,
        ["tie_tolerance"] = r.Precision.Tie,
        ["kept_layers"] = r.KeptLayers,
        ["residual_frame"] = new JsonObject
        {
            ["kind"] = r.Frame.Kind,
            ["identity"] = r.Frame.Identity,
            ["kept"] = r.Frame.Kept,
            ["sign"] = r.Frame.Sign,
            ["gamma_f_ties"] = r.Frame.GammaTies,
            ["gamma_f_ties_by_data"] = r.Frame.GammaTiesByData,
            ["gamma_f_ties_unbroken"] = r.Frame.GammaTiesUnbroken,
            ["beta_f_zero"] = r.Frame.BetaZero,
            ["embedding_rank"] = r.Frame.EmbeddingRank,
            ["embedding_near_degenerate"] = r.Frame.EmbeddingNearDegenerate,
            ["embedding_near_tied_signs"] = r.Frame.EmbeddingNearTiedSigns,
        },
        ["zeroed_singular_values"] = r.Zeroed,
        ["householder_fallbacks"] = r.HouseholderFallbacks,
        ["seconds"] = seconds,
        ["layers"] = new JsonArray(r.Layers.Select(l => (JsonNode)new JsonObject
        {
            ["layer"] = l.Layer,
            ["qk_near_degenerate"] = l.QkNearDegenerate,
            ["vo_near_degenerate"] = l.VoNearDegenerate,
            ["qk_zeroed"] = l.QkZeroed,
            ["vo_zeroed"] = l.VoZeroed,
            ["near_tied_heads"] = l.NearTiedHeads,
            ["near_tied_units"] = l.NearTiedUnits,
            ["near_tied_signs"] = l.NearTiedSigns,
            ["unbroken_ties"] = l.UnbrokenTies,
            ["kept"] = l.Kept,
            ["householder_fallbacks"] = l.HouseholderFallbacks,
            ["head_order"] = new JsonArray(l.HeadOrder.Select(i => (JsonNode)i).ToArray()),
            ["notes"] = new JsonArray(l.Notes.Select(n => (JsonNode)n).ToArray()),
        }).ToArray()),
        ["global_notes"] = new JsonArray(r.GlobalNotes.Select(n => (JsonNode)n).ToArray()),
    };
}

/// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

public static class SyncProgress
{
    public static SyncProgress<(int Done, int Total)> Create(Action<(int Done, int Total)> a) => new(a);
}
