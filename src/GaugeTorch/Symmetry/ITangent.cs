using GaugeTorch.Model;

namespace GaugeTorch.Symmetry;

/// <summary>
/// A tangent vector of a continuous gauge family at the weights θ: v = d/dt (exp(tX)·θ) at t = 0 for one random
/// generator X of the family (the same X in every layer where the family's generator is global, e.g. a residual
/// rotation). It is produced lazily, layer by layer, so that a checkpoint of any size can be streamed: the audit's
/// gradient-orthogonality check pairs it with ∇L one layer at a time. Every returned view is float64 with the
/// structure of the view it is evaluated at (tensors the family does not move are zero); null means a zero part.
/// </summary>
public interface ITangent
{
    /// <summary>The tangent's part in layer <paramref name="layer"/>, evaluated at that layer's weights <paramref name="at"/>.</summary>
    LayerView? Layer(int layer, LayerView at);

    /// <summary>The tangent's part in the globals, evaluated at <paramref name="at"/>.</summary>
    GlobalView? Globals(GlobalView at);
}
