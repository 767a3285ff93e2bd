using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// Opt-in residual rotation (van Nierop). Fold every LayerNorm's γ and β into its readers (ln_1 → c_attn,
/// ln_2 → c_fc, ln_f's γ → an untied lm_head, its β → β/γ), then rotate the residual stream by an orthogonal Q with Q1 = 1:
/// wte, wpe, attn.c_proj and mlp.c_proj (weights and biases) → ·Q, readers → Qᵀ·, lm_head → ·Q, ln_f's bias → ·Q.
/// A LayerNorm with γ = 1, β = 0 commutes with such a Q (it preserves the mean and the norm of the centred
/// vector), so the function is unchanged. Not a symmetry of the tied checkpoint as stored; the output is untied.
/// Dimension (d−1)(d−2)/2.
/// </summary>
public sealed class ResidualRotation
{
    /// <summary>[d, d] orthogonal with Q·1 = 1.</summary>
    public Tensor Q { get; }

    public ResidualRotation(Tensor q) => Q = q;

    public static ResidualRotation Sample(Generator g, int d)
    {
        using var scope = NewDisposeScope();
        // Basis whose first vector is 1/√d; rotate only its orthogonal complement.
        var m = randn([d, d], ScalarType.Float64, generator: g);
        m[.., 0] = ones(d, ScalarType.Float64);
        var (basis, _) = linalg.qr(m);
        basis = basis * basis[0, 0].sign();
        var inner = GaugeRandom.Orthogonal(d - 1, g);
        var block = zeros([d, d], ScalarType.Float64);
        block[0, 0] = tensor(1.0);
        block[TensorIndex.Slice(1), TensorIndex.Slice(1)] = inner;
        var q = matmul(matmul(basis, block), basis.t());
        return new ResidualRotation(q.MoveToOuterDisposeScope());
    }

    /// <summary>Folds ln_1 and ln_2 and rotates one block (float64, new tensors).</summary>
    public LayerWeights TransformLayer(LayerWeights w, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        var x = w.To(ScalarType.Float64);
        var qt = Q.t();
        var attnW = matmul(qt, x.Ln1W.unsqueeze(1) * x.AttnW);
        var attnB = x.AttnB + matmul(x.Ln1B, x.AttnW);
        var fcW = matmul(qt, x.Ln2W.unsqueeze(1) * x.FcW);
        var fcB = x.FcB + matmul(x.Ln2B, x.FcW);
        var result = new LayerWeights
        {
            Ln1W = ones(c.NEmbd, ScalarType.Float64), Ln1B = zeros(c.NEmbd, ScalarType.Float64),
            AttnW = attnW, AttnB = attnB,
            AttnProjW = matmul(x.AttnProjW, Q), AttnProjB = matmul(x.AttnProjB, Q),
            Ln2W = ones(c.NEmbd, ScalarType.Float64), Ln2B = zeros(c.NEmbd, ScalarType.Float64),
            FcW = fcW, FcB = fcB,
            MlpProjW = matmul(x.MlpProjW, Q), MlpProjB = matmul(x.MlpProjB, Q),
        };
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Rotates the embeddings, folds ln_f's γ into an untied lm_head and rotates it (float64, new tensors).</summary>
    public GlobalWeights TransformGlobals(GlobalWeights g, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        var wte = g.Wte.to_type(ScalarType.Float64);
        var head = g.Head.to_type(ScalarType.Float64);
        var gamma = g.LnFW.to_type(ScalarType.Float64);
        if (gamma.abs().min().item<double>() == 0)
            throw new ArgumentException("residual rotation needs ln_f.weight without zeros (its bias is divided by it when folding)");
        var result = new GlobalWeights
        {
            Wte = matmul(wte, Q),
            Wpe = matmul(g.Wpe.to_type(ScalarType.Float64), Q),
            LnFW = ones(c.NEmbd, ScalarType.Float64),
            // (n∘γ + β)·Hᵀ = (n + β/γ)·diag(γ)Hᵀ: the folded ln_f keeps the bias β/γ, rotated with the stream.
            LnFB = matmul(g.LnFB.to_type(ScalarType.Float64) / gamma, Q),
            LmHead = matmul(head * gamma, Q),
        };
        return result.MoveToOuterDisposeScope();
    }
}
