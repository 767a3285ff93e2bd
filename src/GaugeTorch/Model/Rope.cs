using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>
/// Rotary position embedding (HuggingFace <c>rotate_half</c> convention): inside a head, dimension j pairs with
/// j + hd/2 and at position p the pair is rotated by ω_j·p. <c>rope_scaling</c> only changes the ω_j (and may scale
/// cos and sin by one factor), so the gauge math never depends on it. HF computes ω and cos/sin in float32;
/// GaugeTorch computes them in float64.
/// </summary>
/// <param name="Theta"><c>rope_theta</c>.</param>
/// <param name="Scaling">"default", "linear" or "llama3".</param>
/// <param name="Factor">linear/llama3 <c>factor</c>.</param>
/// <param name="LowFreqFactor">llama3 <c>low_freq_factor</c>.</param>
/// <param name="HighFreqFactor">llama3 <c>high_freq_factor</c>.</param>
/// <param name="OriginalMaxPositions">llama3 <c>original_max_position_embeddings</c>.</param>
public sealed record RopeSpec(double Theta, string Scaling = "default", double Factor = 1, double LowFreqFactor = 1,
    double HighFreqFactor = 4, int OriginalMaxPositions = 8192)
{
    public static readonly IReadOnlyList<string> SupportedScalings = ["default", "linear", "llama3"];

    /// <summary>Factor applied to cos and sin (1 for every supported scaling).</summary>
    public double AttentionScaling => 1.0;

    /// <summary>ω_j for j = 0 … hd/2 − 1, in float64.</summary>
    public double[] InverseFrequencies(int headDim)
    {
        int half = headDim / 2;
        var w = new double[half];
        for (int j = 0; j < half; j++) w[j] = 1.0 / Math.Pow(Theta, 2.0 * j / headDim);
        switch (Scaling)
        {
            case "default":
                break;
            case "linear":
                for (int j = 0; j < half; j++) w[j] /= Factor;
                break;
            case "llama3":
                // Llama 3.1: long wavelengths divided by the factor, short ones kept, a smooth blend between.
                double lowWave = OriginalMaxPositions / LowFreqFactor, highWave = OriginalMaxPositions / HighFreqFactor;
                for (int j = 0; j < half; j++)
                {
                    double wave = 2 * Math.PI / w[j];
                    if (wave > lowWave) w[j] /= Factor;
                    else if (wave >= highWave)
                    {
                        double smooth = (OriginalMaxPositions / wave - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
                        w[j] = (1 - smooth) * w[j] / Factor + smooth * w[j];
                    }
                }
                break;
            default:
                throw new NotSupportedException($"rope_scaling type '{Scaling}' is not supported (supported: {string.Join(", ", SupportedScalings)})");
        }
        return w;
    }

    /// <summary>cos and sin tables [T, hd] for positions start … start+T−1 (each ω_j repeated for j and j + hd/2), float64.</summary>
    public (Tensor Cos, Tensor Sin) Tables(int headDim, long start, long count, Device? device = null)
    {
        using var scope = NewDisposeScope();
        var w = tensor(InverseFrequencies(headDim), ScalarType.Float64);
        var p = arange(start, start + count, dtype: ScalarType.Float64);
        var angles = outer(p, w);                                   // [T, hd/2]
        var emb = cat([angles, angles], 1);                          // [T, hd]
        var cos = emb.cos() * AttentionScaling;
        var sin = emb.sin() * AttentionScaling;
        if (device is not null) { cos = cos.to(device); sin = sin.to(device); }
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin for x [.., T, hd] (tables [T, hd] cast to x's dtype).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([-x2, x1], -1);
        return (x * cos.to_type(x.dtype) + rotated * sin.to_type(x.dtype)).MoveToOuterDisposeScope();
    }
}
