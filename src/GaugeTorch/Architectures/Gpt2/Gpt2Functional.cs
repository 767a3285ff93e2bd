using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>
/// GPT-2's forward pass as plain functions of the stored tensors, in whatever dtype they have. The module
/// (<see cref="Gpt2Model"/>) and the layer-streaming evaluators both call these, so there is one definition of
/// the math. Hidden states are [T, d] (one sequence) or [B, T, d] (a batch, used by training).
/// </summary>
public static class Gpt2Functional
{
    /// <summary>x = wte[tokens] + wpe[start..start + T). tokens [T] or [B, T] → [T, d] or [B, T, d].</summary>
    /// <param name="start">Position of the first token (non-zero when a <see cref="KvCache"/> holds the earlier ones).</param>
    public static Tensor Embed(Tensor tokens, Tensor wte, Tensor wpe, long start = 0)
    {
        long t = tokens.shape[^1];
        using var scope = NewDisposeScope();
        var pos = arange(start, start + t, dtype: ScalarType.Int64, device: wte.device);
        var flat = wte.index_select(0, tokens.to(wte.device).flatten());
        var shape = tokens.shape.Append(wte.shape[1]).ToArray();
        return (flat.view(shape) + wpe.index_select(0, pos)).MoveToOuterDisposeScope();
    }

    /// <summary>x·W + b for x of any rank (addmm for the common 2-D case).</summary>
    public static Tensor Linear(Tensor x, Tensor w, Tensor b) => x.dim() == 2 ? addmm(b, x, w, 1, 1) : matmul(x, w) + b;

    public static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, double eps) =>
        nn.functional.layer_norm(x, [x.shape[^1]], weight, bias, eps);

    /// <summary>GPT-2's gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    public static Tensor GeluNew(Tensor x)
    {
        using var scope = NewDisposeScope();
        double c = Math.Sqrt(2.0 / Math.PI);
        var inner = (x + x.pow(3) * 0.044715) * c;
        return (x * 0.5 * (inner.tanh() + 1.0)).MoveToOuterDisposeScope();
    }

    /// <summary>Causal multi-head self-attention of an already-normalized input h [.., T, d].</summary>
    public static Tensor Attention(Tensor h, LayerWeights w, int nHead)
    {
        using var scope = NewDisposeScope();
        long T = h.shape[^2], d = h.shape[^1], dk = d / nHead;
        var lead = h.shape[..^2];
        long[] headShape = [.. lead, T, nHead, dk];
        var qkv = Linear(h, w.AttnW, w.AttnB);                               // [.., T, 3d]
        var parts = qkv.split(d, -1);
        var q = parts[0].reshape(headShape).transpose(-3, -2);               // [.., h, T, dk]
        var k = parts[1].reshape(headShape).transpose(-3, -2);
        var v = parts[2].reshape(headShape).transpose(-3, -2);
        var scores = matmul(q, k.transpose(-2, -1)) / Math.Sqrt(dk);         // [.., h, T, T]
        var mask = ones(T, T, dtype: ScalarType.Bool, device: h.device).triu(1);
        scores = scores.masked_fill(mask, double.NegativeInfinity);
        var att = scores.softmax(-1);
        var y = matmul(att, v).transpose(-3, -2).reshape([.. lead, T, d]);   // [.., T, d]
        return Linear(y, w.AttnProjW, w.AttnProjB).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The same attention for T new positions of one sequence, h [T, d], whose earlier positions are in
    /// <paramref name="cache"/>: their keys and values are appended to layer <paramref name="layer"/> of the cache and
    /// each new position attends to every cached position up to itself. Cost: T rows of attention over
    /// cache.Length + T keys, instead of a whole sequence. The caller advances the cache after the last layer.
    /// </summary>
    public static Tensor Attention(Tensor h, LayerWeights w, int nHead, KvCache cache, int layer)
    {
        using var scope = NewDisposeScope();
        long T = h.shape[0], d = h.shape[1], dk = d / nHead;
        long start = cache.Length;
        var qkv = Linear(h, w.AttnW, w.AttnB);                               // [T, 3d]
        var parts = qkv.split(d, -1);
        var q = parts[0].reshape(T, nHead, dk).transpose(0, 1);              // [h, T, dk]
        var k = parts[1].reshape(T, nHead, dk).transpose(0, 1);
        var v = parts[2].reshape(T, nHead, dk).transpose(0, 1);
        var (keys, values) = cache.Append(layer, k, v);                      // [h, start + T, dk]
        var scores = matmul(q, keys.transpose(-2, -1)) / Math.Sqrt(dk);      // [h, T, start + T]
        if (T > 1)
        {
            // New position i (absolute start + i) sees keys 0..start + i.
            var mask = ones(T, start + T, dtype: ScalarType.Bool, device: h.device).triu(start + 1);
            scores = scores.masked_fill(mask, double.NegativeInfinity);
        }
        var att = scores.softmax(-1);
        var y = matmul(att, values).transpose(0, 1).reshape(T, d);          // [T, d]
        return Linear(y, w.AttnProjW, w.AttnProjB).MoveToOuterDisposeScope();
    }

    public static Tensor Mlp(Tensor h, LayerWeights w)
    {
        using var scope = NewDisposeScope();
        var a = GeluNew(Linear(h, w.FcW, w.FcB));
        return Linear(a, w.MlpProjW, w.MlpProjB).MoveToOuterDisposeScope();
    }

    /// <summary>One transformer block: x + attn(ln_1(x)), then + mlp(ln_2(·)).</summary>
    public static Tensor Block(Tensor x, LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        var a = x + Attention(LayerNorm(x, w.Ln1W, w.Ln1B, c.LayerNormEpsilon), w, c.NHead);
        var m = a + Mlp(LayerNorm(a, w.Ln2W, w.Ln2B, c.LayerNormEpsilon), w);
        return m.MoveToOuterDisposeScope();
    }

    /// <summary>One block for new positions x [T, d] of a sequence whose earlier positions are in <paramref name="cache"/>.</summary>
    public static Tensor Block(Tensor x, LayerWeights w, Gpt2Config c, KvCache cache, int layer)
    {
        using var scope = NewDisposeScope();
        var a = x + Attention(LayerNorm(x, w.Ln1W, w.Ln1B, c.LayerNormEpsilon), w, c.NHead, cache, layer);
        var m = a + Mlp(LayerNorm(a, w.Ln2W, w.Ln2B, c.LayerNormEpsilon), w);
        return m.MoveToOuterDisposeScope();
    }

    /// <summary>logits = ln_f(x) · headᵀ, [T, V].</summary>
    public static Tensor Head(Tensor x, GlobalWeights g, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        var n = LayerNorm(x, g.LnFW, g.LnFB, c.LayerNormEpsilon);
        return matmul(n, g.Head.t()).MoveToOuterDisposeScope();
    }

    /// <summary>Subtracts each row's mean: logits are defined only up to a per-position constant.</summary>
    public static Tensor RowCentre(Tensor logits) => logits - logits.mean([-1], keepdim: true);
}
