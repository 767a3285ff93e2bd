using GaugeTorch.Model;

namespace GaugeTorch.Text;

/// <summary>
/// A HuggingFace <c>tokenizer.json</c> (normalizer, pre-tokenizer, BPE / WordLevel / Unigram model, post-processor,
/// decoder), run by the HuggingFace tokenizers library itself through Tokenizers.DotNet (a maintained wrapper of the
/// Rust crate with a native linux-x64 runtime), so token ids match what transformers' fast tokenizers produce, with no
/// tokenizer logic of our own. <see cref="Encode"/> adds the special tokens the post-processor defines (Llama's BOS),
/// as HF's <c>tokenizer(text)</c> does; <see cref="Decode"/> skips special tokens.
/// </summary>
public sealed class HfTokenizer : ITextTokenizer, IDisposable
{
    public const string FileName = "tokenizer.json";

    private readonly Tokenizers.DotNet.Tokenizer _tokenizer;

    public string Path { get; }

    private HfTokenizer(string path, Tokenizers.DotNet.Tokenizer t)
    {
        Path = path;
        _tokenizer = t;
    }

    /// <summary>The tokenizer.json of a model directory, or null when there is none.</summary>
    public static string? Find(string modelDirectory)
    {
        string p = System.IO.Path.Combine(modelDirectory, FileName);
        return File.Exists(p) ? p : null;
    }

    /// <summary>Loads a tokenizer.json; any problem is one error naming the file.</summary>
    public static HfTokenizer Open(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full)) throw new FileNotFoundException($"{full}: tokenizer file not found");
        try
        {
            return new HfTokenizer(full, new Tokenizers.DotNet.Tokenizer(vocabPath: full));
        }
        catch (Tokenizers.DotNet.TokenizerException e)
        {
            throw new ModelFormatException($"{full}: not a tokenizer the HuggingFace tokenizers library can load ({e.Message})");
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            throw new ModelFormatException($"{full}: the native HuggingFace tokenizers runtime (libhf_tokenizers) could not be loaded ({e.Message})");
        }
    }

    public int[] Encode(string text)
    {
        try
        {
            return _tokenizer.Encode(text).Select(u => checked((int)u)).ToArray();
        }
        catch (Tokenizers.DotNet.TokenizerException e)
        {
            throw new ModelFormatException($"{Path}: cannot encode the text ({e.Message})");
        }
    }

    public string Decode(IEnumerable<int> tokens)
    {
        var ids = tokens.Select(t => t >= 0 ? (uint)t : throw new ArgumentException($"token {t} is negative")).ToArray();
        try
        {
            return _tokenizer.Decode(ids);
        }
        catch (Tokenizers.DotNet.TokenizerException e)
        {
            throw new ModelFormatException($"{Path}: cannot decode the tokens ({e.Message})");
        }
    }

    public void Dispose() => _tokenizer.Dispose();
}
