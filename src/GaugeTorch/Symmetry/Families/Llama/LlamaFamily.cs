using GaugeTorch.Model;

namespace GaugeTorch.Symmetry;

/// <summary>
/// What the LLaMA family's catalog (GAUGE.md §6.2: Llama, Qwen2, Mistral) asks of a model, for the families and
/// controls in <c>Families/Llama/</c> and <c>Invalid/Llama/</c>: RMSNorm before every reader, rotary positions and a
/// SwiGLU MLP. Families that need only one of these traits say so in their own predicate.
/// </summary>
internal static class LlamaFamily
{
    public static bool Holds(ModelTraits t) => t.Norm == NormKind.RmsNorm && t.Positions == PositionKind.Rotary && t.Mlp == MlpKind.SwiGlu;

    public const string Requirement = "a LLaMA-family model (RMSNorm, rotary positions, SwiGLU)";
}
