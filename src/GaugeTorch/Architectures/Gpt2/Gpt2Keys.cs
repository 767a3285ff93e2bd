namespace GaugeTorch.Architectures.Gpt2;

/// <summary>
/// The checkpoint key names of HuggingFace GPT-2, without the optional <c>transformer.</c> prefix.
/// Conv1D weights are stored [in, out].
/// </summary>
public static class Gpt2Keys
{
    public const string Prefix = "transformer.";
    public const string Wte = "wte.weight";        // [V, d]
    public const string Wpe = "wpe.weight";        // [P, d]
    public const string LnFWeight = "ln_f.weight"; // [d]
    public const string LnFBias = "ln_f.bias";     // [d]
    public const string LmHead = "lm_head.weight"; // [V, d], never prefixed

    /// <summary>Per-layer parameter suffixes, in forward order.</summary>
    public static readonly string[] LayerSuffixes =
    [
        "ln_1.weight", "ln_1.bias",                   // [d]
        "attn.c_attn.weight", "attn.c_attn.bias",     // [d, 3d], [3d]
        "attn.c_proj.weight", "attn.c_proj.bias",     // [d, d], [d]
        "ln_2.weight", "ln_2.bias",                   // [d]
        "mlp.c_fc.weight", "mlp.c_fc.bias",           // [d, F], [F]
        "mlp.c_proj.weight", "mlp.c_proj.bias",       // [F, d], [d]
    ];

    /// <summary>Causal-mask buffers that some checkpoints store; not parameters.</summary>
    public static readonly string[] BufferSuffixes = ["attn.bias", "attn.masked_bias"];

    public static string Layer(int l, string suffix) => $"h.{l}.{suffix}";

    public static long[] LayerShape(Gpt2Config c, string suffix)
    {
        long d = c.NEmbd, f = c.NInner;
        return suffix switch
        {
            "ln_1.weight" or "ln_1.bias" or "ln_2.weight" or "ln_2.bias" or "attn.c_proj.bias" or "mlp.c_proj.bias" => [d],
            "attn.c_attn.weight" => [d, 3 * d],
            "attn.c_attn.bias" => [3 * d],
            "attn.c_proj.weight" => [d, d],
            "mlp.c_fc.weight" => [d, f],
            "mlp.c_fc.bias" => [f],
            "mlp.c_proj.weight" => [f, d],
            _ => throw new ArgumentException($"unknown layer tensor '{suffix}'"),
        };
    }

    /// <summary>Every parameter of the tied model with its shape (no prefix, no lm_head, no buffers), in forward order.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Parameters(Gpt2Config c)
    {
        yield return (Wte, [c.VocabSize, c.NEmbd]);
        yield return (Wpe, [c.NPositions, c.NEmbd]);
        for (int l = 0; l < c.NLayer; l++)
            foreach (var s in LayerSuffixes) yield return (Layer(l, s), LayerShape(c, s));
        yield return (LnFWeight, [c.NEmbd]);
        yield return (LnFBias, [c.NEmbd]);
    }

    /// <summary>The shapes HuggingFace uses for the mask buffers (attn.bias [1,1,P,P] bool/u8, masked_bias scalar).</summary>
    public static long[] BufferShape(Gpt2Config c, string suffix) =>
        suffix == "attn.bias" ? [1, 1, c.NPositions, c.NPositions] : [];
}
