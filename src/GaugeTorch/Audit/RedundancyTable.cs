using GaugeTorch.Model;

namespace GaugeTorch.Audit;

/// <summary>One family's line of the redundancy table.</summary>
public sealed record RedundancyRow(string Name, string Number, string Formula, long Dimension, bool Continuous);

/// <summary>A count from the literature to set beside the catalog's total.</summary>
public sealed record ReferenceCount(string Name, string Formula, long Value, string Note);

/// <summary>
/// A model's redundancy table: every catalog family that holds for its traits with its dimension as a formula and
/// as a number, the continuous total, the counts of the papers this project starts from, and the parameter count.
/// The catalog is an input (<see cref="FamilyRow"/>s), so the table is the same code before and after the catalog
/// lands. Counts are exact integers (long) and checked against GAUGE.md's tables in the tests.
/// </summary>
public sealed record RedundancyTable(ModelTraits Traits, IReadOnlyList<RedundancyRow> Rows, long Total, long Parameters,
    IReadOnlyList<ReferenceCount> References)
{
    /// <summary>The continuous total as a percentage of the parameters.</summary>
    public double Percent => 100.0 * Total / Parameters;

    public static RedundancyTable For(ModelTraits t, IEnumerable<FamilyRow> catalog)
    {
        var rows = catalog.Where(f => f.Holds(t)).Select(f =>
        {
            long dim = f.Dimension(t);
            return new RedundancyRow(f.Name, f.Number, f.Formula, dim, dim > 0);
        }).ToList();
        var dup = rows.GroupBy(r => r.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new InvalidOperationException($"the catalog has two families named '{dup.Key}' that hold for {t.Describe()}");
        if (rows.Count == 0) throw new NotSupportedException($"no catalog family holds for {t.Describe()} (norm {t.Norm}, positions {t.Positions}, MLP {t.Mlp})");
        return new RedundancyTable(t, rows, rows.Sum(r => r.Dimension), ParameterCount(t), ReferenceCounts(t));
    }

    /// <summary>
    /// The number of parameters of a model with these traits, counted from the view's structure (the tied head
    /// counted once): per layer the norms (gain, and bias for LayerNorm), Q, K, V, O with the biases the traits
    /// have, the MLP (gate for SwiGLU); globally the embedding, learned positions, the final norm and an untied head.
    /// </summary>
    public static long ParameterCount(ModelTraits t)
    {
        long d = t.Hidden, f = t.Inner, hd = t.HeadDim, h = t.QueryHeads, g = t.KvHeads;
        long norm = t.NormBias ? 2 * d : d;
        long attn = d * h * hd + 2 * d * g * hd + h * hd * d + (t.QkvBias ? h * hd + 2 * g * hd : 0) + (t.OutBias ? d : 0);
        long mlp = (t.Mlp == MlpKind.SwiGlu ? 2 : 1) * d * f + f * d
                   + (t.MlpBias ? (t.Mlp == MlpKind.SwiGlu ? 2 * f : f) + d : 0);
        long layer = 2 * norm + attn + mlp;
        long globals = (long)t.Vocab * d + (t.Positions == PositionKind.Learned ? (long)t.MaxPositions * d : 0) + norm
                       + (t.Tied ? 0 : (long)t.Vocab * d);
        return t.Layers * layer + globals;
    }

    /// <summary>
    /// The literature's counts. GPT-2 (learned positions, MHA): the papers' G_max = 2·L·h·d_k² (families 1–2; the
    /// permutations are discrete) and van Nierop's 2·L·h·d_k² + (d−1)(d−2)/2, which includes the residual rotation
    /// (exact only for an untied head) and omits families 4–10. Rotary models: the paper's G_share,RoPE count
    /// L·G·(hd + hd²) (per KV group a GL(hd) on V/O and the RoPE commutant on Q/K, counted as hd).
    /// </summary>
    public static IReadOnlyList<ReferenceCount> ReferenceCounts(ModelTraits t)
    {
        long l = t.Layers, h = t.QueryHeads, hd = t.HeadDim, g = t.KvHeads, d = t.Hidden;
        if (t.Positions == PositionKind.Rotary)
            return [new("G_share,RoPE", "L·G·(hd + hd²)", l * g * (hd + hd * hd), "the paper's count for grouped-query RoPE models")];
        return
        [
            new("G_max", "2·L·h·d_k²", 2 * l * h * hd * hd, "the papers' count (families 1–2)"),
            new("van Nierop", "2·L·h·d_k² + (d−1)(d−2)/2", 2 * l * h * hd * hd + (d - 1) * (d - 2) / 2,
                t.Tied ? "includes the residual rotation, which does not hold with a tied head" : "includes the residual rotation (untied head)"),
        ];
    }
}
