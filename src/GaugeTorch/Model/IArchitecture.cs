using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>
/// The adapter of one architecture: the only code that knows tensor names, fused or split storage and [in, out]
/// versus [out, in]. It maps a checkpoint's stored tensors to the neutral <see cref="LayerView"/> /
/// <see cref="GlobalView"/> and back. Everything else (symmetry families, canonical forms, evaluators, the audit,
/// alignment) works on views and <see cref="ModelTraits"/> only. Names here are unprefixed (a checkpoint may store
/// them under <see cref="OptionalPrefix"/>).
/// </summary>
public interface IArchitecture
{
    /// <summary>The config's model_type (gpt2, llama, qwen2, mistral).</summary>
    string Name { get; }

    /// <summary>Traits as the config states them; <see cref="ModelTraits.Tied"/> is the config's tie flag (a checkpoint refines it).</summary>
    ModelTraits Traits { get; }

    /// <summary>A prefix some checkpoints put before every name except the head (GPT-2: "transformer."), or null.</summary>
    string? OptionalPrefix { get; }

    /// <summary>The embedding's name (the tied head's storage).</summary>
    string EmbeddingName { get; }

    /// <summary>The untied head's name (never prefixed), e.g. lm_head.weight.</summary>
    string HeadName { get; }

    /// <summary>Every parameter except the untied head, with its stored shape, globals and layers in forward order.</summary>
    IEnumerable<(string Name, long[] Shape)> Parameters();

    /// <summary>The stored names of layer <paramref name="layer"/>'s parameters, in a fixed order.</summary>
    IReadOnlyList<string> LayerNames(int layer);

    /// <summary>The stored names of the global parameters (no head).</summary>
    IReadOnlyList<string> GlobalNames();

    /// <summary>True for a stored tensor that is not a parameter and is ignored (GPT-2 mask buffers, rotary inv_freq).</summary>
    bool IsIgnoredBuffer(string name);

    /// <summary>
    /// Whether the head is tied, from what the checkpoint stores. <paramref name="headStored"/>: the head tensor is
    /// present; <paramref name="headEqualsEmbedding"/>: it is byte-equal to the embedding. Throws (naming
    /// <paramref name="where"/>) when the config and the stored tensors contradict each other.
    /// </summary>
    bool ResolveTied(bool headStored, bool headEqualsEmbedding, string where);

    /// <summary>
    /// Layer <paramref name="layer"/> as a view. <paramref name="stored"/> returns a stored tensor by name (any dtype);
    /// the view may hold strided views of those tensors (no copies).
    /// </summary>
    LayerView ToView(int layer, Func<string, Tensor> stored);

    /// <summary>The stored tensors (name, tensor in the stored layout, the view's dtype) of a view of layer <paramref name="layer"/>.</summary>
    IEnumerable<(string Name, Tensor Tensor)> FromView(int layer, LayerView view);

    /// <summary>The globals as a view; <paramref name="tied"/> leaves <see cref="GlobalView.Head"/> null.</summary>
    GlobalView GlobalsToView(Func<string, Tensor> stored, bool tied);

    /// <summary>The stored global tensors of a view, the head (under <see cref="HeadName"/>) when it is non-null.</summary>
    IEnumerable<(string Name, Tensor Tensor)> GlobalsFromView(GlobalView view);

    /// <summary>The config.json of an export derived from <paramref name="input"/>, with the head tied or not.</summary>
    JsonObject ExportConfig(JsonObject input, bool tied);
}

/// <summary>Turns text into token ids and back.</summary>
public interface ITextTokenizer
{
    int[] Encode(string text);
    string Decode(IEnumerable<int> tokens);
}
