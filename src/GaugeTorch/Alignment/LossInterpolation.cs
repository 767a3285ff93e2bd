using GaugeTorch.Model;

namespace GaugeTorch.Alignment;

/// <summary>One loss curve along (1−λ)·A + λ·B and its barrier.</summary>
public sealed record LossCurve(IReadOnlyList<double> Lambdas, IReadOnlyList<double> Losses)
{
    /// <summary>max_λ [L(λ) − ((1−λ)·L(0) + λ·L(1))] (0 at the ends, so never negative).</summary>
    public double Barrier
    {
        get
        {
            double l0 = Losses[0], l1 = Losses[^1], best = 0;
            for (int i = 0; i < Lambdas.Count; i++)
                best = Math.Max(best, Losses[i] - ((1 - Lambdas[i]) * l0 + Lambdas[i] * l1));
            return best;
        }
    }

    /// <summary>The λ where the barrier is reached.</summary>
    public double BarrierLambda
    {
        get
        {
            double l0 = Losses[0], l1 = Losses[^1], best = 0, at = 0;
            for (int i = 0; i < Lambdas.Count; i++)
            {
                double gap = Losses[i] - ((1 - Lambdas[i]) * l0 + Lambdas[i] * l1);
                if (gap > best) { best = gap; at = Lambdas[i]; }
            }
            return at;
        }
    }
}

/// <summary>Loss along the straight line between two models (naive or after alignment; docs/merging.md).</summary>
public static class LossInterpolation
{
    /// <summary>λ = 0, 1/steps, …, 1.</summary>
    public static double[] Lambdas(int steps)
    {
        if (steps < 1) throw new ArgumentException($"steps must be at least 1 (got {steps})");
        return Enumerable.Range(0, steps + 1).Select(i => (double)i / steps).ToArray();
    }

    /// <summary>The cross-entropy curve of (1−λ)·A + λ·B on <paramref name="tokens"/> (float64).</summary>
    public static LossCurve Curve(ModelWeights a, ModelWeights b, int[] tokens, IReadOnlyList<double> lambdas, IProgress<int>? progress = null)
    {
        var losses = new List<double>();
        foreach (var lambda in lambdas)
        {
            using var m = ModelEvaluation.Lerp(a, b, lambda);
            losses.Add(ModelEvaluation.CrossEntropy(m, tokens));
            progress?.Report(losses.Count);
        }
        return new LossCurve(lambdas, losses);
    }
}
