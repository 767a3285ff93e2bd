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
        var text = new TextInput();
        var dtype = CliCommon.DTypeOption();
        var output = new Option<string>("--out") { Description = "Output .safetensors file: 'logits' [T, V] in the compute dtype and 'tokens' (I64, [T]). Its directory must exist.", Required = true };
        var allowNonFinite = CliCommon.AllowNonFiniteOption();
        var cmd = new Command("logits", "Run the model on text or tokens and write the logits as safetensors.") { model, dtype, output, allowNonFinite };
        foreach (var o in text.Options) cmd.Options.Add(o);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            using var ck = CliCommon.OpenCheckpoint(r.GetValue(model));
            string outPath = r.GetValue(output)!;
            OutputPaths.File("--out", outPath, ck.InputFiles);
            var input = text.Resolve(r, ck);
            var ids = input.Ids;
            int context = LanguageModels.ContextLength(ck);
            if (ids.Length > context) throw new ArgumentException($"{ids.Length} tokens exceed the model's {context} positions");
            using var m = CliModels.Load(ck, dt, r.GetValue(allowNonFinite));
            using var logits = m.Logits(ids);
            using var tok = torch.tensor(ids.Select(i => (long)i).ToArray(), torch.ScalarType.Int64);
            SafeTensorWriter.WriteAll(outPath, [new("logits", logits), new("tokens", tok)],
                new Dictionary<string, string> { ["format"] = "pt", ["model"] = Path.GetFileName(ck.Directory.TrimEnd('/')), ["dtype"] = dt.ToString() }, ck.InputFiles);
            Console.Error.WriteLine($"wrote {outPath}: logits [{ids.Length}, {ck.Traits.Vocab}] {DTypes.FromScalarType(dt)} of {input.Description}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
