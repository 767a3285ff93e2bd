using GaugeTorch.Model;

namespace GaugeTorch.Symmetry;

/// <summary>
/// The registry: every family in GAUGE.md order (§2 families 1–11, §2b 12–16, with the LLaMA family's §6.2 families
/// from <c>Families/Llama/</c> beside their GPT-2 counterparts) and every invalid control (§3, §6.3). A family
/// holds for a model when its predicate over the model's <see cref="ModelTraits"/> does; "all" means every family that
/// holds. Names are unique among the entries that hold for any one model (an architecture may bring a family of its
/// own under a name that another architecture's family uses, with disjoint predicates).
/// </summary>
public static class SymmetryCatalog
{
    /// <summary>Every valid family, in catalog order.</summary>
    public static readonly IReadOnlyList<SymmetryFamily> Families =
    [
        QkBasis.Instance, QkRope.Instance, VoBasis.Instance, HeadPermutation.Instance, GroupPermutation.Instance, MlpPermutation.Instance,
        SwiGluScale.Instance, RmsNormGain.Instance, KeyBiasTranslation.Instance, ValueBiasShift.Instance, LayerNormGain.Instance, LayerNormBias.Instance,
        ReaderMean.Instance, WriterMean.Instance, EmbeddingOffset.Instance, ResidualPermutation.Instance,
        ResidualSignedPermutation.Instance,
        TokenMean.Instance, FinalGain.Instance, UnembedOffset.Instance, FinalBias.Instance, ResidualRotation.Instance,
    ];

    /// <summary>Every invalid control, in catalog order.</summary>
    public static readonly IReadOnlyList<SymmetryFamily> Controls =
    [
        CrossHeadMixing.Instance, GlobalOrthogonal.Instance, MismatchedQk.Instance,
        NonCommutingRope.Instance, CrossGroupMixing.Instance, MismatchedQkRope.Instance, TiedResidualRotation.Instance,
    ];

    /// <summary>The families that hold for a model ("all").</summary>
    public static IReadOnlyList<SymmetryFamily> For(ModelTraits t) => Families.Where(f => f.HoldsFor(t)).ToList();

    /// <summary>The papers' families that hold for a model ("paper").</summary>
    public static IReadOnlyList<SymmetryFamily> Paper(ModelTraits t) => Families.Where(f => f.IsPaper && f.HoldsFor(t)).ToList();

    /// <summary>The invalid controls that apply to a model.</summary>
    public static IReadOnlyList<SymmetryFamily> ControlsFor(ModelTraits t) => Controls.Where(c => c.HoldsFor(t)).ToList();

    /// <summary>Every family name, in catalog order (for help texts).</summary>
    public static IEnumerable<string> Names => Families.Select(f => f.Name).Distinct();

    /// <summary>The continuous dimension of the group of a model: the sum over the families that hold.</summary>
    public static long Dimension(ModelTraits t) => For(t).Sum(f => f.Dimension(t));

    /// <summary>
    /// Parses "all", "paper" or a comma-separated list of names (which may include "all" and "paper") for a model, in
    /// catalog order. A name that is not in the catalog, or a family that does not hold for this model, is an error
    /// naming it (and what the family needs).
    /// </summary>
    public static IReadOnlyList<SymmetryFamily> Parse(string spec, ModelTraits t)
    {
        var result = new List<SymmetryFamily>();
        foreach (var part in spec.Trim().ToLowerInvariant().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (part == "all") { result.AddRange(For(t)); continue; }
            if (part == "paper") { result.AddRange(Paper(t)); continue; }
            var named = Families.Where(f => f.Name == part).ToList();
            if (named.Count == 0)
                throw new ArgumentException($"unknown family '{part}' (known: all, paper, {string.Join(", ", Names)})");
            var holding = named.FirstOrDefault(f => f.HoldsFor(t))
                ?? throw new ArgumentException($"family '{part}' does not hold for this model ({t.Describe()}): it needs {named[0].Requirement}");
            result.Add(holding);
        }
        if (result.Count == 0) throw new ArgumentException("empty family list");
        return result.Distinct().OrderBy(f => Families.IndexOf(f)).ToList();
    }

    private static int IndexOf(this IReadOnlyList<SymmetryFamily> list, SymmetryFamily f)
    {
        for (int i = 0; i < list.Count; i++)
            if (ReferenceEquals(list[i], f)) return i;
        return -1;
    }
}
