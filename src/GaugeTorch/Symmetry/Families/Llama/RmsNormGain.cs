using GaugeTorch.Model;

namespace GaugeTorch.Symmetry;

/// <summary>
/// LLaMA family, GAUGE.md §6.2 family 5, RMSNorm gain ↔ readers: g₁ → g₁∘s₁ with the q, k, v input rows (HF: the
/// columns of q_proj, k_proj, v_proj) → diag(s₁)⁻¹·, and g₂ → g₂∘s₂ with gate and up likewise, for any s without zeros.
/// Why it is a symmetry: a reader computes (n∘g)·W = (n∘g∘s)·diag(s)⁻¹W, and the biases (Qwen2's q/k/v, mlp_bias) are
/// added after the product, so they stay. RMSNorm has no bias and no mean, so GPT-2's ln-bias, reader-mean and
/// writer-mean have no counterpart, and its eps breaks a global scale of the residual. Dimension L·2d. Gains with
/// |s| ∈ [0.5, 2] log-uniform and random signs (§4), as ln-gain draws them (the action is the same: <see cref="NormGainAction"/>).
/// </summary>
public sealed class RmsNormGain : NormGainFamily
{
    public static readonly RmsNormGain Instance = new();

    public override string Name => "norm-gain";
    public override string Reference => "GAUGE.md §6.2 family 5";
    public override string Requirement => "RMSNorm";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.RmsNorm;
}
