using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 14 (GAUGE.md §2b; §6.2 family 7), unembedding offset: head → head + 1·uᵀ. Why it is a symmetry: the same
/// u added to every vocabulary row adds n·u to every logit of a position, and the softmax ignores a per-position
/// constant. With a tied head u would also enter the input, so it needs an untied head. Any norm. Dimension d.
/// Shifts of 0.1 × the head's RMS (§4); on the streaming evaluator it is one per-position term.
/// </summary>
public sealed class UnembedOffset : SymmetryFamily
{
    public static readonly UnembedOffset Instance = new();

    public override string Name => "unembed-offset";
    public override string Reference => "GAUGE.md §2b family 14";
    public override bool Discrete => false;
    public override string Requirement => "an untied head (lm_head differs from the embedding)";
    public override bool HoldsFor(ModelTraits t) => !t.Tied;
    public override string DimensionFormula(ModelTraits t) => "d";
    public override long Dimension(ModelTraits t) => t.Hidden;

    private UnembedOffsetAction Draw(Generator g, GlobalView stored, ModelTraits t) =>
        new(GaugeRandom.Shift([t.Hidden], ViewOps.Required(stored.Head, "untied head"), g));

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(globals: g => Draw(key.For(-1, Name), g, t));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t) => new DrawnGenerator(
        layer: null,
        globals: at =>
        {
            var u = Draw(key.For(-1, Name + "/generator"), at, t).U;
            var v = ViewOps.Zeros(at);
            v.Head = (zeros(at.Head!.shape, ScalarType.Float64) + u).contiguous();
            return v;
        },
        exp: tau => new DrawnElement(globals: g => new UnembedOffsetAction(Draw(key.For(-1, Name + "/generator"), g, t).U * tau)));
}

public sealed class UnembedOffsetAction(Tensor u) : IGlobalAction
{
    /// <summary>[d] added to every head row.</summary>
    public Tensor U { get; } = u;
    public string Name => "unembed-offset";

    public void Apply(GlobalState g) => (g.Head ?? throw new ArgumentException("unembed-offset needs an untied head")).AddOuter(null, U);

    public IGlobalAction Inverse() => new UnembedOffsetAction(-U);
}
