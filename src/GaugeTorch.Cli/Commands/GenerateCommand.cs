using System.CommandLine;
using GaugeTorch.Model;
using GaugeTorch.Text;

namespace GaugeTorch.Cli.Commands;

public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var text = new TextInput(required: true, "--prompt");
        var maxNew = new Option<int>("--max-new-tokens")
        {
            Description = "How many tokens to add (greedy). Generation stops earlier, with a message, when prompt and new tokens fill the model's context (GPT-2's n_positions).",
            DefaultValueFactory = _ => 40,
        };
        var dtype = CliCommon.DTypeOption("float32");
        var allowNonFinite = CliCommon.AllowNonFiniteOption();
        var cmd = new Command("generate",
            "Greedy continuation of a prompt, streamed to stdout token by token (GPT-2, Llama, Qwen2, Mistral). GPT-2 uses a key/value cache: each new " +
            "token costs one position, and memory stays at the model plus the cache (75 MB for gpt2 at 1,024 positions in float32). The LLaMA family " +
            "recomputes the sequence at each step. Without a tokenizer.json, give --tokens; the output is then token ids.")
            { model, maxNew, dtype, allowNonFinite };
        foreach (var o in text.Options) cmd.Options.Add(o);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int n = r.GetValue(maxNew);
            if (n < 0) throw new ArgumentException($"--max-new-tokens: {n} is negative");
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            using var ck = CliCommon.OpenCheckpoint(r.GetValue(model));
            var prompt = text.Resolve(r, ck);
            int context = LanguageModels.ContextLength(ck);
            if (prompt.Ids.Length > context)
                throw new ArgumentException($"the prompt's {prompt.Ids.Length} tokens exceed the model's context of {context} positions");
            using var m = CliModels.Load(ck, dt, r.GetValue(allowNonFinite));
            var tokenizer = CliModels.Tokenizer(ck);
            try
            {
                var stdout = Console.Out;
                // GPT-2 prints the prompt as typed plus the continuation. Other tokenizers decode after the prompt's ids
                // (SentencePiece-style decoders drop a lone continuation's leading space); without a tokenizer, ids.
                bool gpt2 = ck.Architecture.Name == "gpt2";
                stdout.Write(gpt2 ? prompt.Text ?? tokenizer!.Decode(prompt.Ids) : tokenizer is not null ? tokenizer.Decode(prompt.Ids) : string.Join(",", prompt.Ids));
                stdout.Flush();
                var decoder = tokenizer is null ? null : new StreamingDecoder(tokenizer, gpt2 ? null : prompt.Ids);
                int produced = 0;
                using var next = m.GenerateGreedy(prompt.Ids, n).GetEnumerator();
                bool more = false;
                // The prefill (the whole prompt in one forward) is the long wait before the first token: in logs it
                // shows as elapsed-time lines; on a terminal the streamed text itself shows life.
                var progress = CliCommon.Progress();
                if (progress.Plain)
                    progress.Start(ctx =>
                    {
                        ctx.AddTask($"generate: prefill of {prompt.Ids.Length} tokens").IsIndeterminate = true;
                        more = next.MoveNext();
                    });
                else more = next.MoveNext();
                for (; more; more = next.MoveNext())
                {
                    int token = next.Current;
                    produced++;
                    string piece = decoder is null ? "," + token : decoder.Add(token);
                    if (piece.Length > 0)
                    {
                        stdout.Write(piece);
                        stdout.Flush(); // stream: each token appears as it is chosen
                    }
                }
                stdout.WriteLine(decoder?.Flush() ?? "");
                stdout.Flush();
                if (produced < n)
                    Console.Error.WriteLine($"generate: stopped after {produced} of {n} new tokens: the prompt ({prompt.Ids.Length} tokens) and the new tokens " +
                                            $"fill the model's context of {context} positions");
            }
            finally
            {
                (tokenizer as IDisposable)?.Dispose();
            }
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
