using GaugeTorch.Model;

namespace GaugeTorch.Alignment;

/// <summary>A pair (or list) of models that cannot be aligned, merged or interpolated: the message names the first mismatch.</summary>
public sealed class ModelMismatchException(string message) : ArgumentException(message);

/// <summary>Whether two models have the same architecture and every tensor the same shape (the head's tying aside).</summary>
public static class ModelCompatibility
{
    /// <summary>Throws <see cref="ModelMismatchException"/> naming the first difference between <paramref name="a"/> and <paramref name="b"/>.</summary>
    public static void RequireSameShapes(ModelTraits a, ModelTraits b, string nameA, string nameB)
    {
        string? m = FirstMismatch(a, b);
        if (m is not null) throw new ModelMismatchException($"{nameA} and {nameB} differ: {m}");
    }

    /// <summary>The first difference that changes a tensor's shape or the forward, in words, or null.</summary>
    public static string? FirstMismatch(ModelTraits a, ModelTraits b)
    {
        (string Name, object A, object B)[] fields =
        [
            ("architecture", a.Architecture, b.Architecture), ("layers", a.Layers, b.Layers), ("hidden size d", a.Hidden, b.Hidden),
            ("query heads", a.QueryHeads, b.QueryHeads), ("key/value heads", a.KvHeads, b.KvHeads), ("head dim", a.HeadDim, b.HeadDim),
            ("MLP width", a.Inner, b.Inner), ("vocabulary", a.Vocab, b.Vocab), ("positions", a.MaxPositions, b.MaxPositions),
            ("norm", a.Norm, b.Norm), ("norm epsilon", a.NormEps, b.NormEps), ("position kind", a.Positions, b.Positions), ("MLP kind", a.Mlp, b.Mlp),
            ("q/k/v biases", a.QkvBias, b.QkvBias), ("output bias", a.OutBias, b.OutBias), ("MLP biases", a.MlpBias, b.MlpBias),
            ("rotary spec", a.Rope?.ToString() ?? "none", b.Rope?.ToString() ?? "none"),
        ];
        foreach (var (name, x, y) in fields)
            if (!Equals(x, y)) return $"{name} {x} vs {y}";
        return null;
    }

    /// <summary>Checks checkpoints pairwise against the first, naming the directories.</summary>
    public static void RequireSameShapes(IReadOnlyList<Checkpoint> models)
    {
        for (int i = 1; i < models.Count; i++)
        {
            string? m = FirstMismatch(models[0].Traits, models[i].Traits);
            if (m is not null) throw new ModelMismatchException($"{models[i].Directory} does not match {models[0].Directory}: {m}");
        }
    }
}
