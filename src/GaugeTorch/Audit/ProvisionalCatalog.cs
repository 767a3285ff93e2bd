using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Audit;

/// <summary>
/// One family of the symmetry catalog as the audit sees it: its CLI name, its number in GAUGE.md, its dimension as
/// a formula (text) and as a number for given traits, where it holds, and (for continuous families) a sampler of
/// random tangents at θ for the gradient-orthogonality check. Everything in <c>Audit/</c> takes these rows as input.
/// </summary>
/// <param name="Name">The family's CLI / JSON name (qk, vo, residual-perm, …).</param>
/// <param name="Number">Where GAUGE.md states it: "§2 1", "§2b 16", "§6.2 4", …</param>
/// <param name="Formula">Its dimension as a formula in GAUGE.md's notation; "0 (discrete)" for discrete families.</param>
/// <param name="Holds">Whether the family is a symmetry of a model with these traits.</param>
/// <param name="Dimension">Its continuous dimension for these traits (0 for discrete families).</param>
/// <param name="Tangent">A random tangent v = d/dt exp(tX)·θ for a seed, or null (discrete, or no sampler yet).</param>
public sealed record FamilyRow(string Name, string Number, string Formula, Func<ModelTraits, bool> Holds,
    Func<ModelTraits, long> Dimension, Func<ModelTraits, long, ITangent>? Tangent = null)
{
    /// <summary>True when the family adds continuous dimension (it has a tangent space).</summary>
    public bool IsContinuous(ModelTraits t) => Dimension(t) > 0;
}

/// <summary>
/// STAND-IN, replaced at merge by the symmetry catalog (<c>Symmetry/</c>, one file per family, built in parallel).
/// It lists, for GPT-2 tied and untied (GAUGE.md §2, §2b) and the LLaMA family (§6.2), every family's name, number,
/// dimension formula, where it holds, and a tangent sampler for the continuous ones, straight from GAUGE.md, so that
/// the audit (redundancy table, Jacobian nullity, gradient orthogonality) can be built and tested before the catalog
/// lands. Nothing else in <c>Audit/</c> refers to this class except through <see cref="Rows"/>; at merge, pass the
/// catalog's families as <see cref="FamilyRow"/>s and delete this file.
/// <para>
/// Tangents follow GAUGE.md's group actions differentiated at the identity: for a multiplicative family
/// θ → θ·exp(tX) the tangent is θ·X; for an additive family θ → θ + t·c it is c. Generators are drawn per layer
/// from a generator seeded by (seed, family, layer), so a tangent is the same whenever a layer is asked for again;
/// the residual rotation's X is one d×d generator shared by every layer, as the family requires.
/// </para>
/// </summary>
public static class ProvisionalCatalog
{
    /// <summary>GPT-2 layout: LayerNorm, learned positions, gelu_new, multi-head, biases everywhere.</summary>
    private static bool Gpt2Like(ModelTraits t) =>
        t.Norm == NormKind.LayerNorm && t.Positions == PositionKind.Learned && t.Mlp == MlpKind.GeluNew && t.KvHeads == t.QueryHeads
        && t.QkvBias && t.OutBias && t.MlpBias;

    /// <summary>LLaMA family: RMSNorm, rotary positions, SwiGLU (any G, with or without Qwen2's q/k/v biases).</summary>
    private static bool LlamaLike(ModelTraits t) => t.Norm == NormKind.RmsNorm && t.Positions == PositionKind.Rotary && t.Mlp == MlpKind.SwiGlu;

    private static long L(ModelTraits t) => t.Layers;
    private static long D(ModelTraits t) => t.Hidden;

    /// <summary>Every row, in GAUGE.md's order: GPT-2 (§2, §2b), then the LLaMA family (§6.2).</summary>
    public static IReadOnlyList<FamilyRow> Rows { get; } =
    [
        // GPT-2, every head (GAUGE.md §2). d_k = d_v = hd, h = H.
        new("qk", "§2 1", "L·h·d_k²", Gpt2Like, t => L(t) * t.QueryHeads * t.HeadDim * t.HeadDim, (t, s) => new Gpt2Tangents.Qk(s)),
        new("vo", "§2 2", "L·h·d_v²", Gpt2Like, t => L(t) * t.QueryHeads * t.HeadDim * t.HeadDim, (t, s) => new Gpt2Tangents.Vo(s)),
        new("head-perm", "§2 3", "0 (discrete: S_h per layer)", Gpt2Like, _ => 0),
        new("mlp-perm", "§2 3", "0 (discrete: S_F per layer)", Gpt2Like, _ => 0),
        new("key-bias", "§2 4", "L·h·d_k", Gpt2Like, t => L(t) * t.QueryHeads * t.HeadDim, (t, s) => new Gpt2Tangents.KeyBias(s)),
        new("value-bias", "§2 5", "L·h·d_v", Gpt2Like, t => L(t) * t.QueryHeads * t.HeadDim, (t, s) => new Gpt2Tangents.ValueBias(s)),
        new("ln-gain", "§2 6", "L·2d", Gpt2Like, t => L(t) * 2 * D(t), (t, s) => new Gpt2Tangents.LnGain(s)),
        new("ln-bias", "§2 7", "L·2d", Gpt2Like, t => L(t) * 2 * D(t), (t, s) => new Gpt2Tangents.LnBias(s)),
        new("reader-mean", "§2 8", "L·(3d + F)", Gpt2Like, t => L(t) * (3 * D(t) + t.Inner), (t, s) => new Gpt2Tangents.ReaderMean(s)),
        new("writer-mean", "§2 9", "L·((d+1) + (F+1))", Gpt2Like, t => L(t) * (D(t) + 1 + t.Inner + 1), (t, s) => new Gpt2Tangents.WriterMean(s)),
        new("embedding-offset", "§2 10", "d + P", Gpt2Like, t => D(t) + t.MaxPositions, (t, s) => new Gpt2Tangents.EmbeddingOffset(s)),
        new("residual-perm", "§2 11", "0 (discrete: S_d × Z₂)", Gpt2Like, _ => 0),
        // GPT-2, untied head only (GAUGE.md §2b).
        new("token-mean", "§2b 12", "V − 1", t => Gpt2Like(t) && !t.Tied, t => t.Vocab - 1, (t, s) => new Gpt2Tangents.TokenMean(s)),
        new("final-gain", "§2b 13", "d", t => Gpt2Like(t) && !t.Tied, D, (t, s) => new Gpt2Tangents.FinalGain(s)),
        new("unembed-offset", "§2b 14", "d", t => Gpt2Like(t) && !t.Tied, D, (t, s) => new CommonTangents.UnembedOffset(s)),
        new("final-bias", "§2b 15", "d", t => Gpt2Like(t) && !t.Tied, D, (t, s) => new Gpt2Tangents.FinalBias(s)),
        new("residual-rotation", "§2b 16", "(d−1)(d−2)/2", t => Gpt2Like(t) && !t.Tied, t => (D(t) - 1) * (D(t) - 2) / 2,
            (t, s) => new CommonTangents.ResidualRotation(t, s)),

        // LLaMA family, every head (GAUGE.md §6.2). G KV groups, head_dim hd.
        new("qk-rope", "§6.2 1", "L·G·hd", LlamaLike, t => L(t) * t.KvHeads * t.HeadDim, (t, s) => new LlamaTangents.QkRope(t, s)),
        new("vo", "§6.2 2", "L·G·hd²", LlamaLike, t => L(t) * t.KvHeads * t.HeadDim * t.HeadDim, (t, s) => new LlamaTangents.Vo(t, s)),
        new("head-perm", "§6.2 3", "0 (discrete: S_{H/G} per group)", LlamaLike, _ => 0),
        new("group-perm", "§6.2 3", "0 (discrete: S_G per layer)", LlamaLike, _ => 0),
        new("mlp-perm", "§6.2 3", "0 (discrete: S_F per layer)", LlamaLike, _ => 0),
        new("mlp-scale", "§6.2 4", "L·F", LlamaLike, t => L(t) * t.Inner, (t, s) => new LlamaTangents.MlpScale(s)),
        new("norm-gain", "§6.2 5", "L·2d", LlamaLike, t => L(t) * 2 * D(t), (t, s) => new LlamaTangents.NormGain(s)),
        new("residual-signed-perm", "§6.2 tied", "0 (discrete: signed permutations)", t => LlamaLike(t) && t.Tied, _ => 0),
        new("final-gain", "§6.2 6", "d", t => LlamaLike(t) && !t.Tied, D, (t, s) => new LlamaTangents.FinalGain(s)),
        new("unembed-offset", "§6.2 7", "d", t => LlamaLike(t) && !t.Tied, D, (t, s) => new CommonTangents.UnembedOffset(s)),
        new("residual-rotation", "§6.2 8", "d(d−1)/2", t => LlamaLike(t) && !t.Tied, t => D(t) * (D(t) - 1) / 2,
            (t, s) => new CommonTangents.ResidualRotation(t, s)),
    ];

    /// <summary>The rows that hold for <paramref name="traits"/>, in catalog order.</summary>
    public static IReadOnlyList<FamilyRow> For(ModelTraits traits) => Rows.Where(r => r.Holds(traits)).ToList();
}

/// <summary>Shared plumbing of the provisional tangents: seeded draws and zero views shaped like θ.</summary>
internal abstract class ProvisionalTangent(long seed, string family) : ITangent
{
    /// <summary>A generator for (seed, family, layer); layer −1 is the globals.</summary>
    protected Generator Gen(int layer)
    {
        ulong h = 1469598103934665603UL ^ (ulong)seed * 0x9E3779B97F4A7C15UL;
        void Mix(ulong v) { h ^= v; h *= 1099511628211UL; h ^= h >> 29; }
        Mix((ulong)(layer + 11));
        foreach (char ch in family) Mix(ch);
        return new Generator(h & 0x7FFFFFFFFFFFFFFFUL);
    }

    protected static Tensor Randn(Generator g, params long[] shape) => randn(shape, ScalarType.Float64, generator: g);

    /// <summary>
    /// A float64 view of zeros with the structure of <paramref name="at"/>. The zeros are one value broadcast
    /// (stride 0), so that the parts a family does not move cost no memory: a gpt2-xl layer is 245 MB in float64.
    /// </summary>
    protected static LayerView Zero(LayerView at) => at.Map(ZeroLike);

    protected static GlobalView Zero(GlobalView at) => at.Map(ZeroLike);

    private static Tensor ZeroLike(Tensor t) => zeros(Array.Empty<long>(), ScalarType.Float64, t.device).expand(t.shape);

    protected static Tensor F64(Tensor t) => t.to_type(ScalarType.Float64);

    public virtual LayerView? Layer(int layer, LayerView at) => null;

    public virtual GlobalView? Globals(GlobalView at) => null;

    /// <summary>Runs <paramref name="fill"/> on a zero view and returns it out of a local dispose scope.</summary>
    protected static LayerView Build(LayerView at, Action<LayerView> fill)
    {
        using var scope = NewDisposeScope();
        var v = Zero(at);
        fill(v);
        return v.MoveToOuterDisposeScope();
    }

    protected static GlobalView Build(GlobalView at, Action<GlobalView> fill)
    {
        using var scope = NewDisposeScope();
        var v = Zero(at);
        fill(v);
        return v.MoveToOuterDisposeScope();
    }

    /// <summary>Rows of a per-head reader block [n, d, hd] scaled by s [d]: s_r · W[h, r, :].</summary>
    protected static Tensor RowScale(Tensor w, Tensor s) => w * s.view(1, -1, 1);

    /// <summary>
    /// A reader absorbing M: W → M·W per head ([n, d, hd] → M @ W[h]); for [d, F] a plain M @ W.
    /// </summary>
    protected static Tensor LeftMul(Tensor m, Tensor w) => matmul(m, w);
}

/// <summary>Tangents of the families both architectures share.</summary>
internal static class CommonTangents
{
    /// <summary>§2b 14 / §6.2 7: lm_head → lm_head + 1uᵀ, tangent 1uᵀ.</summary>
    public sealed class UnembedOffset(long seed) : ProvisionalTangent(seed, "unembed-offset")
    {
        public override GlobalView? Globals(GlobalView at) => Build(at, v =>
        {
            var u = Randn(Gen(-1), at.Embed.shape[1]);
            v.Head = ones(at.Embed.shape[0], 1, dtype: ScalarType.Float64) * u.unsqueeze(0);
        });
    }

    /// <summary>
    /// §2b 16 (GPT-2, untied) and §6.2 8 (LLaMA, untied): Q = exp(tX), X skew-symmetric (GPT-2: X·1 = 0, so
    /// that Q·1 = 1 and LayerNorm's centring commutes). Writers and embeddings W → W·Q (tangent W·X); each reader
    /// W → M·W with M = diag(γ)⁻¹ Qᵀ diag(γ) (tangent −diag(1/γ) X diag(γ)·W); a LayerNorm bias β → β·M⁻¹
    /// (tangent β·diag(1/γ) X diag(γ)); the head → head·Mᵀ.
    /// </summary>
    public sealed class ResidualRotation : ProvisionalTangent
    {
        private readonly Tensor _x;   // [d, d], skew, shared by every layer

        public ResidualRotation(ModelTraits t, long seed) : base(seed, "residual-rotation")
        {
            using var scope = NewDisposeScope();
            long d = t.Hidden;
            var a = Randn(Gen(-2), d, d);
            var x = (a - a.t()) / Math.Sqrt(2.0 * d);
            if (t.Norm == NormKind.LayerNorm)
            {
                var p = eye(d, dtype: ScalarType.Float64) - full(d, d, 1.0 / d, dtype: ScalarType.Float64);   // projector onto 1⊥
                x = p.matmul(x).matmul(p);
            }
            _x = x.DetachFromDisposeScope();
        }

        /// <summary>dM for a reader with gain γ: −diag(1/γ) X diag(γ) [d, d].</summary>
        private Tensor DM(Tensor gain) { var g = F64(gain); return -(_x / g.unsqueeze(1)) * g.unsqueeze(0); }

        private Tensor DBeta(Tensor beta, Tensor gain) { var g = F64(gain); return matmul(F64(beta) / g, _x) * g; }

        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var m1 = DM(at.Norm1.Gain);
            v.Q = LeftMul(m1, F64(at.Q)); v.K = LeftMul(m1, F64(at.K)); v.V = LeftMul(m1, F64(at.V));
            if (at.Norm1.Bias is not null) v.Norm1.Bias = DBeta(at.Norm1.Bias, at.Norm1.Gain);
            var m2 = DM(at.Norm2.Gain);
            v.Up = LeftMul(m2, F64(at.Up));
            if (at.Gate is not null) v.Gate = LeftMul(m2, F64(at.Gate));
            if (at.Norm2.Bias is not null) v.Norm2.Bias = DBeta(at.Norm2.Bias, at.Norm2.Gain);
            v.O = matmul(F64(at.O), _x);
            if (at.OBias is not null) v.OBias = matmul(F64(at.OBias), _x);
            v.Down = matmul(F64(at.Down), _x);
            if (at.DownBias is not null) v.DownBias = matmul(F64(at.DownBias), _x);
        });

        public override GlobalView? Globals(GlobalView at) => Build(at, v =>
        {
            v.Embed = matmul(F64(at.Embed), _x);
            if (at.Positions is not null) v.Positions = matmul(F64(at.Positions), _x);
            if (at.FinalNorm.Bias is not null) v.FinalNorm.Bias = DBeta(at.FinalNorm.Bias, at.FinalNorm.Gain);
            if (at.Head is not null) v.Head = matmul(F64(at.Head), DM(at.FinalNorm.Gain).t());
        });
    }
}

/// <summary>Tangents of GPT-2's continuous families (GAUGE.md §2 and §2b).</summary>
internal static class Gpt2Tangents
{
    /// <summary>§2 1: W_Q^i → W_Q^i A_i, W_K^i → W_K^i A_i^{-ᵀ} (biases alike); tangent (Q X, −K Xᵀ).</summary>
    public sealed class Qk(long seed) : ProvisionalTangent(seed, "qk")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            long h = at.Q.shape[0], hd = at.Q.shape[2];
            var x = Randn(Gen(layer), h, hd, hd);
            var xt = x.transpose(1, 2);
            v.Q = matmul(F64(at.Q), x);
            v.K = -matmul(F64(at.K), xt);
            if (at.QBias is not null) v.QBias = matmul(F64(at.QBias).unsqueeze(1), x).squeeze(1);
            if (at.KBias is not null) v.KBias = -matmul(F64(at.KBias).unsqueeze(1), xt).squeeze(1);
        });
    }

    /// <summary>§2 2: W_V^i → W_V^i C_i (bias alike), W_O^i → C_i⁻¹ W_O^i; tangent (V X, −X O).</summary>
    public sealed class Vo(long seed) : ProvisionalTangent(seed, "vo")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            long h = at.V.shape[0], hd = at.V.shape[2];
            var x = Randn(Gen(layer), h, hd, hd);
            v.V = matmul(F64(at.V), x);
            if (at.VBias is not null) v.VBias = matmul(F64(at.VBias).unsqueeze(1), x).squeeze(1);
            v.O = -matmul(x, F64(at.O));
        });
    }

    /// <summary>§2 4: b_K^i → b_K^i + t_i.</summary>
    public sealed class KeyBias(long seed) : ProvisionalTangent(seed, "key-bias")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v => v.KBias = Randn(Gen(layer), at.K.shape[0], at.K.shape[2]));
    }

    /// <summary>§2 5: b_V^i → b_V^i + δ_i, b_O → b_O − Σ_i δ_i W_O^i.</summary>
    public sealed class ValueBias(long seed) : ProvisionalTangent(seed, "value-bias")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var delta = Randn(Gen(layer), at.V.shape[0], at.V.shape[2]);                 // [H, hd]
            v.VBias = delta;
            v.OBias = -einsum("hj,hjd->d", delta, F64(at.O));
        });
    }

    /// <summary>§2 6: γ → γ∘s, β → β∘s, reader rows → diag(s)⁻¹ W; tangent (γ∘u, β∘u, −diag(u) W), ln_1 and ln_2.</summary>
    public sealed class LnGain(long seed) : ProvisionalTangent(seed, "ln-gain")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var g = Gen(layer);
            long d = at.Norm1.Gain.shape[0];
            var u1 = Randn(g, d);
            var u2 = Randn(g, d);
            v.Norm1.Gain = F64(at.Norm1.Gain) * u1;
            v.Norm1.Bias = F64(at.Norm1.Bias!) * u1;
            v.Q = -RowScale(F64(at.Q), u1); v.K = -RowScale(F64(at.K), u1); v.V = -RowScale(F64(at.V), u1);
            v.Norm2.Gain = F64(at.Norm2.Gain) * u2;
            v.Norm2.Bias = F64(at.Norm2.Bias!) * u2;
            v.Up = -F64(at.Up) * u2.unsqueeze(1);
        });
    }

    /// <summary>§2 7: β → β + t, reader bias b → b − t·W, ln_1 (q, k, v) and ln_2 (c_fc).</summary>
    public sealed class LnBias(long seed) : ProvisionalTangent(seed, "ln-bias")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var g = Gen(layer);
            long d = at.Norm1.Gain.shape[0];
            var t1 = Randn(g, d);
            var t2 = Randn(g, d);
            v.Norm1.Bias = t1;
            v.QBias = -einsum("r,hrj->hj", t1, F64(at.Q));
            v.KBias = -einsum("r,hrj->hj", t1, F64(at.K));
            v.VBias = -einsum("r,hrj->hj", t1, F64(at.V));
            v.Norm2.Bias = t2;
            v.UpBias = -matmul(t2, F64(at.Up));
        });
    }

    /// <summary>§2 8: W → W + (1/γ) cᵀ, b → b − (β·(1/γ)) cᵀ, for c_attn (c ∈ R^{3d}) and c_fc (c ∈ R^F).</summary>
    public sealed class ReaderMean(long seed) : ProvisionalTangent(seed, "reader-mean")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var g = Gen(layer);
            var inv1 = 1.0 / F64(at.Norm1.Gain);
            double k1 = (F64(at.Norm1.Bias!) * inv1).sum().item<double>();
            (Tensor W, Tensor B) Reader(Tensor w)
            {
                var c = Randn(g, w.shape[0], w.shape[2]);                                    // [n, hd]
                return (inv1.view(1, -1, 1) * c.unsqueeze(1), -k1 * c);
            }
            (v.Q, v.QBias) = Reader(at.Q);
            (v.K, v.KBias) = Reader(at.K);
            (v.V, v.VBias) = Reader(at.V);
            var inv2 = 1.0 / F64(at.Norm2.Gain);
            double k2 = (F64(at.Norm2.Bias!) * inv2).sum().item<double>();
            var cf = Randn(g, at.Up.shape[1]);
            v.Up = outer(inv2, cf);
            v.UpBias = -k2 * cf;
        });
    }

    /// <summary>§2 9: W_O → W_O + a 1ᵀ, b_O → b_O + κ1; mlp.c_proj likewise.</summary>
    public sealed class WriterMean(long seed) : ProvisionalTangent(seed, "writer-mean")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var g = Gen(layer);
            long h = at.O.shape[0], hd = at.O.shape[1], d = at.O.shape[2], f = at.Down.shape[0];
            v.O = Randn(g, h, hd, 1).expand(h, hd, d).contiguous();
            v.OBias = full(d, Randn(g, 1).item<double>(), dtype: ScalarType.Float64);
            v.Down = Randn(g, f, 1).expand(f, d).contiguous();
            v.DownBias = full(d, Randn(g, 1).item<double>(), dtype: ScalarType.Float64);
        });
    }

    /// <summary>§2 10: wte → wte + 1uᵀ, wpe → wpe − 1uᵀ + c1ᵀ.</summary>
    public sealed class EmbeddingOffset(long seed) : ProvisionalTangent(seed, "embedding-offset")
    {
        public override GlobalView? Globals(GlobalView at) => Build(at, v =>
        {
            var g = Gen(-1);
            long vocab = at.Embed.shape[0], d = at.Embed.shape[1], p = at.Positions!.shape[0];
            var u = Randn(g, 1, d);
            var c = Randn(g, p, 1);
            v.Embed = u.expand(vocab, d).contiguous();
            v.Positions = c - u;
        });
    }

    /// <summary>§2b 12: wte[t] → wte[t] + c_t 1.</summary>
    public sealed class TokenMean(long seed) : ProvisionalTangent(seed, "token-mean")
    {
        public override GlobalView? Globals(GlobalView at) => Build(at, v =>
            v.Embed = Randn(Gen(-1), at.Embed.shape[0], 1).expand(at.Embed.shape[0], at.Embed.shape[1]).contiguous());
    }

    /// <summary>§2b 13: γ_f → γ_f∘s, β_f → β_f∘s, lm_head → lm_head·diag(s)⁻¹.</summary>
    public sealed class FinalGain(long seed) : ProvisionalTangent(seed, "final-gain")
    {
        public override GlobalView? Globals(GlobalView at) => Build(at, v =>
        {
            var u = Randn(Gen(-1), at.Embed.shape[1]);
            v.FinalNorm.Gain = F64(at.FinalNorm.Gain) * u;
            v.FinalNorm.Bias = F64(at.FinalNorm.Bias!) * u;
            v.Head = -F64(at.Head!) * u;
        });
    }

    /// <summary>
    /// §2b 15: β_f → β_f + t, lm_head[v] → lm_head[v] + c_v (1/γ_f) with c_v = (λ − t·lm_head[v]) / ((β_f + t)·(1/γ_f)).
    /// At the identity λ = 0 (λ ≠ 0 alone is the unembedding offset along 1/γ_f), so the tangent is
    /// (t, −(t·lm_head[v]) / (β_f·(1/γ_f)) · (1/γ_f)).
    /// </summary>
    public sealed class FinalBias(long seed) : ProvisionalTangent(seed, "final-bias")
    {
        public override GlobalView? Globals(GlobalView at) => Build(at, v =>
        {
            var t = Randn(Gen(-1), at.Embed.shape[1]);
            var inv = 1.0 / F64(at.FinalNorm.Gain);
            var denom = (F64(at.FinalNorm.Bias!) * inv).sum();
            v.FinalNorm.Bias = t;
            v.Head = -outer(matmul(F64(at.Head!), t) / denom, inv);
        });
    }
}

/// <summary>Tangents of the LLaMA family's continuous families (GAUGE.md §6.2).</summary>
internal static class LlamaTangents
{
    /// <summary>
    /// §6.2 1: per group and plane a complex z = e^{a+ib}: the group's query planes (j, j + hd/2) are multiplied by z,
    /// its key plane by 1/conj(z) = e^{−a+ib}. Tangent on a plane (x, y): queries (a x − b y, b x + a y), keys
    /// (−a x − b y, b x − a y), on the weight columns and bias entries of the plane.
    /// </summary>
    public sealed class QkRope(ModelTraits t, long seed) : ProvisionalTangent(seed, "qk-rope")
    {
        /// <summary>Tangent of w [.., hd] (last axis = head dims) under plane-wise complex multiplication by (a + ib) [n, hd/2] per head.</summary>
        private static Tensor Plane(Tensor w, Tensor a, Tensor b, bool weight)
        {
            long half = w.shape[^1] / 2;
            var x = w.narrow(-1, 0, half);
            var y = w.narrow(-1, half, half);
            // a, b: [n, half] → broadcast over the input axis of a weight [n, d, hd].
            var aa = weight ? a.unsqueeze(1) : a;
            var bb = weight ? b.unsqueeze(1) : b;
            return cat([aa * x - bb * y, bb * x + aa * y], -1);
        }

        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var g = Gen(layer);
            long groups = t.KvHeads, half = t.HeadDim / 2;
            var a = Randn(g, groups, half);
            var b = Randn(g, groups, half);
            var qa = a.repeat_interleave(t.GroupSize, 0);                   // query head i belongs to group i / (H/G)
            var qb = b.repeat_interleave(t.GroupSize, 0);
            v.Q = Plane(F64(at.Q), qa, qb, true);
            if (at.QBias is not null) v.QBias = Plane(F64(at.QBias), qa, qb, false);
            v.K = Plane(F64(at.K), -a, b, true);
            if (at.KBias is not null) v.KBias = Plane(F64(at.KBias), -a, b, false);
        });
    }

    /// <summary>§6.2 2: per group C: v rows → ·C (bias alike), the group's query heads' O → C⁻¹·O; tangent (V X, −X O).</summary>
    public sealed class Vo(ModelTraits t, long seed) : ProvisionalTangent(seed, "vo")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            long hd = t.HeadDim;
            var x = Randn(Gen(layer), t.KvHeads, hd, hd);
            v.V = matmul(F64(at.V), x);
            if (at.VBias is not null) v.VBias = matmul(F64(at.VBias).unsqueeze(1), x).squeeze(1);
            v.O = -matmul(x.repeat_interleave(t.GroupSize, 0), F64(at.O));
        });
    }

    /// <summary>§6.2 4: up[u] → s_u·up[u] (bias alike), down[u, :] → down[u, :]/s_u.</summary>
    public sealed class MlpScale(long seed) : ProvisionalTangent(seed, "mlp-scale")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var s = Randn(Gen(layer), at.Up.shape[1]);
            v.Up = F64(at.Up) * s;
            if (at.UpBias is not null) v.UpBias = F64(at.UpBias) * s;
            v.Down = -F64(at.Down) * s.unsqueeze(1);
        });
    }

    /// <summary>§6.2 5: g → g∘s with the readers' input rows → diag(s)⁻¹ (q, k, v with g₁; gate, up with g₂).</summary>
    public sealed class NormGain(long seed) : ProvisionalTangent(seed, "norm-gain")
    {
        public override LayerView? Layer(int layer, LayerView at) => Build(at, v =>
        {
            var g = Gen(layer);
            long d = at.Norm1.Gain.shape[0];
            var u1 = Randn(g, d);
            var u2 = Randn(g, d);
            v.Norm1.Gain = F64(at.Norm1.Gain) * u1;
            v.Q = -RowScale(F64(at.Q), u1); v.K = -RowScale(F64(at.K), u1); v.V = -RowScale(F64(at.V), u1);
            v.Norm2.Gain = F64(at.Norm2.Gain) * u2;
            v.Up = -F64(at.Up) * u2.unsqueeze(1);
            if (at.Gate is not null) v.Gate = -F64(at.Gate) * u2.unsqueeze(1);
        });
    }

    /// <summary>§6.2 6: g_f → g_f∘s, lm_head → lm_head·diag(s)⁻¹.</summary>
    public sealed class FinalGain(long seed) : ProvisionalTangent(seed, "final-gain")
    {
        public override GlobalView? Globals(GlobalView at) => Build(at, v =>
        {
            var u = Randn(Gen(-1), at.Embed.shape[1]);
            v.FinalNorm.Gain = F64(at.FinalNorm.Gain) * u;
            v.Head = -F64(at.Head!) * u;
        });
    }
}
