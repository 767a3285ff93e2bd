using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Alignment;

/// <summary>Float64 function comparisons and losses of in-memory models (alignment checks, interpolation, merging).</summary>
public static class ModelEvaluation
{
    /// <summary>The largest relative error of row-centred float64 logits that counts as "the same function" after an alignment (measured figures are ~1e-14).</summary>
    public const double SameFunctionTolerance = 1e-9;

    /// <summary>Deterministic probe tokens for a data-free function check: a fixed pseudo-random sequence, at most the model's positions.</summary>
    public static int[] ProbeTokens(ModelTraits t, int count = 64)
    {
        var r = new Random(20261202);
        return Enumerable.Range(0, Math.Min(count, t.MaxPositions)).Select(_ => r.Next(t.Vocab)).ToArray();
    }

    /// <summary>‖Y_x − Y_y‖_F / ‖Y_x‖_F for row-centred float64 logits of tokens (at most one window of positions).</summary>
    public static double RelativeLogitsError(ModelWeights x, ModelWeights y, int[] tokens)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var tok = tensor(tokens.Take(x.Traits.MaxPositions).Select(i => (long)i).ToArray(), ScalarType.Int64);
        var lx = Forward.RowCentre(Forward.Logits(tok, x.Layers, x.Globals.To(ScalarType.Float64), x.Traits with { }).to_type(ScalarType.Float64));
        var ly = Forward.RowCentre(Forward.Logits(tok, y.Layers, y.Globals.To(ScalarType.Float64), y.Traits).to_type(ScalarType.Float64));
        return (lx - ly).norm().item<double>() / (lx.norm().item<double>() + double.Epsilon);
    }

    /// <summary>
    /// Mean next-token cross-entropy (nats per token) of <paramref name="m"/> on <paramref name="tokens"/>, in float64:
    /// the tokens are cut into consecutive windows of the model's positions, each predicting its own next tokens.
    /// </summary>
    public static double CrossEntropy(ModelWeights m, int[] tokens)
    {
        if (tokens.Length < 2) throw new ArgumentException("cross-entropy needs at least two tokens");
        using var _ = no_grad();
        int window = m.Traits.MaxPositions;
        double sum = 0;
        long count = 0;
        for (int start = 0; start + 1 < tokens.Length; start += window)
        {
            using var scope = NewDisposeScope();
            int len = Math.Min(window, tokens.Length - start - 1);
            var x = tensor(tokens.Skip(start).Take(len).Select(i => (long)i).ToArray(), ScalarType.Int64);
            var y = tensor(tokens.Skip(start + 1).Take(len).Select(i => (long)i).ToArray(), ScalarType.Int64);
            var logp = Forward.Logits(x, m.Layers, m.Globals, m.Traits).to_type(ScalarType.Float64).log_softmax(-1);
            sum -= logp.gather(1, y.unsqueeze(1)).sum().item<double>();
            count += len;
        }
        return sum / count;
    }

    /// <summary>Σ_k w_k·θ_k over every tensor (float64; the models must have the same shapes and tying).</summary>
    public static ModelWeights WeightedAverage(IReadOnlyList<ModelWeights> models, IReadOnlyList<double> weights)
    {
        if (models.Count != weights.Count || models.Count == 0) throw new ArgumentException("one weight per model");
        using var scope = NewDisposeScope();
        var first = models[0];
        var layers = new List<LayerView>();
        for (int l = 0; l < first.Layers.Count; l++)
        {
            var roles = models.Select(m => m.Layers[l].Named().ToDictionary(p => p.Role, p => p.Tensor)).ToList();
            layers.Add(first.Layers[l].MapNamed((role, _) => Sum(roles.Select(r => r[role]).ToList(), weights)).DetachFromDisposeScope());
        }
        var groles = models.Select(m => m.Globals.Named().ToDictionary(p => p.Role, p => p.Tensor)).ToList();
        var g = first.Globals;
        var globals = new GlobalView
        {
            Embed = Sum(groles.Select(r => r["embed"]).ToList(), weights),
            Positions = g.Positions is null ? null : Sum(groles.Select(r => r["positions"]).ToList(), weights),
            FinalNorm = new NormView
            {
                Gain = Sum(groles.Select(r => r["final_norm.gain"]).ToList(), weights),
                Bias = g.FinalNorm.Bias is null ? null : Sum(groles.Select(r => r["final_norm.bias"]).ToList(), weights),
            },
            Head = g.Head is null ? null : Sum(groles.Select(r => r["head"]).ToList(), weights),
        }.DetachFromDisposeScope();
        return new ModelWeights(layers, globals, first.Traits);
    }

    private static Tensor Sum(IReadOnlyList<Tensor> ts, IReadOnlyList<double> w)
    {
        var s = ts[0].to_type(ScalarType.Float64) * w[0];
        for (int k = 1; k < ts.Count; k++) s = s + ts[k].to_type(ScalarType.Float64) * w[k];
        return s.contiguous();
    }

    /// <summary>(1−λ)·A + λ·B.</summary>
    public static ModelWeights Lerp(ModelWeights a, ModelWeights b, double lambda) => WeightedAverage([a, b], [1 - lambda, lambda]);

    /// <summary>A copy rounded to <paramref name="storage"/> and widened back to float64 (the model a reader of the file gets).</summary>
    public static ModelWeights AsStored(ModelWeights m, ScalarType storage)
    {
        using var scope = NewDisposeScope();
        var layers = m.Layers.Select(l => l.Map(x => x.to_type(storage).to_type(ScalarType.Float64)).DetachFromDisposeScope()).ToList();
        var g = m.Globals.Map(x => x.to_type(storage).to_type(ScalarType.Float64)).DetachFromDisposeScope();
        return new ModelWeights(layers, g, m.Traits);
    }
}
