using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;

namespace GaugeTorch.Text;

/// <summary>GPT-2's built-in byte-level BPE (<see cref="Gpt2Tokenizer"/>) behind the neutral <see cref="ITextTokenizer"/>.</summary>
public sealed class Gpt2TextTokenizer : ITextTokenizer
{
    public static readonly Gpt2TextTokenizer Instance = new();

    public int[] Encode(string text) => Gpt2Tokenizer.Encode(text);

    public string Decode(IEnumerable<int> tokens) => Gpt2Tokenizer.Decode(tokens);
}
