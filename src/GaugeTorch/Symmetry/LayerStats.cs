using System.Runtime.CompilerServices;
using GaugeTorch.Model;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Scalars that families compute from a stored layer to scale their draws (root mean squares, gain statistics),
/// computed once per (view, purpose, input tensors) and reused by every element drawn from the same view. The
/// streaming evaluator draws all its elements of a layer from one view, so reader-mean and writer-mean no longer
/// recompute the RMS of Q | K | V, up, O and down for each of their 4 and all-together's 4 elements (issue 12: on
/// gpt2-xl each draw was 50–110 ms). The values are those the first computation gave, bit for bit. A hit needs the
/// same tensor handles (tensors are never modified in place, see <see cref="ILayerAction"/>); the view is held
/// weakly.
/// </summary>
internal static class LayerStats
{
    private sealed class Entry
    {
        public readonly Dictionary<string, (object[] Inputs, double[] Values)> Values = new(StringComparer.Ordinal);
    }

    private static readonly ConditionalWeakTable<LayerView, Entry> Table = new();

    /// <summary>The cached values of <paramref name="compute"/> for this view and purpose, if computed from the same <paramref name="inputs"/>.</summary>
    public static double[] Get(LayerView w, string purpose, object?[] inputs, Func<double[]> compute)
    {
        var entry = Table.GetValue(w, _ => new Entry());
        lock (entry)
        {
            if (entry.Values.TryGetValue(purpose, out var hit) && hit.Inputs.Length == inputs.Length
                && hit.Inputs.Zip(inputs).All(p => ReferenceEquals(p.First, p.Second)))
                return hit.Values;
        }
        var values = compute();
        lock (entry) entry.Values[purpose] = (inputs.Select(i => i ?? Missing).ToArray(), values);
        return values;
    }

    private static readonly object Missing = new();
}
