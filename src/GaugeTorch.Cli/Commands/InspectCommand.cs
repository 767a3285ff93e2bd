using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

public static class InspectCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var json = JsonOutput.Option("the configuration and tensor table");
        var noValidate = new Option<bool>("--no-validate")
        {
            Description = "Show the tensor table of a checkpoint that fails validation (wrong shapes, missing or extra tensors, no usable config.json) " +
                          "and list its problems, instead of refusing it. The safetensors files themselves must still parse.",
        };
        var cmd = new Command("inspect", "Show a checkpoint's configuration, tensor table (name, shape, dtype) and parameter count (GPT-2, Llama, Qwen2, Mistral).") { model, json, noValidate };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string? jsonPath = r.GetValue(json);
            if (r.GetValue(noValidate)) return Unvalidated(r.GetValue(model), jsonPath);
            using var ck = CliCommon.OpenCheckpoint(r.GetValue(model));
            OutputPaths.File("--json", jsonPath, ck.InputFiles, stdoutAllowed: true);
            var t = ck.Traits;
            long pars = LanguageModels.ParameterCount(ck);
            bool gpt2 = ck.Architecture is Gpt2Adapter;
            if (jsonPath is not null)
            {
                var o = new JsonObject
                {
                    ["model"] = ck.Directory,
                    ["architecture"] = ck.Architecture.Name,
                    ["config"] = ConfigJson(ck.Architecture, ck.Config),
                    ["parameters"] = pars,
                    ["tied"] = ck.Tied,
                    ["prefix"] = ck.Prefix,
                    ["mask_buffers"] = gpt2 && ck.IgnoredBuffers.Count > 0,
                    ["ignored_buffers"] = new JsonArray(ck.IgnoredBuffers.Select(b => (JsonNode)b).ToArray()),
                    ["storage_dtype"] = ck.StorageDType.ToString(),
                    ["files"] = new JsonArray(ck.Store.SourcePaths.Select(p => (JsonNode)p).ToArray()),
                    ["tensors"] = TensorsJson(ck.Store),
                };
                JsonOutput.Write(jsonPath, o, ck.InputFiles);
                if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;
            }
            var cfg = new Table().Title("configuration").AddColumn("key").AddColumn("value");
            cfg.AddRow("model", Markup.Escape(ck.Directory));
            if (gpt2)
            {
                cfg.AddRow("layers / d_model / heads / d_k", $"{t.Layers} / {t.Hidden} / {t.QueryHeads} / {t.HeadDim}");
                cfg.AddRow("MLP width F", t.Inner.ToString());
                cfg.AddRow("vocab / positions", $"{t.Vocab} / {t.MaxPositions}");
                cfg.AddRow("layer_norm_epsilon", t.NormEps.ToString("R"));
                cfg.AddRow("head", ck.Tied ? "tied (wte)" : "untied (lm_head.weight)");
                cfg.AddRow("key prefix", ck.Prefix.Length == 0 ? "(none)" : ck.Prefix);
                cfg.AddRow("mask buffers stored", ck.IgnoredBuffers.Count > 0 ? "yes" : "no");
            }
            else
            {
                cfg.AddRow("architecture", ck.Architecture.Name);
                cfg.AddRow("layers / d_model / heads / KV heads / head_dim", $"{t.Layers} / {t.Hidden} / {t.QueryHeads} / {t.KvHeads} / {t.HeadDim}");
                cfg.AddRow("MLP width F (SwiGLU)", t.Inner.ToString());
                cfg.AddRow("vocab / max positions", $"{t.Vocab} / {t.MaxPositions}");
                cfg.AddRow("context computed exactly", LanguageModels.ContextLength(ck).ToString());
                cfg.AddRow("rms_norm_eps", t.NormEps.ToString("R"));
                var rope = t.Rope!;
                cfg.AddRow("rope", rope.Scaling == "default"
                    ? $"theta {rope.Theta.ToString("R", CultureInfo.InvariantCulture)}"
                    : $"theta {rope.Theta.ToString("R", CultureInfo.InvariantCulture)}, {rope.Scaling} factor {rope.Factor.ToString("R", CultureInfo.InvariantCulture)}" +
                      (rope.Scaling == "llama3" ? $", low {rope.LowFreqFactor.ToString("R", CultureInfo.InvariantCulture)}, high {rope.HighFreqFactor.ToString("R", CultureInfo.InvariantCulture)}, original {rope.OriginalMaxPositions}" : ""));
                cfg.AddRow("biases", string.Join(", ", new[] { t.QkvBias ? "q/k/v" : null, t.OutBias ? "o" : null, t.MlpBias ? "mlp" : null }.Where(s => s is not null)) is { Length: > 0 } b ? b : "none");
                cfg.AddRow("head", ck.Tied ? $"tied ({ck.Architecture.EmbeddingName}{(ck.HasHeadTensor ? $", {ck.Architecture.HeadName} stored as a copy" : "")})" : $"untied ({ck.Architecture.HeadName})");
                cfg.AddRow("ignored buffers stored", ck.IgnoredBuffers.Count.ToString());
            }
            cfg.AddRow("storage dtype", ck.StorageDType.ToString());
            cfg.AddRow("parameters", pars.ToString("N0"));
            cfg.AddRow("files", Markup.Escape(string.Join("\n", ck.Store.SourcePaths)));
            AnsiConsole.Write(cfg);
            AnsiConsole.Write(TensorTable(ck.Store));
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    /// <summary>
    /// --no-validate: the safetensors store alone, the config when it parses, and every validation problem as a note
    /// (the table is what one needs to see why a checkpoint is refused).
    /// </summary>
    private static int Unvalidated(string? path, string? jsonPath)
    {
        string full = Path.GetFullPath(path ?? DefaultModel.Path);
        using var store = SafeTensorStore.Open(full);
        OutputPaths.File("--json", jsonPath, store.SourcePaths, stdoutAllowed: true);
        string dir = Directory.Exists(full) ? full : Path.GetDirectoryName(full)!;
        string configPath = Path.Combine(dir, "config.json");
        IArchitecture? arch = null;
        var problems = new List<string>();
        try
        {
            arch = ArchitectureRegistry.FromConfig(Checkpoint.ReadConfig(configPath), configPath);
        }
        catch (Exception e) when (e is ModelFormatException or Gpt2FormatException or NotSupportedException)
        {
            problems.Add(e.Message);
        }
        if (arch is not null) problems.AddRange(Checkpoint.Problems(arch, store));
        if (jsonPath is not null)
        {
            var o = new JsonObject
            {
                ["model"] = dir,
                ["validated"] = false,
                ["architecture"] = arch?.Name,
                ["config"] = arch is null ? null : ConfigJson(arch, null),
                ["problems"] = new JsonArray(problems.Select(p => (JsonNode)p).ToArray()),
                ["files"] = new JsonArray(store.SourcePaths.Select(p => (JsonNode)p).ToArray()),
                ["tensors"] = TensorsJson(store),
            };
            JsonOutput.Write(jsonPath, o, store.SourcePaths);
            if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;
        }
        AnsiConsole.MarkupLine(Markup.Escape($"{dir}: not validated (--no-validate); {store.Entries.Count} tensors in {string.Join(", ", store.SourcePaths)}"));
        if (arch is not null) AnsiConsole.MarkupLine(Markup.Escape($"config: {arch.Traits.Describe()}"));
        AnsiConsole.Write(TensorTable(store));
        if (problems.Count == 0) AnsiConsole.MarkupLine("[green]no problems[/]: the checkpoint also passes validation");
        foreach (var p in problems) AnsiConsole.MarkupLine($"[yellow]problem:[/] {Markup.Escape(p)}");
        return ExitCodes.Ok;
    }

    private static JsonNode? ConfigJson(IArchitecture arch, JsonObject? raw) => arch switch
    {
        Gpt2Adapter g => g.Config.ToJson(),
        LlamaAdapter l => l.Config.ToJson(),
        _ => raw?.DeepClone(),
    };

    private static JsonArray TensorsJson(SafeTensorStore store) =>
        new(store.Entries.OrderBy(e => e.Name, StringComparer.Ordinal).Select(e => (JsonNode)new JsonObject
        {
            ["name"] = e.Name,
            ["shape"] = new JsonArray(e.Shape.Select(s => (JsonNode)s).ToArray()),
            ["dtype"] = e.DType.ToString(),
        }).ToArray());

    private static Table TensorTable(SafeTensorStore store)
    {
        var t = new Table().Title("tensors").AddColumn("name").AddColumn("shape").AddColumn("dtype").AddColumn(new TableColumn("bytes").RightAligned());
        foreach (var e in store.Entries.OrderBy(e => e.Name, StringComparer.Ordinal))
            t.AddRow(Markup.Escape(e.Name), Markup.Escape(e.ShapeText), e.DType.ToString(), e.ByteLength.ToString("N0"));
        return t;
    }
}
