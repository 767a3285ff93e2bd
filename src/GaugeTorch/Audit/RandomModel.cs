using GaugeTorch.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Audit;

/// <summary>
/// Random models held in memory as views (no checkpoint), for the audit's Jacobian nullity: generic weights on
/// scales that keep every activation O(1), so that no parameter's influence on the logits is tiny by accident and
/// the Jacobian's singular values separate cleanly into the gauge null space and the rest.
/// </summary>
public static class RandomModel
{
    /// <summary>
    /// Traits of a nullity shape. <paramref name="arch"/>: gpt2 (LayerNorm, learned positions, gelu_new, MHA, biases),
    /// llama or mistral (RMSNorm, RoPE, SwiGLU, no biases), qwen2 (as llama, with q/k/v biases). For rotary models
    /// <paramref name="positions"/> is the sequence length used (they have no position parameters).
    /// </summary>
    public static ModelTraits Traits(string arch, int layers, int embd, int heads, int? kvHeads, int? headDim, int inner,
        int vocab, int positions, bool untied)
    {
        if (layers < 1) throw new ArgumentException($"layers must be at least 1 (got {layers})");
        if (embd < 2) throw new ArgumentException($"embd must be at least 2 (got {embd})");
        if (heads < 1) throw new ArgumentException($"heads must be at least 1 (got {heads})");
        if (inner < 1) throw new ArgumentException($"inner must be at least 1 (got {inner})");
        if (vocab < 2) throw new ArgumentException($"vocab must be at least 2 (got {vocab})");
        if (positions < 1) throw new ArgumentException($"positions must be at least 1 (got {positions})");
        switch (arch)
        {
            case "gpt2":
                if (kvHeads is int g0 && g0 != heads) throw new ArgumentException($"kv-heads: GPT-2 is multi-head (kv-heads = heads = {heads}, got {g0})");
                if (embd % heads != 0) throw new ArgumentException($"embd ({embd}) is not divisible by heads ({heads}); GPT-2 has head_dim = embd/heads");
                if (headDim is int h0 && h0 != embd / heads) throw new ArgumentException($"head-dim: GPT-2 has head_dim = embd/heads = {embd / heads} (got {h0})");
                return new ModelTraits
                {
                    Architecture = "gpt2", Layers = layers, Hidden = embd, QueryHeads = heads, KvHeads = heads, HeadDim = embd / heads,
                    Inner = inner, Vocab = vocab, MaxPositions = positions, Norm = NormKind.LayerNorm, NormEps = 1e-5,
                    Positions = PositionKind.Learned, Mlp = MlpKind.GeluNew, QkvBias = true, OutBias = true, MlpBias = true, Tied = !untied,
                };
            case "llama" or "qwen2" or "mistral":
                int g = kvHeads ?? heads;
                if (g < 1 || heads % g != 0) throw new ArgumentException($"kv-heads ({g}) must divide heads ({heads})");
                int hd = headDim ?? (embd % heads == 0 ? embd / heads : throw new ArgumentException($"embd ({embd}) is not divisible by heads ({heads}); give --head-dim"));
                if (hd < 2 || hd % 2 != 0) throw new ArgumentException($"head-dim must be even and at least 2 for rotary embeddings (got {hd})");
                return new ModelTraits
                {
                    Architecture = arch, Layers = layers, Hidden = embd, QueryHeads = heads, KvHeads = g, HeadDim = hd, Inner = inner,
                    Vocab = vocab, MaxPositions = positions, Norm = NormKind.RmsNorm, NormEps = 1e-6, Positions = PositionKind.Rotary,
                    Rope = new RopeSpec(10000), Mlp = MlpKind.SwiGlu, QkvBias = arch == "qwen2", OutBias = false, MlpBias = false, Tied = !untied,
                };
            default:
                throw new ArgumentException($"arch: '{arch}' is not gpt2, llama, qwen2 or mistral");
        }
    }

    /// <summary>
    /// A float64 model of <paramref name="t"/>'s shape, deterministic in <paramref name="seed"/>. Projections are
    /// N(0, 1/fan_in) so activations stay O(1); norm gains U(0.5, 1.5); biases N(0, 0.1²) (LayerNorm biases too);
    /// embedding N(0, 1), positions N(0, 0.5²), an untied head N(0, 1/d).
    /// </summary>
    public static ModelWeights Build(ModelTraits t, long seed)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator((ulong)(seed * 2654435761L + 97) & 0x7FFFFFFFFFFFFFFFUL);
        Tensor N(double std, params long[] shape) => randn(shape, ScalarType.Float64, generator: gen) * std;
        Tensor Gain(long n) => rand([n], ScalarType.Float64, generator: gen) + 0.5;
        long d = t.Hidden, h = t.QueryHeads, g = t.KvHeads, hd = t.HeadDim, f = t.Inner;
        NormView Norm() => new() { Gain = Gain(d), Bias = t.NormBias ? N(0.1, d) : null };
        var layers = new List<LayerView>();
        for (int l = 0; l < t.Layers; l++)
        {
            layers.Add(new LayerView
            {
                Norm1 = Norm(),
                Q = N(1 / Math.Sqrt(d), h, d, hd), QBias = t.QkvBias ? N(0.1, h, hd) : null,
                K = N(1 / Math.Sqrt(d), g, d, hd), KBias = t.QkvBias ? N(0.1, g, hd) : null,
                V = N(1 / Math.Sqrt(d), g, d, hd), VBias = t.QkvBias ? N(0.1, g, hd) : null,
                O = N(1 / Math.Sqrt(h * hd), h, hd, d), OBias = t.OutBias ? N(0.1, d) : null,
                Norm2 = Norm(),
                Gate = t.Mlp == MlpKind.SwiGlu ? N(1 / Math.Sqrt(d), d, f) : null,
                GateBias = t.Mlp == MlpKind.SwiGlu && t.MlpBias ? N(0.1, f) : null,
                Up = N(1 / Math.Sqrt(d), d, f), UpBias = t.MlpBias ? N(0.1, f) : null,
                Down = N(1 / Math.Sqrt(f), f, d), DownBias = t.MlpBias ? N(0.1, d) : null,
            });
        }
        var globals = new GlobalView
        {
            Embed = N(1, t.Vocab, d),
            Positions = t.Positions == PositionKind.Learned ? N(0.5, t.MaxPositions, d) : null,
            FinalNorm = Norm(),
            Head = t.Tied ? null : N(1 / Math.Sqrt(d), t.Vocab, d),
        };
        foreach (var l in layers) l.MoveToOuterDisposeScope();
        globals.MoveToOuterDisposeScope();
        return new ModelWeights(layers, globals, t);
    }
}
