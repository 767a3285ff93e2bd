using System.CommandLine;
using GaugeTorch.Gpt2;

namespace GaugeTorch.Cli.Commands;

public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var text = new TextInput(required: true, "--prompt");
        var maxNew = new Option<int>("--max-new-tokens")
        {
            Description = "How many tokens to add (greedy). Generation stops earlier, with a message, when prompt and new tokens fill the model's n_positions.",
            DefaultValueFactory = _ => 40,
        };
        var dtype = CliCommon.DTypeOption("float32");
        var allowNonFinite = CliCommon.AllowNonFiniteOption();
        var cmd = new Command("generate",
            "Greedy continuation of a prompt, streamed to stdout token by token. Uses a key/value cache: each new token costs one position, " +
            "and memory stays at the model plus the cache (75 MB for gpt2 at 1,024 positions in float32).")
            { model, maxNew, dtype, allowNonFinite };
        foreach (var o in text.Options) cmd.Options.Add(o);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int n = r.GetValue(maxNew);
            if (n < 0) throw new ArgumentException($"--max-new-tokens: {n} is negative");
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            using var ck = CliCommon.OpenModel(r.GetValue(model));
            var c = ck.Config;
            var prompt = text.Resolve(r, c.VocabSize);
            if (prompt.Ids.Length > c.NPositions)
                throw new ArgumentException($"the prompt's {prompt.Ids.Length} tokens exceed the model's context of {c.NPositions} positions");
            using var m = CliCommon.LoadModel(ck, dt, r.GetValue(allowNonFinite));
            var stdout = Console.Out;
            stdout.Write(prompt.Text ?? Gpt2Tokenizer.Decode(prompt.Ids));
            stdout.Flush();
            var decoder = new Gpt2Tokenizer.StreamingDecoder();
            int produced = 0;
            foreach (int token in m.GenerateGreedy(prompt.Ids, n))
            {
                produced++;
                string piece = decoder.Add(token);
                if (piece.Length > 0)
                {
                    stdout.Write(piece);
                    stdout.Flush(); // stream: each token appears as it is chosen
                }
            }
            stdout.WriteLine(decoder.Flush());
            stdout.Flush();
            if (produced < n)
                Console.Error.WriteLine($"generate: stopped after {produced} of {n} new tokens: the prompt ({prompt.Ids.Length} tokens) and the new tokens " +
                                        $"fill the model's context of {c.NPositions} positions");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
