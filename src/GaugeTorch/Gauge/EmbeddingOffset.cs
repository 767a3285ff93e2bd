using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Family 10 (global), embedding offset and position mean: wte → wte + 1uᵀ and wpe → wpe − 1uᵀ leave the input
/// unchanged, and the tied head then shifts every logit of a position by the same amount (removed by row-centring);
/// wpe → wpe + c1ᵀ adds a multiple of 1 to the residual, which no LayerNorm reads. Dimension d + P.
/// </summary>
public sealed class EmbeddingOffset(Tensor u, Tensor cPos)
{
    /// <summary>[d] offset added to every wte row and taken from every wpe row.</summary>
    public Tensor U { get; } = u;
    /// <summary>[P] per-position constant added to all of a wpe row.</summary>
    public Tensor CPos { get; } = cPos;
    public string Name => "embedding-offset";

    public static EmbeddingOffset Sample(Generator g, Tensor wte, Tensor wpe, Gpt2Config c) =>
        new(GaugeRandom.Shift([c.NEmbd], wte, g), GaugeRandom.Shift([c.NPositions], wpe, g));

    /// <summary>Returns new (wte, wpe) tensors; the inputs are not modified.</summary>
    public (Tensor Wte, Tensor Wpe) Apply(Tensor wte, Tensor wpe)
    {
        using var scope = NewDisposeScope();
        var newWte = wte + U.to_type(wte.dtype);
        var newWpe = wpe - U.to_type(wpe.dtype) + CPos.to_type(wpe.dtype).unsqueeze(1);
        return (newWte.MoveToOuterDisposeScope(), newWpe.MoveToOuterDisposeScope());
    }

    public EmbeddingOffset Inverse() => new(-U, -CPos);
}
