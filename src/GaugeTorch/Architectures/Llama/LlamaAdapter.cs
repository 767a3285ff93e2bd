using System.Text.Json.Nodes;
using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Llama;

/// <summary>
/// Llama / Qwen2 / Mistral ↔ the neutral view. Every projection is an <c>nn.Linear</c> stored [out, in] computing
/// x·Wᵀ + b, so the view (row vectors, [in, out]) holds transposed strided views: q_proj [H·hd, d] rows i·hd … are
/// query head i → Q[i] = rows(i)ᵀ [d, hd]; k_proj / v_proj likewise per KV head; o_proj [d, H·hd] columns i·hd … are
/// head i's output → O[i] = cols(i)ᵀ [hd, d]; gate/up [F, d] → [d, F]; down [d, F] → [F, d]. RMSNorms have gains only.
/// The head lm_head.weight [V, d] is already the view's [V, d]. Nothing is copied on the way in; <see cref="FromView"/>
/// transposes back, so a round trip reproduces the stored bytes exactly.
/// <para>
/// Tying: with tie_word_embeddings=true the head is the embedding, whether lm_head.weight is absent or a byte-equal
/// copy. A stored lm_head that differs from the embedding under tie_word_embeddings=true is an error: HF would tie
/// it away (the stored tensor is silently ignored there), so the file does not say which function it means. With
/// tie_word_embeddings=false the config decides: a stored head is untied even when it happens to equal the
/// embedding (they are separate parameters that HF trains separately), and a missing head is an error.
/// </para>
/// </summary>
public sealed class LlamaAdapter(LlamaConfig config) : IArchitecture, ILanguageModelFactory
{
    public LlamaConfig Config { get; } = config;

    public string Name => Config.ModelType;

    public ModelTraits Traits { get; } = new()
    {
        Architecture = config.ModelType,
        Layers = config.NumHiddenLayers,
        Hidden = config.HiddenSize,
        QueryHeads = config.NumAttentionHeads,
        KvHeads = config.NumKeyValueHeads,
        HeadDim = config.HeadDim,
        Inner = config.IntermediateSize,
        Vocab = config.VocabSize,
        MaxPositions = config.MaxPositionEmbeddings,
        Norm = NormKind.RmsNorm,
        NormEps = config.RmsNormEps,
        Positions = PositionKind.Rotary,
        Rope = config.Rope,
        Mlp = MlpKind.SwiGlu,
        QkvBias = config.QkvBias,
        OutBias = config.OutBias,
        MlpBias = config.MlpBias,
        Tied = config.TieWordEmbeddings,
    };

    /// <summary>None: LlamaForCausalLM keys always carry <c>model.</c> (part of <see cref="LlamaKeys"/>' names).</summary>
    public string? OptionalPrefix => null;
    public string EmbeddingName => LlamaKeys.Embed;
    public string HeadName => LlamaKeys.LmHead;

    public IEnumerable<(string Name, long[] Shape)> Parameters() => LlamaKeys.Parameters(Config);

    public IReadOnlyList<string> LayerNames(int layer) => LlamaKeys.LayerSuffixes(Config).Select(s => LlamaKeys.Layer(layer, s)).ToArray();

    public IReadOnlyList<string> GlobalNames() => [LlamaKeys.Embed, LlamaKeys.Norm];

    /// <summary>The rotary inv_freq buffers older checkpoints store (HF recomputes them from the config).</summary>
    public bool IsIgnoredBuffer(string name) => LlamaKeys.IsInvFreq(name, Config.NumHiddenLayers);

    public bool ResolveTied(bool headStored, bool headEqualsEmbedding, string where)
    {
        if (Config.TieWordEmbeddings)
        {
            if (headStored && !headEqualsEmbedding)
                throw new ModelFormatException($"{where}: config says tie_word_embeddings=true but {LlamaKeys.LmHead} differs from {LlamaKeys.Embed} " +
                                               "(HF would ignore the stored head); set tie_word_embeddings to false to use it, or remove it");
            return true;
        }
        if (!headStored) throw new ModelFormatException($"{where}: config says tie_word_embeddings=false but there is no {LlamaKeys.LmHead}");
        return false;
    }

    public LayerView ToView(int layer, Func<string, Tensor> stored)
    {
        Tensor S(string suffix) => stored(LlamaKeys.Layer(layer, suffix));
        Tensor? B(string suffix, bool present) => present ? S(suffix) : null;
        long d = Config.HiddenSize, h = Config.NumAttentionHeads, g = Config.NumKeyValueHeads, hd = Config.HeadDim;
        Tensor Heads(string p, long n) => S($"self_attn.{p}_proj.weight").view(n, hd, d).transpose(1, 2);   // [n, d, hd]
        Tensor? HeadBias(string p, long n) => B($"self_attn.{p}_proj.bias", Config.QkvBias)?.view(n, hd);  // [n, hd]
        return new LayerView
        {
            Norm1 = new NormView { Gain = S("input_layernorm.weight") },
            Q = Heads("q", h), QBias = HeadBias("q", h),
            K = Heads("k", g), KBias = HeadBias("k", g),
            V = Heads("v", g), VBias = HeadBias("v", g),
            O = S("self_attn.o_proj.weight").t().view(h, hd, d),                    // [H, hd, d]
            OBias = B("self_attn.o_proj.bias", Config.OutBias),
            Norm2 = new NormView { Gain = S("post_attention_layernorm.weight") },
            Gate = S("mlp.gate_proj.weight").t(), GateBias = B("mlp.gate_proj.bias", Config.MlpBias),   // [d, F]
            Up = S("mlp.up_proj.weight").t(), UpBias = B("mlp.up_proj.bias", Config.MlpBias),           // [d, F]
            Down = S("mlp.down_proj.weight").t(), DownBias = B("mlp.down_proj.bias", Config.MlpBias),   // [F, d]
        };
    }

    public IEnumerable<(string Name, Tensor Tensor)> FromView(int layer, LayerView v)
    {
        string N(string suffix) => LlamaKeys.Layer(layer, suffix);
        long d = Config.HiddenSize, hd = Config.HeadDim;
        Tensor Rows(Tensor heads) => heads.transpose(1, 2).reshape(heads.shape[0] * hd, d);   // [n, d, hd] → [n·hd, d]
        yield return (N("input_layernorm.weight"), v.Norm1.Gain);
        foreach (var (p, w, b) in new[] { ("q", v.Q, v.QBias), ("k", v.K, v.KBias), ("v", v.V, v.VBias) })
        {
            yield return (N($"self_attn.{p}_proj.weight"), Rows(w));
            if (Config.QkvBias) yield return (N($"self_attn.{p}_proj.bias"), Required(b, $"{p}_proj bias").reshape(-1));
        }
        yield return (N("self_attn.o_proj.weight"), v.O.reshape(v.O.shape[0] * hd, d).t());   // [d, H·hd]
        if (Config.OutBias) yield return (N("self_attn.o_proj.bias"), Required(v.OBias, "o_proj bias"));
        yield return (N("post_attention_layernorm.weight"), v.Norm2.Gain);
        yield return (N("mlp.gate_proj.weight"), Required(v.Gate, "gate_proj").t());
        if (Config.MlpBias) yield return (N("mlp.gate_proj.bias"), Required(v.GateBias, "gate_proj bias"));
        yield return (N("mlp.up_proj.weight"), v.Up.t());
        if (Config.MlpBias) yield return (N("mlp.up_proj.bias"), Required(v.UpBias, "up_proj bias"));
        yield return (N("mlp.down_proj.weight"), v.Down.t());
        if (Config.MlpBias) yield return (N("mlp.down_proj.bias"), Required(v.DownBias, "down_proj bias"));
    }

    public GlobalView GlobalsToView(Func<string, Tensor> stored, bool tied) => new()
    {
        Embed = stored(LlamaKeys.Embed),
        Positions = null,
        FinalNorm = new NormView { Gain = stored(LlamaKeys.Norm) },
        Head = tied ? null : stored(LlamaKeys.LmHead),
    };

    public IEnumerable<(string Name, Tensor Tensor)> GlobalsFromView(GlobalView g)
    {
        yield return (LlamaKeys.Embed, g.Embed);
        yield return (LlamaKeys.Norm, g.FinalNorm.Gain);
        if (g.Head is not null) yield return (LlamaKeys.LmHead, g.Head);
    }

    public JsonObject ExportConfig(JsonObject input, bool tied)
    {
        var c = (JsonObject)input.DeepClone();
        c["tie_word_embeddings"] = tied;
        return c;
    }

    /// <summary>Sequences up to this length are computed exactly as HF does (see <see cref="LlamaConfig.ContextLength"/>).</summary>
    public int ContextLength => Config.ContextLength;

    public ICausalLanguageModel LoadModel(Checkpoint ck, ScalarType dtype, Device? device = null, IProgress<(long Done, long Total)>? progress = null) =>
        LlamaModel.Load(ck, dtype, device, progress);

    private Tensor Required(Tensor? t, string what) =>
        t ?? throw new ArgumentException($"a {Config.ModelType} block with these biases needs its {what} (the view has none)");
}
