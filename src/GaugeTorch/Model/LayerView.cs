using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>A normalization's parameters: the gain γ (g) [d] and, for LayerNorm, the bias β [d].</summary>
public sealed class NormView : IDisposable
{
    public required Tensor Gain { get; set; }   // [d]
    public Tensor? Bias { get; set; }           // [d], LayerNorm only

    public NormView Map(Func<Tensor, Tensor> f) => new() { Gain = f(Gain), Bias = Bias is null ? null : f(Bias) };

    public void Dispose()
    {
        Gain.Dispose();
        Bias?.Dispose();
    }
}

/// <summary>
/// One transformer block in the architecture-neutral, per-head layout that every piece of symmetry and canonical
/// math works on. Row vectors throughout: a token's state is x [d] and every projection computes x·W (+ b), so every
/// weight is [in, out] whatever the checkpoint stores (GPT-2's Conv1D [in, out] and LLaMA's nn.Linear [out, in] are
/// both mapped here by their <see cref="IArchitecture"/> adapter, which is the only code that knows tensor names,
/// fused or split storage and orientation).
/// <para>
/// Heads: H query heads, G key/value heads (query head i reads KV group i / (H/G)), head_dim hd. GPT-2 has G = H.
/// A view read from a checkpoint may hold strided views of the stored tensors (no copies); math produces new
/// tensors. Setting a property never disposes the old tensor; <see cref="Dispose"/> disposes what the view holds.
/// </para>
/// </summary>
public sealed class LayerView : IDisposable
{
    /// <summary>Norm before attention (GPT-2 ln_1, LLaMA input_layernorm).</summary>
    public required NormView Norm1 { get; set; }
    public required Tensor Q { get; set; }       // [H, d, hd]   query head i: x·Q[i]
    public Tensor? QBias { get; set; }           // [H, hd]
    public required Tensor K { get; set; }       // [G, d, hd]
    public Tensor? KBias { get; set; }           // [G, hd]
    public required Tensor V { get; set; }       // [G, d, hd]
    public Tensor? VBias { get; set; }           // [G, hd]
    public required Tensor O { get; set; }       // [H, hd, d]   head i writes z_i·O[i]
    public Tensor? OBias { get; set; }           // [d]
    /// <summary>Norm before the MLP (GPT-2 ln_2, LLaMA post_attention_layernorm).</summary>
    public required NormView Norm2 { get; set; }
    /// <summary>GPT-2 c_fc (the GELU input); SwiGLU up_proj (the linear factor).</summary>
    public required Tensor Up { get; set; }      // [d, F]
    public Tensor? UpBias { get; set; }          // [F]
    /// <summary>SwiGLU gate_proj (through silu); null for GELU.</summary>
    public Tensor? Gate { get; set; }            // [d, F]
    public Tensor? GateBias { get; set; }        // [F]
    /// <summary>GPT-2 mlp.c_proj; SwiGLU down_proj.</summary>
    public required Tensor Down { get; set; }    // [F, d]
    public Tensor? DownBias { get; set; }        // [d]

    /// <summary>(role, tensor) for every tensor present, in a fixed order. Roles: norm1.gain, norm1.bias, q, q_bias, k, …</summary>
    public IEnumerable<(string Role, Tensor Tensor)> Named()
    {
        yield return ("norm1.gain", Norm1.Gain);
        if (Norm1.Bias is not null) yield return ("norm1.bias", Norm1.Bias);
        yield return ("q", Q);
        if (QBias is not null) yield return ("q_bias", QBias);
        yield return ("k", K);
        if (KBias is not null) yield return ("k_bias", KBias);
        yield return ("v", V);
        if (VBias is not null) yield return ("v_bias", VBias);
        yield return ("o", O);
        if (OBias is not null) yield return ("o_bias", OBias);
        yield return ("norm2.gain", Norm2.Gain);
        if (Norm2.Bias is not null) yield return ("norm2.bias", Norm2.Bias);
        if (Gate is not null) yield return ("gate", Gate);
        if (GateBias is not null) yield return ("gate_bias", GateBias);
        yield return ("up", Up);
        if (UpBias is not null) yield return ("up_bias", UpBias);
        yield return ("down", Down);
        if (DownBias is not null) yield return ("down_bias", DownBias);
    }

    /// <summary>A new view with <paramref name="f"/> applied to every tensor (e.g. a dtype cast or a clone).</summary>
    public LayerView Map(Func<Tensor, Tensor> f)
    {
        Tensor? M(Tensor? t) => t is null ? null : f(t);
        return new LayerView
        {
            Norm1 = Norm1.Map(f), Q = f(Q), QBias = M(QBias), K = f(K), KBias = M(KBias), V = f(V), VBias = M(VBias),
            O = f(O), OBias = M(OBias), Norm2 = Norm2.Map(f), Up = f(Up), UpBias = M(UpBias), Gate = M(Gate),
            GateBias = M(GateBias), Down = f(Down), DownBias = M(DownBias),
        };
    }

    /// <summary>A new view with <paramref name="f"/>(role, tensor) applied to every tensor (roles as in <see cref="Named"/>).</summary>
    public LayerView MapNamed(Func<string, Tensor, Tensor> f)
    {
        Tensor? M(string role, Tensor? t) => t is null ? null : f(role, t);
        return new LayerView
        {
            Norm1 = new NormView { Gain = f("norm1.gain", Norm1.Gain), Bias = M("norm1.bias", Norm1.Bias) },
            Q = f("q", Q), QBias = M("q_bias", QBias), K = f("k", K), KBias = M("k_bias", KBias), V = f("v", V), VBias = M("v_bias", VBias),
            O = f("o", O), OBias = M("o_bias", OBias),
            Norm2 = new NormView { Gain = f("norm2.gain", Norm2.Gain), Bias = M("norm2.bias", Norm2.Bias) },
            Up = f("up", Up), UpBias = M("up_bias", UpBias), Gate = M("gate", Gate), GateBias = M("gate_bias", GateBias),
            Down = f("down", Down), DownBias = M("down_bias", DownBias),
        };
    }

    /// <summary>A copy in <paramref name="dtype"/> (contiguous, new tensors; this view is not modified).</summary>
    public LayerView To(ScalarType dtype) => Map(t => t.to_type(dtype).contiguous());

    public LayerView Clone() => Map(t => t.clone());

    public LayerView MoveToOuterDisposeScope()
    {
        foreach (var (_, t) in Named()) t.MoveToOuterDisposeScope();
        return this;
    }

    public LayerView DetachFromDisposeScope()
    {
        foreach (var (_, t) in Named()) t.DetachFromDisposeScope();
        return this;
    }

    public void Dispose()
    {
        foreach (var (_, t) in Named()) t.Dispose();
    }
}

/// <summary>
/// The parameters outside the blocks, in the neutral layout: the token embedding E [V, d], the learned position
/// table [P, d] (null for rotary models), the final norm, and the head [V, d] (null when tied: the head is E;
/// logits = norm_f(x)·headᵀ).
/// </summary>
public sealed class GlobalView : IDisposable
{
    public required Tensor Embed { get; set; }       // [V, d]
    public Tensor? Positions { get; set; }           // [P, d], learned positions only
    public required NormView FinalNorm { get; set; }
    public Tensor? Head { get; set; }                // [V, d], untied only

    /// <summary>The matrix the logits are read from: <see cref="Head"/>, or <see cref="Embed"/> when tied.</summary>
    public Tensor HeadOrEmbed => Head ?? Embed;

    public IEnumerable<(string Role, Tensor Tensor)> Named()
    {
        yield return ("embed", Embed);
        if (Positions is not null) yield return ("positions", Positions);
        yield return ("final_norm.gain", FinalNorm.Gain);
        if (FinalNorm.Bias is not null) yield return ("final_norm.bias", FinalNorm.Bias);
        if (Head is not null) yield return ("head", Head);
    }

    public GlobalView Map(Func<Tensor, Tensor> f) => new()
    {
        Embed = f(Embed), Positions = Positions is null ? null : f(Positions), FinalNorm = FinalNorm.Map(f), Head = Head is null ? null : f(Head),
    };

    public GlobalView To(ScalarType dtype) => Map(t => t.to_type(dtype).contiguous());

    public GlobalView MoveToOuterDisposeScope()
    {
        foreach (var (_, t) in Named()) t.MoveToOuterDisposeScope();
        return this;
    }

    public GlobalView DetachFromDisposeScope()
    {
        foreach (var (_, t) in Named()) t.DetachFromDisposeScope();
        return this;
    }

    public void Dispose()
    {
        foreach (var (_, t) in Named()) t.Dispose();
    }
}
