using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Family 10 (GAUGE.md §2, global), embedding offset and position mean: wte → wte + 1uᵀ with wpe → wpe − 1uᵀ
/// (u ∈ R^d), and wpe → wpe + c·1ᵀ (c ∈ R^P). Why it is a symmetry: the first pair leaves every input row
/// wte[t] + wpe[p] unchanged, and a tied head then shifts every logit of a position by the same n·u, which the
/// softmax ignores (an untied head is left alone); the second adds a multiple of 1 to the residual, which no
/// LayerNorm reads. It needs LayerNorm and learned positions. Dimension d + P. Shifts of 0.1 × the RMS of wte and
/// wpe (§4). On the streaming evaluator the offset is one term of the lazy embedding: d numbers, no copy of wte.
/// </summary>
public sealed class EmbeddingOffset : SymmetryFamily
{
    public static readonly EmbeddingOffset Instance = new();

    public override string Name => "embedding-offset";
    public override string Reference => "GAUGE.md §2 family 10";
    public override bool Discrete => false;
    public override string Requirement => "LayerNorm and learned positions";
    public override bool HoldsFor(ModelTraits t) => t.Norm == NormKind.LayerNorm && t.Positions == PositionKind.Learned;
    public override string DimensionFormula(ModelTraits t) => "d + P";
    public override long Dimension(ModelTraits t) => (long)t.Hidden + t.MaxPositions;

    private EmbeddingOffsetAction Draw(Generator g, GlobalView stored, ModelTraits t) =>
        new(GaugeRandom.Shift([t.Hidden], stored.Embed, g), GaugeRandom.Shift([t.MaxPositions], ViewOps.Required(stored.Positions, "position table"), g));

    public override FamilyElement Sample(SampleKey key, ModelTraits t) => new DrawnElement(globals: g => Draw(key.For(-1, Name), g, t));

    public override FamilyGenerator RandomGenerator(SampleKey key, ModelTraits t) => new DrawnGenerator(
        layer: null,
        globals: at =>
        {
            var a = Draw(key.For(-1, Name + "/generator"), at, t);
            var v = ViewOps.Zeros(at);
            v.Embed = (zeros(at.Embed.shape, ScalarType.Float64) + a.U).contiguous();
            v.Positions = (zeros(at.Positions!.shape, ScalarType.Float64) - a.U + a.CPos.unsqueeze(1)).contiguous();
            return v;
        },
        exp: tau => new DrawnElement(globals: g =>
        {
            var a = Draw(key.For(-1, Name + "/generator"), g, t);
            return new EmbeddingOffsetAction(a.U * tau, a.CPos * tau);
        }));
}

public sealed class EmbeddingOffsetAction(Tensor u, Tensor cPos) : IGlobalAction
{
    /// <summary>[d] added to every embedding row and taken from every position row.</summary>
    public Tensor U { get; } = u;
    /// <summary>[P] added to all of a position row.</summary>
    public Tensor CPos { get; } = cPos;
    public string Name => "embedding-offset";

    public void Apply(GlobalState g)
    {
        var positions = g.Positions ?? throw new ArgumentException("embedding-offset needs a learned position table");
        g.Embed.AddOuter(null, U);
        positions.AddOuter(null, -U);
        positions.AddOuter(CPos, null);
    }

    public IGlobalAction Inverse() => new EmbeddingOffsetAction(-U, -CPos);
}
