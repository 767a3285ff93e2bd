using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
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
            using var ck = CliModels.Open(r.GetValue(model));
            var t = ck.Traits;
            long pars = LanguageModels.ParameterCount(ck);
            bool gpt2 = ck.Architecture is Gpt2Adapter;
            if (r.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["model"] = ck.Directory,
                    ["architecture"] = ck.Architecture.Name,
                    ["config"] = ck.Architecture switch
                    {
                        Gpt2Adapter g => g.Config.ToJson(),
                        LlamaAdapter l => l.Config.ToJson(),
                        _ => ck.Config.DeepClone(),
                    },
                    ["parameters"] = pars,
                    ["tied"] = ck.Tied,
                    ["prefix"] = ck.Prefix,
                    ["mask_buffers"] = gpt2 && ck.IgnoredBuffers.Count > 0,
                    ["ignored_buffers"] = new JsonArray(ck.IgnoredBuffers.Select(b => (JsonNode)b).ToArray()),
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
            var table = new Table().Title("tensors").AddColumn("name").AddColumn("shape").AddColumn("dtype").AddColumn(new TableColumn("bytes").RightAligned());
            foreach (var e in ck.Store.Entries.OrderBy(e => e.Name, StringComparer.Ordinal))
                table.AddRow(Markup.Escape(e.Name), Markup.Escape(e.ShapeText), e.DType.ToString(), e.ByteLength.ToString("N0"));
            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
