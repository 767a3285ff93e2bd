using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>
/// The one forward pass of every supported architecture, as plain functions of <see cref="LayerView"/> and
/// <see cref="GlobalView"/> in whatever dtype they hold: LayerNorm or RMSNorm, GELU or SwiGLU, learned or rotary
/// positions, multi-head, grouped-query or multi-query attention. Hidden states are [T, d] (one sequence) or
/// [B, T, d]. The streaming evaluators, the export checks and the audit all call these, so the math has one
/// definition; the TorchSharp modules whose names equal checkpoint keys call them too.
/// </summary>
public static class Forward
{
    /// <summary>x = E[tokens] (+ learned positions start … start+T−1). tokens [T] or [B, T] → [.., T, d].</summary>
    public static Tensor Embed(Tensor tokens, GlobalView g, long start = 0)
    {
        using var scope = NewDisposeScope();
        long t = tokens.shape[^1];
        var flat = g.Embed.index_select(0, tokens.to(g.Embed.device).flatten());
        var x = flat.view([.. tokens.shape, g.Embed.shape[1]]);
        if (g.Positions is not null)
        {
            var pos = arange(start, start + t, dtype: ScalarType.Int64, device: g.Embed.device);
            x = x + g.Positions.index_select(0, pos);
        }
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>x·W + b for x of any rank; W [in, out] (addmm for the common 2-D case with a bias).</summary>
    public static Tensor Linear(Tensor x, Tensor w, Tensor? b)
    {
        if (b is null) return matmul(x, w);
        return x.dim() == 2 ? addmm(b, x, w, 1, 1) : matmul(x, w) + b;
    }

    /// <summary>[n, d, hd] per-head blocks → [d, n·hd] (head i's columns i·hd … (i+1)·hd); a view when the layout allows.</summary>
    public static Tensor Flat(Tensor heads) => heads.permute(1, 0, 2).reshape(heads.shape[1], heads.shape[0] * heads.shape[2]);

    /// <summary>[n, hd] per-head biases → [n·hd].</summary>
    public static Tensor? FlatBias(Tensor? b) => b?.reshape(-1);

    /// <summary>LayerNorm or RMSNorm over the last dimension.</summary>
    public static Tensor Norm(Tensor x, NormView n, ModelTraits t) => t.Norm switch
    {
        NormKind.LayerNorm => nn.functional.layer_norm(x, [x.shape[^1]], n.Gain, n.Bias, t.NormEps),
        NormKind.RmsNorm => RmsNorm(x, n.Gain, t.NormEps),
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>x / sqrt(mean(x²) + eps) ∘ g (HF LlamaRMSNorm; computed in x's dtype).</summary>
    public static Tensor RmsNorm(Tensor x, Tensor gain, double eps)
    {
        using var scope = NewDisposeScope();
        var inv = (x.square().mean([-1], keepdim: true) + eps).rsqrt();
        return (x * inv * gain).MoveToOuterDisposeScope();
    }

    /// <summary>GPT-2's gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    public static Tensor GeluNew(Tensor x)
    {
        using var scope = NewDisposeScope();
        double c = Math.Sqrt(2.0 / Math.PI);
        var inner = (x + x.pow(3) * 0.044715) * c;
        return (x * 0.5 * (inner.tanh() + 1.0)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Causal self-attention of an already-normalized input h [.., T, d] at positions start … start+T−1.
    /// Rotary models need <paramref name="rope"/> (cos, sin [T, hd], see <see cref="RopeSpec.Tables"/>).
    /// </summary>
    public static Tensor Attention(Tensor h, LayerView w, ModelTraits t, (Tensor Cos, Tensor Sin)? rope = null, BlockMaps? maps = null)
    {
        using var scope = NewDisposeScope();
        long T = h.shape[^2];
        int nh = t.QueryHeads, g = t.KvHeads, hd = t.HeadDim;
        var lead = h.shape[..^2];
        Tensor Heads(Tensor y, int n) => y.reshape([.. lead, T, n, hd]).transpose(-3, -2);   // [.., n, T, hd]
        var q = Heads(Linear(h, Flat(w.Q), FlatBias(w.QBias)), nh);
        var k = Heads(Linear(h, Flat(w.K), FlatBias(w.KBias)), g);
        var vFlat = Linear(h, Flat(w.V), FlatBias(w.VBias));
        if (maps?.Values is { } valueMap) vFlat = valueMap(vFlat);
        var v = Heads(vFlat, g);
        if (t.Positions == PositionKind.Rotary)
        {
            if (rope is not { } r) throw new ArgumentException("a rotary model needs its cos/sin tables");
            q = RopeSpec.Apply(q, r.Cos, r.Sin);
            k = RopeSpec.Apply(k, r.Cos, r.Sin);
        }
        if (g != nh)
        {
            k = k.repeat_interleave(nh / g, dim: -3);                        // query head i reads KV head i / (H/G)
            v = v.repeat_interleave(nh / g, dim: -3);
        }
        var scores = matmul(q, k.transpose(-2, -1)) / Math.Sqrt(hd);         // [.., H, T, T]
        var mask = ones(T, T, dtype: ScalarType.Bool, device: h.device).triu(1);
        scores = scores.masked_fill(mask, double.NegativeInfinity);
        var att = scores.softmax(-1);
        var y = matmul(att, v).transpose(-3, -2).reshape([.. lead, T, nh * hd]);   // [.., T, H·hd]
        if (maps?.Mixed is { } mixMap) y = mixMap(y);
        return Linear(y, w.O.reshape(nh * hd, w.O.shape[2]), w.OBias).MoveToOuterDisposeScope();
    }

    /// <summary>The MLP of a normalized input h [.., T, d].</summary>
    public static Tensor Mlp(Tensor h, LayerView w, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var a = t.Mlp switch
        {
            MlpKind.GeluNew => GeluNew(Linear(h, w.Up, w.UpBias)),
            MlpKind.SwiGlu => nn.functional.silu(Linear(h, w.Gate ?? throw new ArgumentException("SwiGLU needs a gate"), w.GateBias)) * Linear(h, w.Up, w.UpBias),
            _ => throw new ArgumentOutOfRangeException(nameof(t)),
        };
        return Linear(a, w.Down, w.DownBias).MoveToOuterDisposeScope();
    }

    /// <summary>One block: x + attn(norm1(x)), then + mlp(norm2(·)); with <paramref name="maps"/>, its activation maps where they act.</summary>
    public static Tensor Block(Tensor x, LayerView w, ModelTraits t, (Tensor Cos, Tensor Sin)? rope = null, BlockMaps? maps = null)
    {
        using var scope = NewDisposeScope();
        if (maps is null)
        {
            var a = x + Attention(Norm(x, w.Norm1, t), w, t, rope);
            var m = a + Mlp(Norm(a, w.Norm2, t), w, t);
            return m.MoveToOuterDisposeScope();
        }
        Tensor In(Tensor h) => maps.Reader is { } r ? r(h) : h;
        Tensor In2(Tensor h) => (maps.Reader2 ?? maps.Reader) is { } r ? r(h) : h;
        Tensor Out(Tensor y) => maps.Writer is { } f ? f(y) : y;
        var a2 = x + Out(Attention(In(Norm(x, w.Norm1, t)), w, t, rope, maps));
        var m2 = a2 + Out(Mlp(In2(Norm(a2, w.Norm2, t)), w, t));
        return m2.MoveToOuterDisposeScope();
    }

    /// <summary>The normalized final state norm_f(x) [.., T, d].</summary>
    public static Tensor FinalNorm(Tensor x, GlobalView g, ModelTraits t) => Norm(x, g.FinalNorm, t);

    /// <summary>logits = norm_f(x)·headᵀ [.., T, V].</summary>
    public static Tensor Head(Tensor x, GlobalView g, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        return matmul(FinalNorm(x, g, t), g.HeadOrEmbed.t()).MoveToOuterDisposeScope();
    }

    /// <summary>cos/sin tables for positions start … start+T−1, or null for learned positions.</summary>
    public static (Tensor Cos, Tensor Sin)? RopeTables(ModelTraits t, long start, long count, Device? device = null) =>
        t.Positions == PositionKind.Rotary ? (t.Rope ?? throw new ArgumentException("rotary model without a RopeSpec")).Tables(t.HeadDim, start, count, device) : null;

    /// <summary>Logits [T, V] of tokens [T] for a model held in memory (views in any one dtype).</summary>
    public static Tensor Logits(Tensor tokens, IReadOnlyList<LayerView> layers, GlobalView g, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var rope = RopeTables(t, 0, tokens.shape[^1], g.Embed.device);
        var x = Embed(tokens, g);
        foreach (var l in layers) x = Block(x, l, t, rope);
        return Head(x, g, t).MoveToOuterDisposeScope();
    }

    /// <summary>Subtracts each row's mean: logits are defined only up to a per-position constant.</summary>
    public static Tensor RowCentre(Tensor logits) => logits - logits.mean([-1], keepdim: true);
}

/// <summary>
/// Linear maps on a block's activations, each the exact counterpart of a change of the block's weights (issue 12):
/// a transformed copy whose layer action is such a change can run the stored weights with these maps instead of a
/// transformed float64 copy of the layer. <see cref="Reader"/>: on each normalized input h before the readers
/// (h·(AW) = (h·A)·W for Q, K, V, Up, Gate; their biases unchanged). <see cref="Writer"/>: on each writer's output,
/// bias included ((zW + b)·B for O and Down). <see cref="Values"/>: on the value projection [.., T, G·hd], bias
/// included. <see cref="Mixed"/>: on the concatenated head outputs [.., T, H·hd] before O.
/// </summary>
public sealed record BlockMaps
{
    public Func<Tensor, Tensor>? Reader { get; init; }
    /// <summary>The second norm's readers' map (up, gate) when it differs from the first's; null: <see cref="Reader"/>.</summary>
    public Func<Tensor, Tensor>? Reader2 { get; init; }
    public Func<Tensor, Tensor>? Writer { get; init; }
    public Func<Tensor, Tensor>? Values { get; init; }
    public Func<Tensor, Tensor>? Mixed { get; init; }

    /// <summary>Every map wrapped by <paramref name="wrap"/> (e.g. to time them apart from the forward).</summary>
    public BlockMaps Wrapped(Func<Func<Tensor, Tensor>, Func<Tensor, Tensor>> wrap) => new()
    {
        Reader = Reader is null ? null : wrap(Reader),
        Reader2 = Reader2 is null ? null : wrap(Reader2),
        Writer = Writer is null ? null : wrap(Writer),
        Values = Values is null ? null : wrap(Values),
        Mixed = Mixed is null ? null : wrap(Mixed),
    };
}
