using GaugeTorch.SafeTensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Gpt2;

// Module names equal the HuggingFace checkpoint keys (nanoGPT style): named_parameters() yields
// "wte.weight", "h.0.attn.c_attn.weight", ... so loading is a name-for-name copy. Parameters are created
// uninitialized (torch.empty) because they are always filled from a checkpoint.

/// <summary>GPT-2's Conv1D: y = x·W + b with W stored [in, out].</summary>
public sealed class Conv1D : nn.Module
{
    public Parameter weight; // [in, out]
    public Parameter bias;   // [out]

    public Conv1D(long nIn, long nOut, ScalarType dtype, Device device) : base("Conv1D")
    {
        weight = new Parameter(empty([nIn, nOut], dtype, device), requires_grad: false);
        bias = new Parameter(empty([nOut], dtype, device), requires_grad: false);
        RegisterComponents();
    }
}

public sealed class Gpt2LayerNorm : nn.Module
{
    public Parameter weight; // [d]
    public Parameter bias;   // [d]

    public Gpt2LayerNorm(long d, ScalarType dtype, Device device) : base("LayerNorm")
    {
        weight = new Parameter(empty([d], dtype, device), requires_grad: false);
        bias = new Parameter(empty([d], dtype, device), requires_grad: false);
        RegisterComponents();
    }
}

public sealed class Gpt2Embedding : nn.Module
{
    public Parameter weight; // [n, d]

    public Gpt2Embedding(long n, long d, ScalarType dtype, Device device) : base("Embedding")
    {
        weight = new Parameter(empty([n, d], dtype, device), requires_grad: false);
        RegisterComponents();
    }
}

public sealed class Gpt2Attention : nn.Module
{
    public Conv1D c_attn; // [d, 3d]
    public Conv1D c_proj; // [d, d]

    public Gpt2Attention(Gpt2Config c, ScalarType dtype, Device device) : base("Attention")
    {
        c_attn = new Conv1D(c.NEmbd, 3L * c.NEmbd, dtype, device);
        c_proj = new Conv1D(c.NEmbd, c.NEmbd, dtype, device);
        RegisterComponents();
    }
}

public sealed class Gpt2Mlp : nn.Module
{
    public Conv1D c_fc;   // [d, F]
    public Conv1D c_proj; // [F, d]

    public Gpt2Mlp(Gpt2Config c, ScalarType dtype, Device device) : base("MLP")
    {
        c_fc = new Conv1D(c.NEmbd, c.NInner, dtype, device);
        c_proj = new Conv1D(c.NInner, c.NEmbd, dtype, device);
        RegisterComponents();
    }
}

public sealed class Gpt2Block : nn.Module<Tensor, Tensor>
{
    public Gpt2LayerNorm ln_1;
    public Gpt2Attention attn;
    public Gpt2LayerNorm ln_2;
    public Gpt2Mlp mlp;
    private readonly Gpt2Config _config;

    public Gpt2Block(Gpt2Config c, ScalarType dtype, Device device) : base("Block")
    {
        _config = c;
        ln_1 = new Gpt2LayerNorm(c.NEmbd, dtype, device);
        attn = new Gpt2Attention(c, dtype, device);
        ln_2 = new Gpt2LayerNorm(c.NEmbd, dtype, device);
        mlp = new Gpt2Mlp(c, dtype, device);
        RegisterComponents();
    }

    /// <summary>A view of this block's parameters (not copies).</summary>
    public LayerWeights Weights => new()
    {
        Ln1W = ln_1.weight, Ln1B = ln_1.bias,
        AttnW = attn.c_attn.weight, AttnB = attn.c_attn.bias,
        AttnProjW = attn.c_proj.weight, AttnProjB = attn.c_proj.bias,
        Ln2W = ln_2.weight, Ln2B = ln_2.bias,
        FcW = mlp.c_fc.weight, FcB = mlp.c_fc.bias,
        MlpProjW = mlp.c_proj.weight, MlpProjB = mlp.c_proj.bias,
    };

    public override Tensor forward(Tensor x) => Gpt2Functional.Block(x, Weights, _config);
}

/// <summary>
/// GPT-2 with its LM head, in float64 or float32, on the CPU (or CUDA in a CUDA build). The head is wte
/// (tied) unless the checkpoint stores a different lm_head.weight.
/// </summary>
public sealed class Gpt2Model : nn.Module<Tensor, Tensor>, GaugeTorch.Model.ICausalLanguageModel
{
    public Gpt2Embedding wte;   // [V, d]
    public Gpt2Embedding wpe;   // [P, d]
    public ModuleList<Gpt2Block> h;
    public Gpt2LayerNorm ln_f;  // [d]
    public Gpt2Embedding? lm_head; // [V, d], only when untied

    public Gpt2Config Config { get; }
    public ScalarType ComputeType { get; }

    public Gpt2Model(Gpt2Config c, ScalarType dtype, Device? device = null, bool untied = false) : base("GPT2LMHeadModel")
    {
        device ??= CPU;
        Config = c;
        ComputeType = dtype;
        wte = new Gpt2Embedding(c.VocabSize, c.NEmbd, dtype, device);
        wpe = new Gpt2Embedding(c.NPositions, c.NEmbd, dtype, device);
        h = new ModuleList<Gpt2Block>(Enumerable.Range(0, c.NLayer).Select(_ => new Gpt2Block(c, dtype, device)).ToArray());
        ln_f = new Gpt2LayerNorm(c.NEmbd, dtype, device);
        lm_head = untied ? new Gpt2Embedding(c.VocabSize, c.NEmbd, dtype, device) : null;
        RegisterComponents();
    }

    public GlobalWeights Globals => new() { Wte = wte.weight, Wpe = wpe.weight, LnFW = ln_f.weight, LnFB = ln_f.bias, LmHead = lm_head?.weight };

    /// <summary>tokens [T] (int64) → logits [T, V].</summary>
    public override Tensor forward(Tensor tokens)
    {
        if (tokens.dim() != 1) throw new ArgumentException("tokens must be a 1-D tensor [T]");
        if (tokens.shape[0] > Config.NPositions) throw new ArgumentException($"{tokens.shape[0]} tokens exceed the model's {Config.NPositions} positions");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x = Gpt2Functional.Embed(tokens, wte.weight, wpe.weight);
        foreach (var block in h) x = block.forward(x);
        return Gpt2Functional.Head(x, Globals, Config).MoveToOuterDisposeScope();
    }

    public Tensor Logits(IReadOnlyList<int> tokens)
    {
        using var t = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        return forward(t);
    }

    /// <summary>A key/value cache for this model (all n_positions, compute dtype, the model's device).</summary>
    public KvCache NewCache() => KvCache.For(Config, ComputeType, wte.weight.device);

    /// <summary>
    /// tokens [T] at positions cache.Length.. → the logits of the last of them, [V]; their keys and values join the
    /// cache. Only the last position goes through the head (a prompt of 1,000 tokens would otherwise need a
    /// [1000, V] logits matrix, 200 MB in float32, to read one row).
    /// </summary>
    public Tensor NextLogits(Tensor tokens, KvCache cache)
    {
        if (tokens.dim() != 1 || tokens.shape[0] < 1) throw new ArgumentException("tokens must be a non-empty 1-D tensor [T]");
        long t = tokens.shape[0];
        if (cache.Length + t > Config.NPositions)
            throw new ArgumentException($"{cache.Length + t} positions exceed the model's {Config.NPositions}");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x = Gpt2Functional.Embed(tokens, wte.weight, wpe.weight, cache.Length);   // [T, d]
        for (int l = 0; l < h.Count; l++) x = Gpt2Functional.Block(x, h[l].Weights, Config, cache, l);
        cache.Advance((int)t);
        var last = x.narrow(0, t - 1, 1);                                              // [1, d]
        return Gpt2Functional.Head(last, Globals, Config)[0].MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Greedy continuation of <paramref name="prompt"/>, one token at a time, each yielded as soon as it is chosen.
    /// With a <see cref="KvCache"/>, each new token costs one position (plus attention over the cache), and every step
    /// frees its temporaries, so memory stays at the model plus the cache. Stops after
    /// <paramref name="maxNew"/> tokens or when prompt and new tokens fill the model's n_positions, whichever is first
    /// (<see cref="MaxNewTokens"/>); the caller tells the two apart by the count.
    /// </summary>
    public IEnumerable<int> GenerateGreedy(IReadOnlyList<int> prompt, int maxNew)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt has no tokens");
        if (prompt.Count > Config.NPositions) throw new ArgumentException($"the prompt's {prompt.Count} tokens exceed the model's {Config.NPositions} positions");
        if (maxNew < 0) throw new ArgumentException($"{maxNew} new tokens is negative");
        return Generate(prompt.ToArray(), Math.Min(maxNew, MaxNewTokens(prompt.Count)));
    }

    /// <summary>How many tokens can follow a prompt of <paramref name="promptLength"/> within n_positions.</summary>
    public int MaxNewTokens(int promptLength) => Math.Max(0, Config.NPositions - promptLength);

    private IEnumerable<int> Generate(int[] prompt, int count)
    {
        if (count == 0) yield break;
        using var cache = NewCache();
        long[] feed = prompt.Select(i => (long)i).ToArray();
        for (int i = 0; i < count; i++)
        {
            int next;
            using (var scope = NewDisposeScope())
            {
                var logits = NextLogits(tensor(feed, ScalarType.Int64), cache);   // [V]
                next = (int)logits.argmax().item<long>();
            }
            yield return next;
            feed = [next];
        }
    }

    /// <summary>
    /// Loads every parameter name-for-name from the checkpoint: zero-copy over the file's private mapping when the stored
    /// dtype is <paramref name="dtype"/> (unless <paramref name="zeroCopy"/> is false), else converted
    /// (<see cref="GaugeTorch.Model.ParameterLoading"/>).
    /// </summary>
    public static Gpt2Model Load(Gpt2Checkpoint ck, ScalarType dtype, Device? device = null, IProgress<(long Done, long Total)>? progress = null, bool? zeroCopy = null)
    {
        var model = new Gpt2Model(ck.Config, dtype, device, untied: !ck.Tied);
        try
        {
            GaugeTorch.Model.ParameterLoading.Fill(model.named_parameters().ToList(), ck.Store, ck.Key, dtype, progress, zeroCopy);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
