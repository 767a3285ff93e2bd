using GaugeTorch.Model;
using GaugeTorch.Symmetry;

namespace GaugeTorch.Audit;

/// <summary>
/// The audit's rows (<see cref="FamilyRow"/>) taken from the symmetry catalog itself (<see cref="SymmetryCatalog"/>):
/// every family's name, where GAUGE.md states it, its dimension formula for the model's traits, where it holds and its
/// dimension are the family's own (<see cref="SymmetryFamily.HoldsFor"/>, <see cref="SymmetryFamily.Dimension"/>), so
/// the redundancy table and the nullity certificate check exactly what verify-invariance and transform apply (for
/// example Llama's attention_bias brings value-bias, L·G·hd more, which a hand-kept list would miss).
/// <para>
/// Tangents for the gradient check: where <see cref="ProvisionalCatalog"/> has a sampler for the same family and
/// model it is used (so that seeds keep their tangents and the gradient figures in docs/audit.md stay bit for bit, and
/// its tangents' zero parts are stride-0, which gpt2-xl's float64 layers need); otherwise the family's own random
/// generator (<see cref="SymmetryFamily.RandomGenerator"/>), whose tangents the tests check against finite
/// differences of the family's action. The number and formula text are that list's where it has the family (the audit's JSON
/// keeps its strings, e.g. "(d−1)(d−2)/2", "0 (discrete: S_h per layer)"), else the family's own.
/// </para>
/// </summary>
public static class CatalogRows
{
    /// <summary>The rows of every catalog family that holds for <paramref name="t"/>, in catalog order.</summary>
    public static IReadOnlyList<FamilyRow> For(ModelTraits t) => SymmetryCatalog.For(t).Select(f => Row(f, t)).ToList();

    private static FamilyRow Row(SymmetryFamily f, ModelTraits t)
    {
        var known = ProvisionalCatalog.Rows.FirstOrDefault(r => r.Name == f.Name && r.Holds(t));
        Func<ModelTraits, long, ITangent>? tangent = f.Discrete ? null
            : known?.Tangent ?? ((tt, seed) => f.RandomGenerator(new SampleKey(seed, 0), tt)
                ?? throw new InvalidOperationException($"family '{f.Name}' is continuous but has no random generator"));
        return new FamilyRow(f.Name, known?.Number ?? Number(f.Reference), known?.Formula ?? (f.Discrete ? "0 (discrete)" : f.DimensionFormula(t)), f.HoldsFor, f.Dimension, tangent);
    }

    /// <summary>"GAUGE.md §2b family 16" → "§2b 16"; "GAUGE.md §6.2 (global, tied)" → "§6.2 (global, tied)".</summary>
    internal static string Number(string reference) =>
        reference.Replace("GAUGE.md ", "", StringComparison.Ordinal).Replace("family ", "", StringComparison.Ordinal);
}
