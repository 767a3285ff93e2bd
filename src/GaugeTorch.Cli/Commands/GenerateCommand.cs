using System.CommandLine;
using GaugeTorch.Architectures.Gpt2;
using TorchSharp;

namespace GaugeTorch.Cli.Commands;

public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var prompt = new Option<string>("--prompt") { Description = "Prompt text.", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "How many tokens to add (greedy).", DefaultValueFactory = _ => 40 };
        var dtype = CliCommon.DTypeOption("float32");
        var cmd = new Command("generate", "Greedy continuation of a prompt, printed as text.") { model, prompt, maxNew, dtype };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int n = r.GetValue(maxNew);
            if (n < 0) throw new ArgumentException("--max-new-tokens must be non-negative");
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            using var ck = CliCommon.OpenModel(r.GetValue(model));
            var ids = CliCommon.Tokens(r.GetValue(prompt), null, ck.Config.VocabSize).ToList();
            using var m = CliCommon.LoadModel(ck, dt);
            var generated = new List<int>();
            for (int i = 0; i < n; i++)
            {
                var window = ids.Skip(Math.Max(0, ids.Count - ck.Config.NPositions)).ToList();
                using var logits = m.Logits(window);
                int next = (int)logits[-1].argmax().item<long>();
                ids.Add(next);
                generated.Add(next);
            }
            Console.WriteLine(r.GetValue(prompt) + Gpt2Tokenizer.Decode(generated));
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
