using System.CommandLine;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Text;

namespace GaugeTorch.Cli;

/// <summary>Token ids for a command, and what they are in words (shown in tables and JSON).</summary>
/// <param name="Text">The text itself, when the ids came from text (not from --tokens).</param>
public sealed record TokenText(int[] Ids, string Description, string? Text = null)
{
    /// <summary>The first <paramref name="n"/> tokens (n ≥ Ids.Length keeps all).</summary>
    public TokenText Take(int n) => n >= Ids.Length ? this : new TokenText(Ids[..n], $"the first {n} of {Description}");
}

/// <summary>
/// The same three text options on every command that reads text: <c>--text</c>, <c>--text-file</c> and <c>--tokens</c>
/// (comma-separated ids, for models with a small vocabulary). Errors name the option the user actually typed, so
/// generate's <c>--prompt</c> alias is blamed as --prompt.
/// </summary>
public sealed class TextInput
{
    public Option<string?> Text { get; }
    public Option<string?> TextFile { get; }
    public Option<string?> Tokens { get; }
    private readonly bool _required;

    /// <param name="required">No built-in default: one of the three must be given (generate).</param>
    /// <param name="textAliases">Other names of --text (generate: --prompt).</param>
    public TextInput(bool required = false, params string[] textAliases)
    {
        _required = required;
        Text = new Option<string?>("--text", textAliases)
        {
            Description = "Text to tokenize: GPT-2's BPE, or the model directory's tokenizer.json for llama, qwen2, mistral" + (required ? "." : " (default: a built-in paragraph)."),
        };
        TextFile = new Option<string?>("--text-file") { Description = "Read the text from this file (UTF-8)." };
        Tokens = new Option<string?>("--tokens") { Description = "Comma-separated token ids instead of text, e.g. 15496,11,616 (for models with a small vocabulary)." };
    }

    public IEnumerable<Option> Options => [Text, TextFile, Tokens];

    /// <summary>
    /// The token ids of the given text, with the tokenizer of <paramref name="ck"/>'s architecture (GPT-2: the built-in
    /// BPE; the LLaMA family: the directory's tokenizer.json, opened only when text is to be encoded).
    /// </summary>
    public TokenText Resolve(ParseResult r, Checkpoint ck, bool foldBuiltIn = true)
    {
        if (r.GetValue(Tokens) is not null && r.GetValue(Text) is null && r.GetValue(TextFile) is null)
            return Resolve(r, ck.Traits.Vocab, null, ck.Directory, foldBuiltIn);
        var tokenizer = CliModels.Tokenizer(ck);
        try
        {
            return Resolve(r, ck.Traits.Vocab, tokenizer, ck.Directory, foldBuiltIn);
        }
        finally
        {
            (tokenizer as IDisposable)?.Dispose();
        }
    }

    /// <summary>The token ids of the given text with GPT-2's BPE (the GPT-2-only commands).</summary>
    public TokenText Resolve(ParseResult r, int vocab, bool foldBuiltIn = true) => Resolve(r, vocab, Gpt2TextTokenizer.Instance, null, foldBuiltIn);

    /// <summary>
    /// The token ids of the given text. With none given: the built-in paragraph; on a model whose vocabulary is smaller
    /// than the tokenizer's its ids are folded into it (id mod V) when <paramref name="foldBuiltIn"/>, and the description
    /// says so. Explicit text must fit the vocabulary. A null <paramref name="tokenizer"/> means the model has none
    /// (<paramref name="modelDirectory"/> is named in the error that asks for --tokens).
    /// </summary>
    public TokenText Resolve(ParseResult r, int vocab, ITextTokenizer? tokenizer, string? modelDirectory, bool foldBuiltIn = true)
    {
        string textName = r.GetResult(Text)?.IdentifierToken?.Value ?? "--text";
        string? text = r.GetValue(Text), file = r.GetValue(TextFile), list = r.GetValue(Tokens);
        var given = new List<string>();
        if (text is not null) given.Add(textName);
        if (file is not null) given.Add("--text-file");
        if (list is not null) given.Add("--tokens");
        if (given.Count > 1) throw new ArgumentException($"give one of {textName}, --text-file and --tokens, not {string.Join(" and ", given)}");

        if (list is not null)
        {
            var ids = Gpt2Tokenizer.ParseTokenList(list, vocab);
            return new TokenText(ids, $"{ids.Length} tokens from --tokens");
        }
        if (text is null && file is null && _required)
            throw new ArgumentException($"give the text with {string.Join("/", Text.Aliases.Prepend(Text.Name).Distinct())}, --text-file or --tokens");
        if (tokenizer is null)
            throw new ArgumentException($"{modelDirectory}: no {HfTokenizer.FileName} to encode text with; give token ids with --tokens (e.g. --tokens 1,2,3)");
        if (file is not null)
        {
            if (!System.IO.File.Exists(file)) throw new FileNotFoundException($"--text-file: {file} not found");
            return Encode(tokenizer, System.IO.File.ReadAllText(file), "--text-file", $"{Path.GetFileName(file)}", vocab);
        }
        if (text is not null) return Encode(tokenizer, text, textName, textName, vocab);

        var builtIn = tokenizer.Encode(Gpt2Tokenizer.BuiltInText);
        if (builtIn.All(id => id < vocab)) return new TokenText(builtIn, $"{builtIn.Length} tokens of the built-in text");
        if (!foldBuiltIn)
            throw new ArgumentException($"the built-in text has token ids beyond this model's vocabulary of {vocab}: give --tokens");
        return new TokenText(builtIn.Select(id => id % vocab).ToArray(),
            $"{builtIn.Length} tokens of the built-in text, ids folded into the vocabulary of {vocab} (id mod {vocab})");
    }

    private static TokenText Encode(ITextTokenizer tokenizer, string text, string option, string what, int vocab)
    {
        var ids = tokenizer.Encode(text);
        if (ids.Length == 0) throw new ArgumentException($"{option}: the text encodes to no tokens");
        foreach (int id in ids)
            if (id >= vocab) throw new ArgumentException($"{option}: token {id} of the text is outside this model's vocabulary of {vocab} (give --tokens)");
        return new TokenText(ids, $"{ids.Length} tokens of {what}", text);
    }
}
