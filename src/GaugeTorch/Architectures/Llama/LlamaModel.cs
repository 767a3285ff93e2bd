using GaugeTorch.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Llama;

// Module names equal the HuggingFace checkpoint keys (nanoGPT style): named_parameters() yields
// "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", ..., "lm_head.weight", so loading is a
// name-for-name copy. Parameters are created uninitialized (torch.empty): they are always filled from a checkpoint.
// The modules hold parameters only; the math is Model.Forward, run on views of these parameters.

/// <summary>nn.Linear as stored: weight [out, in] (y = x·Wᵀ + b), bias [out] when the config has one.</summary>
public sealed class LlamaLinear : nn.Module
{
    public Parameter weight;  // [out, in]
    public Parameter? bias;   // [out]

    public LlamaLinear(long nIn, long nOut, bool hasBias, ScalarType dtype, Device device) : base("Linear")
    {
        weight = new Parameter(empty([nOut, nIn], dtype, device), requires_grad: false);
        bias = hasBias ? new Parameter(empty([nOut], dtype, device), requires_grad: false) : null;
        RegisterComponents();
    }
}

/// <summary>RMSNorm: gain only.</summary>
public sealed class LlamaRmsNorm : nn.Module
{
    public Parameter weight;  // [d]

    public LlamaRmsNorm(long d, ScalarType dtype, Device device) : base("RMSNorm")
    {
        weight = new Parameter(empty([d], dtype, device), requires_grad: false);
        RegisterComponents();
    }
}

public sealed class LlamaEmbedding : nn.Module
{
    public Parameter weight;  // [V, d]

    public LlamaEmbedding(long v, long d, ScalarType dtype, Device device) : base("Embedding")
    {
        weight = new Parameter(empty([v, d], dtype, device), requires_grad: false);
        RegisterComponents();
    }
}

public sealed class LlamaAttention : nn.Module
{
    public LlamaLinear q_proj;  // [H·hd, d]
    public LlamaLinear k_proj;  // [G·hd, d]
    public LlamaLinear v_proj;  // [G·hd, d]
    public LlamaLinear o_proj;  // [d, H·hd]

    public LlamaAttention(LlamaConfig c, ScalarType dtype, Device device) : base("Attention")
    {
        long d = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDim, kv = (long)c.NumKeyValueHeads * c.HeadDim;
        q_proj = new LlamaLinear(d, q, c.QkvBias, dtype, device);
        k_proj = new LlamaLinear(d, kv, c.QkvBias, dtype, device);
        v_proj = new LlamaLinear(d, kv, c.QkvBias, dtype, device);
        o_proj = new LlamaLinear(q, d, c.OutBias, dtype, device);
        RegisterComponents();
    }
}

public sealed class LlamaMlp : nn.Module
{
    public LlamaLinear gate_proj;  // [F, d]
    public LlamaLinear up_proj;    // [F, d]
    public LlamaLinear down_proj;  // [d, F]

    public LlamaMlp(LlamaConfig c, ScalarType dtype, Device device) : base("MLP")
    {
        gate_proj = new LlamaLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device);
        up_proj = new LlamaLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device);
        down_proj = new LlamaLinear(c.IntermediateSize, c.HiddenSize, c.MlpBias, dtype, device);
        RegisterComponents();
    }
}

public sealed class LlamaDecoderLayer : nn.Module
{
    public LlamaRmsNorm input_layernorm;           // [d]
    public LlamaAttention self_attn;
    public LlamaRmsNorm post_attention_layernorm;  // [d]
    public LlamaMlp mlp;

    public LlamaDecoderLayer(LlamaConfig c, ScalarType dtype, Device device) : base("DecoderLayer")
    {
        input_layernorm = new LlamaRmsNorm(c.HiddenSize, dtype, device);
        self_attn = new LlamaAttention(c, dtype, device);
        post_attention_layernorm = new LlamaRmsNorm(c.HiddenSize, dtype, device);
        mlp = new LlamaMlp(c, dtype, device);
        RegisterComponents();
    }
}

/// <summary>HF's inner <c>LlamaModel</c> (the <c>model.</c> part of the keys): embedding, layers, final norm.</summary>
public sealed class LlamaBackbone : nn.Module
{
    public LlamaEmbedding embed_tokens;          // [V, d]
    public ModuleList<LlamaDecoderLayer> layers;
    public LlamaRmsNorm norm;                    // [d]

    public LlamaBackbone(LlamaConfig c, ScalarType dtype, Device device) : base("Backbone")
    {
        embed_tokens = new LlamaEmbedding(c.VocabSize, c.HiddenSize, dtype, device);
        layers = new ModuleList<LlamaDecoderLayer>(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new LlamaDecoderLayer(c, dtype, device)).ToArray());
        norm = new LlamaRmsNorm(c.HiddenSize, dtype, device);
        RegisterComponents();
    }
}

/// <summary>
/// <c>LlamaForCausalLM</c> / <c>Qwen2ForCausalLM</c> / <c>MistralForCausalLM</c> as a TorchSharp module in float64 or
/// float32 (CPU, or CUDA in a CUDA build). Its forward builds <see cref="LayerView"/>s of its own parameters through
/// <see cref="LlamaAdapter.ToView"/> (strided views, no copies) and runs <see cref="Forward.Logits"/>: the one
/// definition of the math, shared with the streaming evaluators. The head is embed_tokens when tied.
/// </summary>
public sealed class LlamaModel : nn.Module<Tensor, Tensor>, ICausalLanguageModel
{
    public LlamaBackbone model;
    public LlamaLinear? lm_head;     // [V, d] (nn.Linear(d, V), no bias), untied only

    public LlamaConfig Config { get; }
    public ScalarType ComputeType { get; }
    public bool Tied => lm_head is null;

    private readonly LlamaAdapter _adapter;
    private readonly Dictionary<string, Parameter> _byName;

    public LlamaModel(LlamaConfig c, ScalarType dtype, Device? device = null, bool untied = false) : base("LlamaForCausalLM")
    {
        device ??= CPU;
        Config = c;
        ComputeType = dtype;
        _adapter = new LlamaAdapter(c);
        model = new LlamaBackbone(c, dtype, device);
        lm_head = untied ? new LlamaLinear(c.HiddenSize, c.VocabSize, hasBias: false, dtype, device) : null;
        RegisterComponents();
        _byName = named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
    }

    /// <summary>Layer <paramref name="l"/> as a view of this module's parameters (fresh view handles; the parameters are never disposed through it).</summary>
    public LayerView LayerView(int l) => _adapter.ToView(l, n => _byName[n].alias());

    public GlobalView GlobalView() => _adapter.GlobalsToView(n => _byName[n].alias(), Tied);

    /// <summary>tokens [T] (int64) → logits [T, V].</summary>
    public override Tensor forward(Tensor tokens)
    {
        if (tokens.dim() != 1) throw new ArgumentException("tokens must be a 1-D tensor [T]");
        if (tokens.shape[0] > Config.ContextLength)
            throw new ArgumentException($"{tokens.shape[0]} tokens exceed the model's {Config.ContextLength} positions" +
                                        (Config.SlidingWindow is not null ? " (sliding window)" : ""));
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var layers = Enumerable.Range(0, Config.NumHiddenLayers).Select(LayerView).ToList();
        return Forward.Logits(tokens, layers, GlobalView(), _adapter.Traits with { Tied = Tied }).MoveToOuterDisposeScope();
    }

    public Tensor Logits(IReadOnlyList<int> tokens)
    {
        using var t = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        return forward(t);
    }

    public int MaxNewTokens(int promptLength) => Math.Max(0, Config.ContextLength - promptLength);

    /// <summary>
    /// Greedy continuation. Each step recomputes the whole sequence (no key/value cache yet for this family: a step
    /// costs a full forward of the sequence so far), inside its own dispose scope, so memory stays at the model plus one
    /// forward's activations.
    /// </summary>
    public IEnumerable<int> GenerateGreedy(IReadOnlyList<int> prompt, int maxNew)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt has no tokens");
        if (prompt.Count > Config.ContextLength) throw new ArgumentException($"the prompt's {prompt.Count} tokens exceed the model's {Config.ContextLength} positions");
        if (maxNew < 0) throw new ArgumentException($"{maxNew} new tokens is negative");
        return Generate(prompt.ToList(), Math.Min(maxNew, MaxNewTokens(prompt.Count)));
    }

    private IEnumerable<int> Generate(List<int> ids, int count)
    {
        for (int i = 0; i < count; i++)
        {
            int next;
            using (var scope = NewDisposeScope())
            {
                var logits = Logits(ids);
                next = (int)logits[-1].argmax().item<long>();
            }
            ids.Add(next);
            yield return next;
        }
    }

    /// <summary>Loads every parameter name for name from an opened llama/qwen2/mistral checkpoint, converting to <paramref name="dtype"/>.</summary>
    public static LlamaModel Load(Checkpoint ck, ScalarType dtype, Device? device = null, IProgress<(long Done, long Total)>? progress = null)
    {
        if (ck.Architecture is not LlamaAdapter a) throw new ArgumentException($"{ck.Directory}: not a llama, qwen2 or mistral checkpoint ({ck.Architecture.Name})");
        return LanguageModels.FillParameters(new LlamaModel(a.Config, dtype, device, untied: !ck.Tied), ck, dtype, progress);
    }
}
