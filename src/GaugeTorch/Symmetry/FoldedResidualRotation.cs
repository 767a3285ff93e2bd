using GaugeTorch.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// The opt-in rotation of <c>transform --residual-rotation</c> (van Nierop), which changes the representation rather
/// than staying on the orbit of the stored model: fold every norm's γ and β into its readers (first norm → Q | K | V,
/// second → up and gate, final γ → the head, its β → β/γ), set the norms to γ = 1, β = 0, and rotate the residual
/// stream by an orthogonal Q with Q·1 = 1: embeddings, positions and writers → ·Q, readers → Qᵀ·, head → ·Q, the
/// final bias → ·Q. A LayerNorm with γ = 1, β = 0 commutes with such a Q (it preserves the mean and the centred norm),
/// so the function is unchanged; the output's head is untied. Not a family of the catalog: on an untied checkpoint
/// the catalog's <see cref="ResidualRotation"/> rotates without folding.
/// </summary>
public sealed class FoldedResidualRotation(Tensor q)
{
    /// <summary>[d, d] orthogonal with Q·1 = 1.</summary>
    public Tensor Q { get; } = q;

    /// <summary>The draw <c>transform --residual-rotation</c> has always used for a seed (stream 0, the globals, "residual-rotation").</summary>
    public static FoldedResidualRotation Sample(long seed, int d)
    {
        using var scope = NewDisposeScope();
        var q = GaugeRandom.OrthogonalFixingOnes(d, new GaugeRandom(seed).For(0, -1, "residual-rotation"));
        return new FoldedResidualRotation(q.MoveToOuterDisposeScope());
    }

    /// <summary>Folds both norms of a float64 block into their readers and rotates it (new tensors; <paramref name="w"/> is not modified).</summary>
    public LayerView TransformLayer(LayerView w, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var qt = Q.t();
        var r = new LayerView
        {
            Norm1 = new NormView { Gain = ones(t.Hidden, ScalarType.Float64), Bias = w.Norm1.Bias is null ? null : zeros(t.Hidden, ScalarType.Float64) },
            Q = w.Q, K = w.K, V = w.V, O = w.O,
            Norm2 = new NormView { Gain = ones(t.Hidden, ScalarType.Float64), Bias = w.Norm2.Bias is null ? null : zeros(t.Hidden, ScalarType.Float64) },
            Up = w.Up, Down = w.Down,
        };
        var r1 = ViewOps.Reader1(w);
        ViewOps.SetReader1(r, t, matmul(qt, w.Norm1.Gain.unsqueeze(1) * r1));
        var b1 = ViewOps.Reader1Bias(w);
        if (w.Norm1.Bias is not null) b1 = b1 is null ? matmul(w.Norm1.Bias, r1) : b1 + matmul(w.Norm1.Bias, r1);
        if (b1 is not null) ViewOps.SetReader1Bias(r, t, b1);
        r.O = matmul(ViewOps.FlatO(w), Q).reshape(w.O.shape);
        r.OBias = w.OBias is null ? null : matmul(w.OBias, Q);
        Tensor Fold(Tensor m) => matmul(qt, w.Norm2.Gain.unsqueeze(1) * m);
        Tensor? FoldBias(Tensor m, Tensor? b) => w.Norm2.Bias is null ? b : b is null ? matmul(w.Norm2.Bias, m) : b + matmul(w.Norm2.Bias, m);
        r.Up = Fold(w.Up);
        r.UpBias = FoldBias(w.Up, w.UpBias);
        if (w.Gate is not null)
        {
            r.Gate = Fold(w.Gate);
            r.GateBias = FoldBias(w.Gate, w.GateBias);
        }
        r.Down = matmul(w.Down, Q);
        r.DownBias = w.DownBias is null ? null : matmul(w.DownBias, Q);
        return r.Map(x => x.alias()).MoveToOuterDisposeScope();
    }

    /// <summary>Rotates the embeddings, folds the final γ into the head (untied from here on) and rotates it (float64, new tensors).</summary>
    public GlobalView TransformGlobals(GlobalView g)
    {
        using var scope = NewDisposeScope();
        var wte = g.Embed.to_type(ScalarType.Float64);
        var head = g.HeadOrEmbed.to_type(ScalarType.Float64);
        var gamma = g.FinalNorm.Gain.to_type(ScalarType.Float64);
        if (gamma.abs().min().item<double>() == 0)
            throw new ArgumentException("the residual rotation folds the final norm, whose gain has a zero entry (its bias is divided by it)");
        var result = new GlobalView
        {
            Embed = matmul(wte, Q),
            Positions = g.Positions is null ? null : matmul(g.Positions.to_type(ScalarType.Float64), Q),
            // (n∘γ + β)·Hᵀ = (n + β/γ)·diag(γ)Hᵀ: the folded norm keeps the bias β/γ, rotated with the stream.
            FinalNorm = new NormView
            {
                Gain = ones(gamma.shape[0], ScalarType.Float64),
                Bias = g.FinalNorm.Bias is null ? null : matmul(g.FinalNorm.Bias.to_type(ScalarType.Float64) / gamma, Q),
            },
            Head = matmul(head * gamma, Q),
        };
        return result.MoveToOuterDisposeScope();
    }
}
