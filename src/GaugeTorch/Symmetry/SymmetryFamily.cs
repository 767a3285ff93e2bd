using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// One family of the catalog (GAUGE.md §2, §2b, §6.2) or one invalid control (§3, §6.3). A family is data about
/// where it holds and how big it is, plus the means to draw elements of it; its file says why it is a symmetry.
/// Every family acts on the architecture-neutral views (<see cref="LayerView"/>, <see cref="GlobalState"/>) in
/// float64, so it works on every architecture whose <see cref="ModelTraits"/> satisfy <see cref="HoldsFor"/>.
/// A new family is one new file with one instance added to <see cref="SymmetryCatalog"/>.
/// </summary>
public abstract class SymmetryFamily
{
    /// <summary>The name used by <c>--families</c> and in the JSON (e.g. "qk", "residual-perm", "invalid:cross-head-mixing").</summary>
    public abstract string Name { get; }

    /// <summary>Where the spec states it, e.g. "GAUGE.md §2 family 1".</summary>
    public abstract string Reference { get; }

    /// <summary>False for an invalid control (a transformation outside the group that must change the logits).</summary>
    public virtual bool Valid => true;

    /// <summary>The papers' families (query–key and value–output bases, head and MLP permutations); their default tolerance is tighter.</summary>
    public virtual bool IsPaper => false;

    /// <summary>True for a discrete family (permutations, signs): no continuous dimension, no tangent.</summary>
    public abstract bool Discrete { get; }

    /// <summary>Where the family holds, as a predicate over the architecture's traits.</summary>
    public abstract bool HoldsFor(ModelTraits t);

    /// <summary>What <see cref="HoldsFor"/> asks of a model, in words (for errors and docs), e.g. "LayerNorm and an untied head".</summary>
    public abstract string Requirement { get; }

    /// <summary>The continuous dimension as a formula over the traits' symbols (L, d, h, d_k, G, hd, F, V, P); "0" for a discrete family.</summary>
    public abstract string DimensionFormula(ModelTraits t);

    /// <summary>The continuous dimension for these traits (0 for a discrete family or a control).</summary>
    public abstract long Dimension(ModelTraits t);

    /// <summary>
    /// A random element of the family (or a random control), deterministic in the key's seed and stream and in the
    /// layer; sampled lazily, one layer at a time, scaled to the weights it acts on (GAUGE.md §4).
    /// </summary>
    public abstract FamilyElement Sample(SampleKey key, ModelTraits t);

    /// <summary>
    /// A random generator X of a continuous family: its tangent d/dτ (exp(τX)·θ) at τ = 0 and the elements exp(τX)
    /// themselves (so that tests can check the tangent against a finite difference of the family's own action).
    /// Null for a discrete family or a control.
    /// </summary>
    public virtual FamilyGenerator? RandomGenerator(SampleKey key, ModelTraits t) => null;

    public override string ToString() => Name;
}

/// <summary>The randomness of one group element: the run's seed and the element's stream (its index among the run's elements).</summary>
public readonly record struct SampleKey(GaugeRandom Rng, int Stream)
{
    public SampleKey(long seed, int stream) : this(new GaugeRandom(seed), stream) { }

    /// <summary>The generator for one (layer, purpose) of this element; layer −1 is the globals.</summary>
    public Generator For(int layer, string what) => Rng.For(Stream, layer, what);
}

/// <summary>
/// One sampled element of one family. Its per-layer parts are drawn on demand (from the layer's stored weights, for
/// the scale of additive shifts); parts shared by every layer (a residual permutation or rotation) are drawn once and
/// kept until <see cref="Dispose"/> (after which they are drawn again, identically, if asked for).
/// </summary>
public abstract class FamilyElement : IDisposable
{
    /// <summary>The action on layer <paramref name="layer"/>, drawn for its stored float64 view; null when the family does not touch layers.</summary>
    public virtual ILayerAction? Layer(int layer, LayerView stored) => null;

    /// <summary>The action on the globals, drawn for the stored globals (any dtype); null when the family does not touch them.</summary>
    public virtual IGlobalAction? Globals(GlobalView stored) => null;

    /// <summary>Frees the parts shared by every layer.</summary>
    public virtual void Dispose() { }
}

/// <summary>
/// A random generator X of a continuous family (drawn lazily, layer by layer, deterministic in the key): the
/// tangent v = d/dτ (exp(τX)·θ) at τ = 0 (<see cref="ITangent"/>) and the group elements exp(τX).
/// </summary>
public abstract class FamilyGenerator : ITangent, IDisposable
{
    public abstract LayerView? Layer(int layer, LayerView at);
    public abstract GlobalView? Globals(GlobalView at);

    /// <summary>The group element exp(τX) (the same X the tangent uses).</summary>
    public abstract FamilyElement Exp(double tau);

    /// <summary>Frees the parts of X shared by every layer.</summary>
    public virtual void Dispose() { }
}

/// <summary>
/// One sampled transformation of one block. <see cref="Apply"/> replaces the tensors of a float64 view that it
/// moves with new tensors computed from the current ones; it never modifies a tensor in place and never disposes
/// one (<see cref="LayerTransform.Apply"/> owns the intermediate tensors).
/// </summary>
public interface ILayerAction
{
    string Name { get; }
    void Apply(LayerView w, ModelTraits t);
    ILayerAction Inverse();
}

/// <summary>
/// A layer action that is also expressible as maps on the block's activations (<see cref="BlockMaps"/>): running the
/// stored layer with <see cref="Maps"/> computes the same function as running <see cref="ILayerAction.Apply"/>'s
/// weights, up to rounding, at O(T·d²) instead of O(d³) per layer. The streaming evaluator uses it for a copy whose
/// only layer action this is (issue 12: the dense controls' d×d products were most of gpt2-xl's gauge work).
/// </summary>
public interface IActivationMapAction : ILayerAction
{
    BlockMaps Maps(ModelTraits t);
}

/// <summary>
/// A layer action that is a change of basis x ↦ x·M of the residual stream (residual-perm, residual-rotation): it moves
/// the norms' parameters (d-vectors), every reader W → R·W and every writer W → W·S (bias included). The streaming
/// evaluator runs the transformed block without rewriting the big matrices (issue 12: residual-perm was the largest
/// single part of all-together's per-layer work on gpt2-xl): the view with <see cref="OnNorms"/> applied, whose norms
/// act on the transformed state x′ as the transformed model's do, and <see cref="Maps"/> h ↦ h·R on each normalized
/// input before its readers and y ↦ y·S on each writer's output. By associativity (h·R)·W = h·(R·W) and
/// (z·W + b)·S = z·(W·S) + b·S this is the transformed block itself, not the stored block wrapped in M and M⁻¹ (which
/// would assume the very commutation of the norms with M that makes the family a symmetry); <c>transform</c> and the
/// exports still apply the action to the weights. ResidualMapsTests checks one against the other.
/// </summary>
public interface IResidualMapAction : ILayerAction
{
    /// <summary>A view sharing <paramref name="w"/>'s tensors (aliases) but for its norms, which this action moves.</summary>
    LayerView OnNorms(LayerView w);

    /// <summary>
    /// Reader maps h ↦ h·R (per norm of <paramref name="w"/>, the view before <see cref="OnNorms"/>) and the writer
    /// map y ↦ y·S, each in its argument's dtype.
    /// </summary>
    BlockMaps Maps(LayerView w);
}

/// <summary>One sampled transformation of the globals (embedding, positions, final norm, head), acting on a <see cref="GlobalState"/>.</summary>
public interface IGlobalAction
{
    string Name { get; }
    void Apply(GlobalState g);
    IGlobalAction Inverse();
}
