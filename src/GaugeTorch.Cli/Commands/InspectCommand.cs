using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

public static class InspectCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var json = new Option<bool>("--json") { Description = "Print JSON instead of tables." };
        var cmd = new Command("inspect", "Show a checkpoint's configuration, tensor table (name, shape, dtype) and parameter count.") { model, json };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            using var ck = CliCommon.OpenModel(r.GetValue(model));
            var c = ck.Config;
            long pars = c.ParameterCount(ck.Tied);
            if (r.GetValue(json))
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
                    ["tensors"] = new JsonArray(ck.Store.Entries.OrderBy(e => e.Name, StringComparer.Ordinal).Select(e => (JsonNode)new JsonObject
                    {
                        ["name"] = e.Name,
                        ["shape"] = new JsonArray(e.Shape.Select(s => (JsonNode)s).ToArray()),
                        ["dtype"] = e.DType.ToString(),
                    }).ToArray()),
                };
                Console.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                return ExitCodes.Ok;
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
            var t = new Table().Title("tensors").AddColumn("name").AddColumn("shape").AddColumn("dtype").AddColumn(new TableColumn("bytes").RightAligned());
            foreach (var e in ck.Store.Entries.OrderBy(e => e.Name, StringComparer.Ordinal))
                t.AddRow(Markup.Escape(e.Name), Markup.Escape(e.ShapeText), e.DType.ToString(), e.ByteLength.ToString("N0"));
            AnsiConsole.Write(t);
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
