using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Audit;

/// <summary>
/// <see cref="Forward"/> for a batch of B independent copies of one model, sequence b run by copy b: every tensor
/// of the views carries a leading batch axis ([B, H, d, hd], [B, d], …). Why a second forward: the Jacobian
/// nullity needs one Jacobian row per (sequence, position, vocabulary entry). With one parameter copy per sequence,
/// a single backward pass of Σ_b Y_b[t, v] returns the rows of all B sequences at once (copy b's gradient is
/// sequence b's row), so T·(V−1) backward passes replace N·T·(V−1). Measured on the (L=2, d=12, h=3, F=20, V=13,
/// P=5) shape: one row per backward through <see cref="Forward"/> costs 1.06 ms (single thread), which is 6 s
/// for its 5,600 rows; see docs/audit.md for the batched figures. The math is Forward's, term for term
/// (AuditNullityTests checks the logits of every copy against Forward.Logits and Jacobian rows against
/// autograd through Forward); only the batch axis is new. It reuses Forward's activations and RoPE.
/// </summary>
public static class BatchedForward
{
    /// <summary>B copies of <paramref name="v"/> as new leaf tensors [B, ..] that require grad.</summary>
    public static LayerView Replicate(LayerView v, int batch) =>
        v.Map(t => t.unsqueeze(0).expand([batch, .. t.shape]).contiguous().requires_grad_(true));

    public static GlobalView Replicate(GlobalView g, int batch) =>
        g.Map(t => t.unsqueeze(0).expand([batch, .. t.shape]).contiguous().requires_grad_(true));

    /// <summary>LayerNorm or RMSNorm of x [B, T, d] with per-copy gain/bias [B, d].</summary>
    public static Tensor Norm(Tensor x, NormView n, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var gain = n.Gain.unsqueeze(1);                                    // [B, 1, d]
        Tensor y;
        if (t.Norm == NormKind.LayerNorm)
        {
            var xc = x - x.mean([-1], keepdim: true);
            y = xc * (xc.square().mean([-1], keepdim: true) + t.NormEps).rsqrt() * gain;
            if (n.Bias is not null) y = y + n.Bias.unsqueeze(1);
        }
        else y = Forward.RmsNorm(x, gain, t.NormEps);
        return y.MoveToOuterDisposeScope();
    }

    private static Tensor Lin(Tensor x, Tensor w, Tensor? b)                // x [B, T, in], w [B, in, out], b [B, out]
    {
        var y = matmul(x, w);
        return b is null ? y : y + b.unsqueeze(1);
    }

    /// <summary>One block for x [B, T, d].</summary>
    public static Tensor Block(Tensor x, LayerView w, ModelTraits t, (Tensor Cos, Tensor Sin)? rope)
    {
        using var scope = NewDisposeScope();
        int nh = t.QueryHeads, g = t.KvHeads, hd = t.HeadDim;
        long T = x.shape[1];
        var h = Norm(x, w.Norm1, t).unsqueeze(1);                           // [B, 1, T, d]
        Tensor Heads(Tensor wt, Tensor? bias)                               // [B, n, d, hd] → [B, n, T, hd]
        {
            var y = matmul(h, wt);
            return bias is null ? y : y + bias.unsqueeze(2);
        }
        var q = Heads(w.Q, w.QBias);
        var k = Heads(w.K, w.KBias);
        var v = Heads(w.V, w.VBias);
        if (t.Positions == PositionKind.Rotary)
        {
            var (cos, sin) = rope ?? throw new ArgumentException("a rotary model needs its cos/sin tables");
            q = RopeSpec.Apply(q, cos, sin);
            k = RopeSpec.Apply(k, cos, sin);
        }
        if (g != nh)
        {
            k = k.repeat_interleave(nh / g, dim: 1);                        // query head i reads KV head i / (H/G)
            v = v.repeat_interleave(nh / g, dim: 1);
        }
        var scores = matmul(q, k.transpose(-2, -1)) / Math.Sqrt(hd);        // [B, H, T, T]
        var mask = ones(T, T, dtype: ScalarType.Bool, device: x.device).triu(1);
        var att = scores.masked_fill(mask, double.NegativeInfinity).softmax(-1);
        var z = matmul(att, v);                                             // [B, H, T, hd]
        var o = matmul(z, w.O).sum(1);                                      // Σ_i z_i·O_i: [B, T, d]
        if (w.OBias is not null) o = o + w.OBias.unsqueeze(1);
        var a = x + o;
        var h2 = Norm(a, w.Norm2, t);
        var act = t.Mlp switch
        {
            MlpKind.GeluNew => Forward.GeluNew(Lin(h2, w.Up, w.UpBias)),
            MlpKind.SwiGlu => nn.functional.silu(Lin(h2, w.Gate ?? throw new ArgumentException("SwiGLU needs a gate"), w.GateBias)) * Lin(h2, w.Up, w.UpBias),
            _ => throw new ArgumentOutOfRangeException(nameof(t)),
        };
        return (a + Lin(act, w.Down, w.DownBias)).MoveToOuterDisposeScope();
    }

    /// <summary>Logits [B, T, V] of tokens [B, T] (positions 0 … T−1), copy b on sequence b.</summary>
    public static Tensor Logits(Tensor tokens, IReadOnlyList<LayerView> layers, GlobalView g, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        long b = tokens.shape[0], T = tokens.shape[1], d = g.Embed.shape[2];
        var x = g.Embed.gather(1, tokens.unsqueeze(2).expand(b, T, d));     // E_b[tokens_b]: [B, T, d]
        if (g.Positions is not null) x = x + g.Positions.narrow(1, 0, T);
        var rope = Forward.RopeTables(t, 0, T, g.Embed.device);
        foreach (var l in layers) x = Block(x, l, t, rope);
        var n = Norm(x, g.FinalNorm, t);
        return matmul(n, g.HeadOrEmbed.transpose(1, 2)).MoveToOuterDisposeScope();
    }
}
