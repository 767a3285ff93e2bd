using System.CommandLine;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;

namespace GaugeTorch.Cli.Commands;

public static class LogitsCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var text = new Option<string?>("--text") { Description = "Text to tokenize with GPT-2's BPE." };
        var tokens = new Option<string?>("--tokens") { Description = "Comma-separated token ids, e.g. 15496,11,616." };
        var dtype = CliCommon.DTypeOption();
        var output = new Option<string>("--out") { Description = "Output .safetensors file: 'logits' [T, V] in the compute dtype and 'tokens' (I64, [T]).", Required = true };
        var cmd = new Command("logits", "Run the model on text or tokens and write the logits as safetensors.") { model, text, tokens, dtype, output };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            using var ck = CliCommon.OpenModel(r.GetValue(model));
            var ids = CliCommon.Tokens(r.GetValue(text), r.GetValue(tokens), ck.Config.VocabSize);
            if (ids.Length > ck.Config.NPositions) throw new ArgumentException($"{ids.Length} tokens exceed the model's {ck.Config.NPositions} positions");
            string outPath = r.GetValue(output)!;
            OutputGuard.RefuseToOverwrite(outPath, ck.InputFiles);
            using var m = CliCommon.LoadModel(ck, dt);
            using var logits = m.Logits(ids);
            using var tok = torch.tensor(ids.Select(i => (long)i).ToArray(), torch.ScalarType.Int64);
            SafeTensorWriter.WriteAll(outPath, [new("logits", logits), new("tokens", tok)],
                new Dictionary<string, string> { ["format"] = "pt", ["model"] = ck.Directory, ["dtype"] = dt.ToString() }, ck.InputFiles);
            Console.Error.WriteLine($"wrote {outPath}: logits [{ids.Length}, {ck.Config.VocabSize}] {DTypes.FromScalarType(dt)}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
