using GaugeTorch.Model;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 6 (GAUGE.md §2), LayerNorm gain ↔ reader rows, for the first norm with Q | K | V and the second with the
/// MLP's up (and gate) projection: γ → γ∘s, β → β∘s, W → diag(s)^{-1} W, for any s without zeros. Why it is a
/// symmetry: a reader computes (n∘γ + β)·W = (n∘γ∘s + β∘s)·diag(s)^{-1}W. Dimension 2d per layer. Gains with
/// |s| ∈ [0.5, 2] (log-uniform) and random signs (§4). RMSNorm models have the bias-free analogue (norm-gain).
/// </summary>
public sealed class LayerNormGain : NormGainFamily
{
    public static readonly LayerNormGain Instance = new();

    public override string Name => "ln-gain";
    public override string Reference => "GAUGE.md §2 family 6";
    public override string Requirement => "LayerNorm";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm;
}
