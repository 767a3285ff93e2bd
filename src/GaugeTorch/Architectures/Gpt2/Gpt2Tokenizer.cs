using SharpToken;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>GPT-2's byte-level BPE (tiktoken's r50k_base, via SharpToken).</summary>
public static class Gpt2Tokenizer
{
    private static readonly Lazy<GptEncoding> Encoding = new(() => GptEncoding.GetEncoding("r50k_base"));

    public const int EndOfText = 50256;

    public static int[] Encode(string text) => Encoding.Value.Encode(text).ToArray();

    public static string Decode(IEnumerable<int> tokens) => Encoding.Value.Decode(tokens.ToList());

    /// <summary>Parses "1,2,3" into token ids, checking each against the vocabulary size.</summary>
    public static int[] ParseTokenList(string list, int vocabSize)
    {
        var parts = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new ArgumentException("--tokens: empty token list");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], out ids[i])) throw new ArgumentException($"--tokens: '{parts[i]}' is not an integer");
            if (ids[i] < 0 || ids[i] >= vocabSize) throw new ArgumentException($"--tokens: token {ids[i]} is outside the vocabulary [0, {vocabSize})");
        }
        return ids;
    }

    /// <summary>A fixed paragraph used when a command is given no text.</summary>
    public const string BuiltInText =
        "The laws of physics are the same in every reference frame, and a gauge symmetry is a redundancy in how we " +
        "describe a system rather than a property of the system itself. In a transformer, many different sets of " +
        "weights compute exactly the same function: the heads can be reordered, the bases of their query, key and " +
        "value spaces can be changed, and biases can be moved between layers without changing a single prediction.";
}
