using System.CommandLine;
using System.Text.Json.Nodes;
using GaugeTorch.Gpt2;
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
            Description = "Show the tensor table of a checkpoint that fails GPT-2 validation (wrong shapes, missing or extra tensors, no usable config.json) " +
                          "and list its problems, instead of refusing it. The safetensors files themselves must still parse.",
        };
        var cmd = new Command("inspect", "Show a checkpoint's configuration, tensor table (name, shape, dtype) and parameter count.") { model, json, noValidate };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string? jsonPath = r.GetValue(json);
            if (r.GetValue(noValidate)) return Unvalidated(r.GetValue(model), jsonPath);
            using var ck = CliCommon.OpenModel(r.GetValue(model));
            OutputPaths.File("--json", jsonPath, ck.InputFiles, stdoutAllowed: true);
            var c = ck.Config;
            long pars = c.ParameterCount(ck.Tied);
            if (jsonPath is not null)
            {
                var o = new JsonObject
                {
                    ["model"] = ck.Directory,
                    ["config"] = c.ToJson(),
                    ["parameters"] = pars,
                    ["tied"] = ck.Tied,
                    ["prefix"] = ck.Prefix,
                    ["mask_buffers"] = ck.HasMaskBuffers,
                    ["storage_dtype"] = ck.StorageDType.ToString(),
                    ["files"] = new JsonArray(ck.Store.SourcePaths.Select(p => (JsonNode)p).ToArray()),
                    ["tensors"] = TensorsJson(ck.Store),
                };
                JsonOutput.Write(jsonPath, o, ck.InputFiles);
                if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;
            }
            var cfg = new Table().Title("configuration").AddColumn("key").AddColumn("value");
            cfg.AddRow("model", Markup.Escape(ck.Directory));
            cfg.AddRow("layers / d_model / heads / d_k", $"{c.NLayer} / {c.NEmbd} / {c.NHead} / {c.HeadDim}");
            cfg.AddRow("MLP width F", c.NInner.ToString());
            cfg.AddRow("vocab / positions", $"{c.VocabSize} / {c.NPositions}");
            cfg.AddRow("layer_norm_epsilon", c.LayerNormEpsilon.ToString("R"));
            cfg.AddRow("head", ck.Tied ? "tied (wte)" : "untied (lm_head.weight)");
            cfg.AddRow("key prefix", ck.Prefix.Length == 0 ? "(none)" : ck.Prefix);
            cfg.AddRow("mask buffers stored", ck.HasMaskBuffers ? "yes" : "no");
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
        Gpt2Config? config = null;
        var problems = new List<string>();
        try
        {
            config = Gpt2Config.Load(configPath);
        }
        catch (Gpt2FormatException e)
        {
            problems.Add(e.Message);
        }
        if (config is not null) problems.AddRange(Gpt2Checkpoint.Problems(config, store));
        if (jsonPath is not null)
        {
            var o = new JsonObject
            {
                ["model"] = dir,
                ["validated"] = false,
                ["config"] = config?.ToJson(),
                ["problems"] = new JsonArray(problems.Select(p => (JsonNode)p).ToArray()),
                ["files"] = new JsonArray(store.SourcePaths.Select(p => (JsonNode)p).ToArray()),
                ["tensors"] = TensorsJson(store),
            };
            JsonOutput.Write(jsonPath, o, store.SourcePaths);
            if (OutputPaths.IsStdout(jsonPath)) return ExitCodes.Ok;
        }
        AnsiConsole.MarkupLine(Markup.Escape($"{dir}: not validated (--no-validate); {store.Entries.Count} tensors in {string.Join(", ", store.SourcePaths)}"));
        if (config is not null)
            AnsiConsole.MarkupLine(Markup.Escape($"config: {config.NLayer} layers, d={config.NEmbd}, h={config.NHead}, F={config.NInner}, V={config.VocabSize}, P={config.NPositions}"));
        AnsiConsole.Write(TensorTable(store));
        if (problems.Count == 0) AnsiConsole.MarkupLine("[green]no problems[/]: the checkpoint also passes validation");
        foreach (var p in problems) AnsiConsole.MarkupLine($"[yellow]problem:[/] {Markup.Escape(p)}");
        return ExitCodes.Ok;
    }

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
