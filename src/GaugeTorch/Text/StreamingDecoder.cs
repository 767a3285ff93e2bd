using GaugeTorch.Model;

namespace GaugeTorch.Text;

/// <summary>
/// Turns generated token ids into text as they arrive, for streaming to a terminal. A token can end in the middle
/// of a UTF-8 character (byte-level BPE), so trailing replacement characters are held back until the next token
/// completes them. Decoding happens after <paramref name="context"/> (the prompt's ids): SentencePiece-style
/// decoders drop the leading space of a continuation decoded on its own, so the new text is the decoded
/// context + continuation minus the decoded context.
/// </summary>
public sealed class StreamingDecoder(ITextTokenizer tokenizer, IReadOnlyList<int>? context = null)
{
    private readonly List<int> _ids = context is null ? [] : [.. context];
    private readonly int _skip = context is null || context.Count == 0 ? 0 : tokenizer.Decode(context).Length;
    private int _emitted;

    /// <summary>Adds a token; returns the text that is now final (possibly empty).</summary>
    public string Add(int id)
    {
        _ids.Add(id);
        string text = Text();
        int end = text.Length;
        while (end > _emitted && text[end - 1] == '\uFFFD') end--;
        if (end <= _emitted) return "";
        string piece = text[_emitted..end];
        _emitted = end;
        return piece;
    }

    /// <summary>The rest, held-back replacement characters included.</summary>
    public string Flush()
    {
        string text = Text();
        string rest = text.Length > _emitted ? text[_emitted..] : "";
        _emitted = text.Length;
        return rest;
    }

    private string Text()
    {
        string all = tokenizer.Decode(_ids);
        return all.Length >= _skip ? all[_skip..] : all;
    }
}
