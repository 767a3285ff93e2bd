using System.CommandLine;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using TorchSharp;

namespace GaugeTorch.Cli.Commands;

public static class LogitsCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var text = new Option<string?>("--text") { Description = "Text to tokenize: GPT-2's BPE, or the model directory's tokenizer.json (llama, qwen2, mistral)." };
        var tokens = new Option<string?>("--tokens") { Description = "Comma-separated token ids, e.g. 15496,11,616." };
        var dtype = CliCommon.DTypeOption();
        var output = new Option<string>("--out") { Description = "Output .safetensors file: 'logits' [T, V] in the compute dtype and 'tokens' (I64, [T]).", Required = true };
        var cmd = new Command("logits", "Run the model on text or tokens and write the logits as safetensors.") { model, text, tokens, dtype, output };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            using var ck = CliModels.Open(r.GetValue(model));
            var ids = CliModels.Tokens(ck, r.GetValue(text), r.GetValue(tokens), "--text");
            int context = LanguageModels.ContextLength(ck);
            if (ids.Length > context) throw new ArgumentException($"{ids.Length} tokens exceed the model's {context} positions");
            string outPath = r.GetValue(output)!;
            OutputGuard.RefuseToOverwrite(outPath, ck.InputFiles);
            using var m = CliModels.Load(ck, dt);
            using var logits = m.Logits(ids);
            using var tok = torch.tensor(ids.Select(i => (long)i).ToArray(), torch.ScalarType.Int64);
            SafeTensorWriter.WriteAll(outPath, [new("logits", logits), new("tokens", tok)],
                new Dictionary<string, string> { ["format"] = "pt", ["model"] = ck.Directory, ["dtype"] = dt.ToString() }, ck.InputFiles);
            Console.Error.WriteLine($"wrote {outPath}: logits [{ids.Length}, {ck.Traits.Vocab}] {DTypes.FromScalarType(dt)}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
