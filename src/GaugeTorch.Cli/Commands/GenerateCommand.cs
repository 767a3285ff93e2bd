using System.CommandLine;
using GaugeTorch.Model;
using TorchSharp;

namespace GaugeTorch.Cli.Commands;

public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text (GPT-2's BPE, or the model directory's tokenizer.json for llama, qwen2, mistral)." };
        var tokens = new Option<string?>("--tokens") { Description = "The prompt as comma-separated token ids instead of --prompt (models without a tokenizer.json print token ids)." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "How many tokens to add (greedy).", DefaultValueFactory = _ => 40 };
        var dtype = CliCommon.DTypeOption("float32");
        var cmd = new Command("generate", "Greedy continuation of a prompt, printed as text.") { model, prompt, tokens, maxNew, dtype };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int n = r.GetValue(maxNew);
            if (n < 0) throw new ArgumentException("--max-new-tokens must be non-negative");
            var dt = CliCommon.ParseComputeDType(r.GetValue(dtype)!);
            string? promptText = r.GetValue(prompt), tokenList = r.GetValue(tokens);
            if (promptText is null && tokenList is null) throw new ArgumentException("give --prompt (text) or --tokens (ids)");
            using var ck = CliModels.Open(r.GetValue(model));
            var tokenizer = CliModels.Tokenizer(ck);
            try
            {
                var ids = CliModels.Tokens(ck, tokenizer, promptText, tokenList, "--prompt").ToList();
                int context = LanguageModels.ContextLength(ck);
                using var m = CliModels.Load(ck, dt);
                var generated = new List<int>();
                for (int i = 0; i < n; i++)
                {
                    var window = ids.Skip(Math.Max(0, ids.Count - context)).ToList();
                    using var logits = m.Logits(window);
                    int next = (int)logits[-1].argmax().item<long>();
                    ids.Add(next);
                    generated.Add(next);
                }
                // GPT-2 prints the prompt as typed plus the continuation, as before. Other tokenizers decode the whole
                // sequence (special tokens skipped): SentencePiece-style decoders drop a leading space of a lone continuation.
                Console.WriteLine(ck.Architecture.Name == "gpt2" && promptText is not null ? promptText + tokenizer!.Decode(generated)
                    : tokenizer is not null ? tokenizer.Decode(ids) : string.Join(",", ids));
                return ExitCodes.Ok;
            }
            finally
            {
                (tokenizer as IDisposable)?.Dispose();
            }
        }));
        return cmd;
    }
}
