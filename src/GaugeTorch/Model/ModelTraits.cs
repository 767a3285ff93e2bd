namespace GaugeTorch.Model;

/// <summary>Which normalization every residual reader applies.</summary>
public enum NormKind
{
    /// <summary>GPT-2: <c>(x − mean) / sqrt(var + eps) ∘ γ + β</c>. Its output has zero mean, its input's mean is never read.</summary>
    LayerNorm,
    /// <summary>LLaMA family: <c>x / sqrt(mean(x²) + eps) ∘ g</c>, no mean, no bias. Commutes with any orthogonal map of the residual.</summary>
    RmsNorm,
}

/// <summary>How positions enter the model.</summary>
public enum PositionKind
{
    /// <summary>GPT-2: a learned table added to the embedding.</summary>
    Learned,
    /// <summary>LLaMA family: rotary embeddings on queries and keys (<see cref="RopeSpec"/>).</summary>
    Rotary,
}

/// <summary>The feed-forward block.</summary>
public enum MlpKind
{
    /// <summary>GPT-2: <c>down(gelu_new(x·up + b) ) + b</c> (tanh form).</summary>
    GeluNew,
    /// <summary>LLaMA family: <c>down(silu(x·gate) ∘ (x·up))</c>.</summary>
    SwiGlu,
}

/// <summary>
/// Everything the symmetry and canonical math needs to know about an architecture, as data: sizes, norm kind,
/// positions, grouped-query attention, MLP kind, which biases exist and whether the head is tied. Families declare
/// where they hold as predicates over these traits; only an <see cref="IArchitecture"/> adapter knows tensor names.
/// </summary>
public sealed record ModelTraits
{
    /// <summary>The config's <c>model_type</c>: gpt2, llama, qwen2 or mistral.</summary>
    public required string Architecture { get; init; }
    /// <summary>L.</summary>
    public required int Layers { get; init; }
    /// <summary>d, the residual width.</summary>
    public required int Hidden { get; init; }
    /// <summary>H, query heads.</summary>
    public required int QueryHeads { get; init; }
    /// <summary>G, key/value heads (G = H: multi-head; G = 1: multi-query). Query head i reads KV head i / (H/G).</summary>
    public required int KvHeads { get; init; }
    /// <summary>hd (d_k = d_v). H·hd need not equal d.</summary>
    public required int HeadDim { get; init; }
    /// <summary>F, the MLP width.</summary>
    public required int Inner { get; init; }
    /// <summary>V.</summary>
    public required int Vocab { get; init; }
    /// <summary>P: rows of the learned position table, or the rotary model's max_position_embeddings.</summary>
    public required int MaxPositions { get; init; }
    public required NormKind Norm { get; init; }
    public required double NormEps { get; init; }
    public required PositionKind Positions { get; init; }
    /// <summary>The rotary frequencies; null for learned positions.</summary>
    public RopeSpec? Rope { get; init; }
    public required MlpKind Mlp { get; init; }
    /// <summary>q, k and v projections carry biases (GPT-2; Qwen2; Llama with attention_bias).</summary>
    public required bool QkvBias { get; init; }
    /// <summary>The attention output projection carries a bias (GPT-2; Llama with attention_bias).</summary>
    public required bool OutBias { get; init; }
    /// <summary>The MLP's projections carry biases (GPT-2; Llama with mlp_bias).</summary>
    public required bool MlpBias { get; init; }
    /// <summary>The output head is the token embedding.</summary>
    public required bool Tied { get; init; }

    /// <summary>H/G: query heads per KV group.</summary>
    public int GroupSize => QueryHeads / KvHeads;

    /// <summary>LayerNorm carries a bias β; RMSNorm has none.</summary>
    public bool NormBias => Norm == NormKind.LayerNorm;

    /// <summary>A short description for tables: "gpt2 L=12 d=768 H=12 hd=64 F=3072 V=50257 tied".</summary>
    public string Describe() =>
        $"{Architecture} L={Layers} d={Hidden} H={QueryHeads}" + (KvHeads != QueryHeads ? $" G={KvHeads}" : "") +
        $" hd={HeadDim} F={Inner} V={Vocab} {(Tied ? "tied" : "untied")}";
}
