using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>
/// GPT-2 ↔ the neutral view. GPT-2 stores Conv1D weights [in, out] (already the view's orientation) and fuses
/// Q | K | V into one c_attn [d, 3d] whose column block i·d_k … (i+1)·d_k of each third is head i; W_O = attn.c_proj
/// [d, d] has head i's rows at i·d_k. Every GPT-2 has G = H (multi-head), LayerNorm with biases, learned positions,
/// gelu_new and biases on every projection. Views read from storage are strided views (no copies).
/// </summary>
public sealed class Gpt2Adapter(Gpt2Config config) : IArchitecture
{
    public Gpt2Config Config { get; } = config;

    public string Name => "gpt2";

    public ModelTraits Traits { get; } = new()
    {
        Architecture = "gpt2",
        Layers = config.NLayer,
        Hidden = config.NEmbd,
        QueryHeads = config.NHead,
        KvHeads = config.NHead,
        HeadDim = config.HeadDim,
        Inner = config.NInner,
        Vocab = config.VocabSize,
        MaxPositions = config.NPositions,
        Norm = NormKind.LayerNorm,
        NormEps = config.LayerNormEpsilon,
        Positions = PositionKind.Learned,
        Mlp = MlpKind.GeluNew,
        QkvBias = true,
        OutBias = true,
        MlpBias = true,
        Tied = config.TieWordEmbeddings,
    };

    public string? OptionalPrefix => Gpt2Keys.Prefix;
    public string EmbeddingName => Gpt2Keys.Wte;
    public string HeadName => Gpt2Keys.LmHead;

    public IEnumerable<(string Name, long[] Shape)> Parameters() => Gpt2Keys.Parameters(Config);

    public IReadOnlyList<string> LayerNames(int layer) => Gpt2Keys.LayerSuffixes.Select(s => Gpt2Keys.Layer(layer, s)).ToArray();

    public IReadOnlyList<string> GlobalNames() => [Gpt2Keys.Wte, Gpt2Keys.Wpe, Gpt2Keys.LnFWeight, Gpt2Keys.LnFBias];

    /// <summary>The causal-mask buffers h.{l}.attn.bias and h.{l}.attn.masked_bias that some checkpoints store.</summary>
    public bool IsIgnoredBuffer(string name)
    {
        var parts = name.Split('.', 3);   // "h", layer, suffix
        return parts.Length == 3 && parts[0] == "h" && Gpt2Keys.BufferSuffixes.Contains(parts[2])
            && int.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int l)
            && l < Config.NLayer && parts[1] == l.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    public bool ResolveTied(bool headStored, bool headEqualsEmbedding, string where)
    {
        // A stored lm_head decides by its bytes (HF GPT-2 checkpoints often store a copy of wte).
        if (headStored) return headEqualsEmbedding;
        if (!Config.TieWordEmbeddings)
            throw new ModelFormatException($"{where}: config says tie_word_embeddings=false but there is no {Gpt2Keys.LmHead}");
        return true;
    }

    public LayerView ToView(int layer, Func<string, Tensor> stored)
    {
        Tensor S(string suffix) => stored(Gpt2Keys.Layer(layer, suffix));
        long d = Config.NEmbd, h = Config.NHead, dk = Config.HeadDim;
        var attnW = S("attn.c_attn.weight");     // [d, 3d]
        var attnB = S("attn.c_attn.bias");       // [3d]
        Tensor W(int part) => attnW.narrow(1, part * d, d).view(d, h, dk).permute(1, 0, 2);   // [h, d, dk]
        Tensor B(int part) => attnB.narrow(0, part * d, d).view(h, dk);                       // [h, dk]
        return new LayerView
        {
            Norm1 = new NormView { Gain = S("ln_1.weight"), Bias = S("ln_1.bias") },
            Q = W(0), QBias = B(0), K = W(1), KBias = B(1), V = W(2), VBias = B(2),
            O = S("attn.c_proj.weight").view(h, dk, d),   // [h, dk, d]
            OBias = S("attn.c_proj.bias"),
            Norm2 = new NormView { Gain = S("ln_2.weight"), Bias = S("ln_2.bias") },
            Up = S("mlp.c_fc.weight"), UpBias = S("mlp.c_fc.bias"),
            Down = S("mlp.c_proj.weight"), DownBias = S("mlp.c_proj.bias"),
        };
    }

    public IEnumerable<(string Name, Tensor Tensor)> FromView(int layer, LayerView v)
    {
        string N(string suffix) => Gpt2Keys.Layer(layer, suffix);
        long d = Config.NEmbd;
        yield return (N("ln_1.weight"), v.Norm1.Gain);
        yield return (N("ln_1.bias"), Required(v.Norm1.Bias, "ln_1.bias"));
        yield return (N("attn.c_attn.weight"), cat([Forward.Flat(v.Q), Forward.Flat(v.K), Forward.Flat(v.V)], 1));
        yield return (N("attn.c_attn.bias"), cat([Required(v.QBias, "q bias").reshape(-1), Required(v.KBias, "k bias").reshape(-1), Required(v.VBias, "v bias").reshape(-1)], 0));
        yield return (N("attn.c_proj.weight"), v.O.reshape(d, d));
        yield return (N("attn.c_proj.bias"), Required(v.OBias, "attn.c_proj.bias"));
        yield return (N("ln_2.weight"), v.Norm2.Gain);
        yield return (N("ln_2.bias"), Required(v.Norm2.Bias, "ln_2.bias"));
        yield return (N("mlp.c_fc.weight"), v.Up);
        yield return (N("mlp.c_fc.bias"), Required(v.UpBias, "mlp.c_fc.bias"));
        yield return (N("mlp.c_proj.weight"), v.Down);
        yield return (N("mlp.c_proj.bias"), Required(v.DownBias, "mlp.c_proj.bias"));
    }

    public GlobalView GlobalsToView(Func<string, Tensor> stored, bool tied) => new()
    {
        Embed = stored(Gpt2Keys.Wte),
        Positions = stored(Gpt2Keys.Wpe),
        FinalNorm = new NormView { Gain = stored(Gpt2Keys.LnFWeight), Bias = stored(Gpt2Keys.LnFBias) },
        Head = tied ? null : stored(Gpt2Keys.LmHead),
    };

    public IEnumerable<(string Name, Tensor Tensor)> GlobalsFromView(GlobalView g)
    {
        yield return (Gpt2Keys.Wte, g.Embed);
        yield return (Gpt2Keys.Wpe, Required(g.Positions, "wpe"));
        yield return (Gpt2Keys.LnFWeight, g.FinalNorm.Gain);
        yield return (Gpt2Keys.LnFBias, Required(g.FinalNorm.Bias, "ln_f.bias"));
        if (g.Head is not null) yield return (Gpt2Keys.LmHead, g.Head);
    }

    public JsonObject ExportConfig(JsonObject input, bool tied)
    {
        var c = (JsonObject)input.DeepClone();
        c["tie_word_embeddings"] = tied;
        return c;
    }

    private static Tensor Required(Tensor? t, string what) =>
        t ?? throw new ArgumentException($"a GPT-2 block needs its {what} (the view has none)");
}
