using System.Globalization;

namespace GaugeTorch.Architectures.Llama;

/// <summary>
/// The checkpoint key names of HuggingFace <c>LlamaForCausalLM</c> / <c>Qwen2ForCausalLM</c> / <c>MistralForCausalLM</c>
/// (GAUGE.md §6.1). Every projection is an <c>nn.Linear</c> stored [out, in]; names carry the <c>model.</c> prefix
/// except the untied head.
/// </summary>
public static class LlamaKeys
{
    public const string Embed = "model.embed_tokens.weight";   // [V, d]
    public const string Norm = "model.norm.weight";            // [d]
    public const string LmHead = "lm_head.weight";             // [V, d]

    /// <summary>Old checkpoints store each layer's rotary frequencies: model.layers.l.self_attn.rotary_emb.inv_freq [hd/2].</summary>
    public const string InvFreqSuffix = "self_attn.rotary_emb.inv_freq";

    public static string Layer(int l, string suffix) => $"model.layers.{l.ToString(CultureInfo.InvariantCulture)}.{suffix}";

    /// <summary>Per-layer parameter suffixes present in <paramref name="c"/>, in forward order (the adapter's LayerNames order).</summary>
    public static IEnumerable<string> LayerSuffixes(LlamaConfig c)
    {
        yield return "input_layernorm.weight";
        foreach (var p in new[] { "q", "k", "v" })
        {
            yield return $"self_attn.{p}_proj.weight";
            if (c.QkvBias) yield return $"self_attn.{p}_proj.bias";
        }
        yield return "self_attn.o_proj.weight";
        if (c.OutBias) yield return "self_attn.o_proj.bias";
        yield return "post_attention_layernorm.weight";
        foreach (var p in new[] { "gate", "up", "down" })
        {
            yield return $"mlp.{p}_proj.weight";
            if (c.MlpBias) yield return $"mlp.{p}_proj.bias";
        }
    }

    /// <summary>The stored shape of a layer tensor.</summary>
    public static long[] LayerShape(LlamaConfig c, string suffix)
    {
        long d = c.HiddenSize, f = c.IntermediateSize, q = (long)c.NumAttentionHeads * c.HeadDim, kv = (long)c.NumKeyValueHeads * c.HeadDim;
        return suffix switch
        {
            "input_layernorm.weight" or "post_attention_layernorm.weight" or "self_attn.o_proj.bias" or "mlp.down_proj.bias" => [d],
            "self_attn.q_proj.weight" => [q, d],
            "self_attn.q_proj.bias" => [q],
            "self_attn.k_proj.weight" or "self_attn.v_proj.weight" => [kv, d],
            "self_attn.k_proj.bias" or "self_attn.v_proj.bias" => [kv],
            "self_attn.o_proj.weight" => [d, q],
            "mlp.gate_proj.weight" or "mlp.up_proj.weight" => [f, d],
            "mlp.gate_proj.bias" or "mlp.up_proj.bias" => [f],
            "mlp.down_proj.weight" => [d, f],
            InvFreqSuffix => [c.HeadDim / 2],
            _ => throw new ArgumentException($"unknown layer tensor '{suffix}'"),
        };
    }

    /// <summary>Every parameter except the untied head, with its stored shape: embedding, layers in order, final norm.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Parameters(LlamaConfig c)
    {
        yield return (Embed, [c.VocabSize, c.HiddenSize]);
        for (int l = 0; l < c.NumHiddenLayers; l++)
            foreach (var s in LayerSuffixes(c)) yield return (Layer(l, s), LayerShape(c, s));
        yield return (Norm, [c.HiddenSize]);
    }

    /// <summary>True for model.layers.l.self_attn.rotary_emb.inv_freq (l &lt; L, canonical spelling) and model.rotary_emb.inv_freq.</summary>
    public static bool IsInvFreq(string name, int layers)
    {
        if (name == "model.rotary_emb.inv_freq") return true;
        const string head = "model.layers.";
        if (!name.StartsWith(head, StringComparison.Ordinal) || !name.EndsWith("." + InvFreqSuffix, StringComparison.Ordinal)) return false;
        string num = name[head.Length..^(InvFreqSuffix.Length + 1)];
        return int.TryParse(num, NumberStyles.None, CultureInfo.InvariantCulture, out int l) && l < layers
            && num == l.ToString(CultureInfo.InvariantCulture);
    }
}
