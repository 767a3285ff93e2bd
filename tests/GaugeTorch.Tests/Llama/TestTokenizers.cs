namespace GaugeTorch.Tests.Llama;

/// <summary>tokenizer.json files written by the tests (HF tokenizers' serialization format), small enough to reason about.</summary>
internal static class TestTokenizers
{
    /// <summary>
    /// A byte-level BPE as Llama 3 and Qwen2 use (ByteLevel pre-tokenizer and decoder, a BOS added by a
    /// TemplateProcessing post-processor): "hello world" → &lt;s&gt; hello Ġw o r l d = [0, 12, 13, 4, 7, 3, 8].
    /// </summary>
    public const string ByteLevelBpe = """
    {
      "version": "1.0",
      "truncation": null,
      "padding": null,
      "added_tokens": [
        {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
      },
      "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
      "model": {
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
        "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {"<s>": 0, "h": 1, "e": 2, "l": 3, "o": 4, "Ġ": 5, "w": 6, "r": 7, "d": 8, "he": 9, "ll": 10, "hell": 11, "hello": 12, "Ġw": 13},
        "merges": ["h e", "l l", "he ll", "hell o", "Ġ w"]
      }
    }
    """;

    public static readonly int[] HelloWorld = [0, 12, 13, 4, 7, 3, 8];

    /// <summary>A word-level model with whitespace splitting and an unknown token; decoding joins words with spaces.</summary>
    public const string WordLevel = """
    {
      "version": "1.0",
      "truncation": null,
      "padding": null,
      "added_tokens": [
        {"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": {"type": "Lowercase"},
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null,
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5}, "unk_token": "[UNK]"}
    }
    """;

    /// <summary>
    /// A SentencePiece-style BPE as Llama 2 and Mistral use (Metaspace "▁" pre-tokenizer and decoder, BOS added):
    /// "hello world" → &lt;s&gt; ▁hello ▁world = [0, 13, 18]. Its decoder strips the leading "▁" of the first token, so a
    /// continuation decoded on its own loses its space: why generate decodes the whole sequence.
    /// </summary>
    public const string MetaspaceBpe = """
    {"version": "1.0", "truncation": null, "padding": null,
     "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
     "normalizer": null,
     "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
     "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
     "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
     "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
       "vocab": {"<s>": 0, "▁": 1, "h": 2, "e": 3, "l": 4, "o": 5, "w": 6, "r": 7, "d": 8, "▁h": 9, "▁he": 10, "▁hel": 11, "▁hell": 12, "▁hello": 13, "▁w": 14, "▁wo": 15, "▁wor": 16, "▁worl": 17, "▁world": 18},
       "merges": ["▁ h", "▁h e", "▁he l", "▁hel l", "▁hell o", "▁ w", "▁w o", "▁wo r", "▁wor l", "▁worl d"]}}
    """;

    /// <summary>A word-level tokenizer.json whose words "w0" … "w{n−1}" are the ids 0 … n−1 (every model id decodes to a word).</summary>
    public static string Words(int n) =>
        "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": [], \"normalizer\": null, " +
        "\"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}, \"post_processor\": null, \"decoder\": null, " +
        "\"model\": {\"type\": \"WordLevel\", \"unk_token\": \"w0\", \"vocab\": {" +
        string.Join(", ", Enumerable.Range(0, n).Select(i => $"\"w{i}\": {i}")) + "}}}";

    public static string Write(string dir, string json)
    {
        string p = Path.Combine(dir, "tokenizer.json");
        File.WriteAllText(p, json);
        return p;
    }
}
