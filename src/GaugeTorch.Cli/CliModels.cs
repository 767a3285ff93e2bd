using GaugeTorch.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Text;
using TorchSharp;

namespace GaugeTorch.Cli;

/// <summary>
/// The architecture-neutral model path of the commands that run a model (inspect, logits, generate): open any
/// supported checkpoint through <see cref="Checkpoint"/>, load its module as an <see cref="ICausalLanguageModel"/>, and
/// turn --text / --prompt / --tokens into token ids with the model's tokenizer (GPT-2: the built-in BPE; others: the
/// tokenizer.json in the model directory).
/// </summary>
public static class CliModels
{
    public static Checkpoint Open(string? path) => Checkpoint.Open(path);

    /// <summary>
    /// Loads the full model, with a progress bar when stderr is a terminal and the load is large, and refuses NaN or
    /// infinite weights by name unless <paramref name="allowNonFinite"/>.
    /// </summary>
    public static ICausalLanguageModel Load(Checkpoint ck, torch.ScalarType dtype, bool allowNonFinite = false)
    {
        ICausalLanguageModel? model = null;
        if (ck.Store.TotalBytes < 200_000_000 || Console.IsErrorRedirected) model = LanguageModels.Load(ck, dtype, ComputeDevice.Default);
        else
            CliCommon.Progress().Start(ctx =>
            {
                var task = ctx.AddTask($"loading {Path.GetFileName(ck.Directory)}", maxValue: 1.0);
                model = LanguageModels.Load(ck, dtype, ComputeDevice.Default, new Progress<(long Done, long Total)>(p => task.Value = (double)p.Done / Math.Max(1, p.Total)));
                task.Value = 1.0;
            });
        try
        {
            if (!allowNonFinite) FiniteWeights.RequireModule(ck, model!);
        }
        catch
        {
            model!.Dispose();
            throw;
        }
        return model!;
    }

    /// <summary>GPT-2's built-in BPE; for other architectures the directory's tokenizer.json, or null when there is none.</summary>
    public static ITextTokenizer? Tokenizer(Checkpoint ck)
    {
        if (ck.Architecture.Name == "gpt2") return Gpt2TextTokenizer.Instance;
        return HfTokenizer.Find(ck.Directory) is string p ? HfTokenizer.Open(p) : null;
    }

    /// <summary>Token ids as <see cref="Tokens(Checkpoint, ITextTokenizer?, string?, string?, string)"/>, opening (and closing) the tokenizer only when text is to be encoded.</summary>
    public static int[] Tokens(Checkpoint ck, string? text, string? tokenList, string textOption)
    {
        var tokenizer = text is null && tokenList is not null ? null : Tokenizer(ck);
        try
        {
            return Tokens(ck, tokenizer, text, tokenList, textOption);
        }
        finally
        {
            (tokenizer as IDisposable)?.Dispose();
        }
    }

    /// <summary>
    /// Token ids from text (<paramref name="textOption"/> names the option in errors) or a comma-separated id list.
    /// With neither, the built-in paragraph is encoded. For GPT-2 this is exactly <see cref="CliCommon.Tokens"/> (same ids, same errors).
    /// </summary>
    public static int[] Tokens(Checkpoint ck, ITextTokenizer? tokenizer, string? text, string? tokenList, string textOption)
    {
        int vocab = ck.Traits.Vocab;
        if (text is not null && tokenList is not null) throw new ArgumentException($"give {textOption} or --tokens, not both");
        if (tokenList is not null) return Gpt2Tokenizer.ParseTokenList(tokenList, vocab);
        if (tokenizer is null)
            throw new ArgumentException($"{ck.Directory}: no {HfTokenizer.FileName} to encode text with; give token ids with --tokens (e.g. --tokens 1,2,3)");
        var ids = tokenizer.Encode(text ?? Gpt2Tokenizer.BuiltInText);
        if (ids.Length == 0) throw new ArgumentException($"{textOption}: the text encodes to no tokens");
        foreach (int id in ids)
            if (id >= vocab) throw new ArgumentException($"{textOption}: token {id} is outside this model's vocabulary of {vocab}");
        return ids;
    }
}
