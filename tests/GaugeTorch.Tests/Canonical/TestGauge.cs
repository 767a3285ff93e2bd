using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Canonical;

/// <summary>
/// Test-only: applies one random element of every gauge family of GAUGE.md §2 and §2b (composed; head, MLP unit
/// and residual-coordinate permutations and the global sign included; families 12–16 when the head is untied) to a
/// float64 model held in memory. Kept minimal and independent of the library's gauge code so the canonical form is
/// checked against a second reading of the spec.
/// </summary>
public static class TestGauge
{
    public sealed record Model(List<LayerWeights> Layers, GlobalWeights Globals) : IDisposable
    {
        public void Dispose()
        {
            foreach (var l in Layers) l.Dispose();
            Globals.Dispose();
        }
    }

    public static Model Load(Gpt2Checkpoint ck) =>
        new(Enumerable.Range(0, ck.Config.NLayer).Select(l => ck.LoadLayer(l, ScalarType.Float64)).ToList(), ck.LoadGlobals(ScalarType.Float64));

    public static Tensor Logits(Model m, Gpt2Config c, int[] tokens)
    {
        using var scope = NewDisposeScope();
        var t = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        var x = Gpt2Functional.Embed(t, m.Globals.Wte, m.Globals.Wpe);
        foreach (var l in m.Layers) x = Gpt2Functional.Block(x, l, c);
        return Gpt2Functional.RowCentre(Gpt2Functional.Head(x, m.Globals, c)).MoveToOuterDisposeScope();
    }

    /// <summary>A matrix Q₁ΛQ₂ᵀ (Q random orthogonal, Λ uniform in [0.5, 2]); symmetric when <paramref name="symmetric"/>.</summary>
    public static Tensor RandomGL(long n, Generator gen, bool symmetric)
    {
        using var scope = NewDisposeScope();
        var (q1, _) = linalg.qr(randn(n, n, ScalarType.Float64, generator: gen));
        var q2 = symmetric ? q1 : linalg.qr(randn(n, n, ScalarType.Float64, generator: gen)).Q;
        var lam = rand(n, ScalarType.Float64, generator: gen) * 1.5 + 0.5;
        return matmul(q1 * lam.unsqueeze(0), q2.t()).MoveToOuterDisposeScope();
    }

    private static Tensor Rms(Tensor t) => t.square().mean().sqrt();

    /// <summary>
    /// g·θ for a random g of every family: 1–10, then 11 (a random residual permutation, with σ = −1 for odd seeds
    /// and +1 for even ones) and, when the head is untied, 12–16. <paramref name="papersFamiliesOnly"/>: families 1–3 only.
    /// </summary>
    public static Model Transform(Model m, Gpt2Config c, long seed, bool papersFamiliesOnly = false)
    {
        var basic = TransformBasic(m, c, seed, papersFamiliesOnly);
        if (papersFamiliesOnly) return basic;
        var gen = new Generator((ulong)(seed * 7919 + 17));
        var perm = randperm(c.NEmbd, generator: gen).data<long>().Select(i => (int)i).ToArray();
        var t = ResidualPermutation(basic, perm, seed % 2 == 1 ? -1.0 : 1.0);
        basic.Dispose();
        if (t.Globals.LmHead is null) return t;
        var u = Untied(t, gen);
        t.Dispose();
        return u;
    }

    /// <summary>Families 12–16 (GAUGE.md §2b), each with a random element, composed; the head must be untied.</summary>
    public static Model Untied(Model m, Generator gen)
    {
        using var scope = NewDisposeScope();
        var g = m.Globals;
        long v = g.Wte.shape[0], d = g.Wte.shape[1];
        var wte = g.Wte.clone(); var head = g.LmHead!.clone(); var gf = g.LnFW.clone(); var bf = g.LnFB.clone();
        // 12, token mean: wte[t] += c_t·1 (the residual's 1-component is never read).
        wte = wte + randn(v, 1, ScalarType.Float64, generator: gen) * 0.1 * Rms(wte);
        // 13, final gain ↔ head columns: γ_f∘s, β_f∘s, lm_head·diag(s)⁻¹ (s of both signs, |s| in [0.5, 2]).
        var sgn = where(rand(d, ScalarType.Float64, generator: gen) < 0.3, -1.0, 1.0);
        var s = (rand(d, ScalarType.Float64, generator: gen) * 1.5 + 0.5) * sgn;
        gf = gf * s; bf = bf * s; head = head / s.unsqueeze(0);
        // 14, unembedding offset: lm_head + 1uᵀ (every logit of a position shifts by u·LN_f(x)).
        head = head + randn(1, d, ScalarType.Float64, generator: gen) * 0.1 * Rms(head);
        // 15, final bias ↔ head rows: β_f + t with lm_head[v] += c_v/γ_f, c_v = (λ − t·h_v) / ((β_f + t)·(1/γ_f)).
        var t = randn(d, ScalarType.Float64, generator: gen) * 0.1 * Rms(bf);
        double lambda = 0.1 * randn(1, ScalarType.Float64, generator: gen).item<double>();
        var denom = ((bf + t) / gf).sum();
        var cv = (lambda - matmul(head, t)) / denom;                                  // [V]
        head = head + cv.unsqueeze(1) * (1.0 / gf).unsqueeze(0);
        bf = bf + t;
        var stage = new Model(m.Layers.Select(l => l.Clone()).ToList(), new GlobalWeights { Wte = wte, Wpe = g.Wpe.clone(), LnFW = gf, LnFB = bf, LmHead = head });
        // 16, residual rotation without folding, with Q·1 = ±1 (the sign from the generator).
        double sigma = rand(1, ScalarType.Float64, generator: gen).item<double>() < 0.5 ? -1.0 : 1.0;
        var q = RandomResidualRotation(d, gen, sigma);
        var result = ResidualRotation(stage, q);
        stage.Dispose();
        foreach (var l in result.Layers) l.MoveToOuterDisposeScope();
        result.Globals.MoveToOuterDisposeScope();
        return result;
    }

    /// <summary>An orthogonal Q [d, d] with Q·1 = σ·1: σ·H·diag(1, O)·Hᵀ with H orthonormal, first column 1/√d, O random orthogonal.</summary>
    public static Tensor RandomResidualRotation(long d, Generator gen, double sigma)
    {
        using var scope = NewDisposeScope();
        var m = randn(d, d, ScalarType.Float64, generator: gen);
        m[TensorIndex.Colon, 0] = ones(d, ScalarType.Float64);
        var (hb, _) = linalg.qr(m);
        hb = hb * hb[0, 0].sign();                                                    // first column +1/√d
        var (o, _) = linalg.qr(randn(d - 1, d - 1, ScalarType.Float64, generator: gen));
        var block = eye(d, dtype: ScalarType.Float64);
        block[TensorIndex.Slice(1), TensorIndex.Slice(1)] = o;
        return (matmul(matmul(hb, block), hb.t()) * sigma).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Family 16 (GAUGE.md §2b) on the stored model, nothing folded: each reader absorbs M = diag(γ)⁻¹Qᵀdiag(γ)
    /// (W → M·W, β → β·M⁻¹; ln_f/lm_head: lm_head → lm_head·Mᵀ), writers and embeddings go to ·Q.
    /// Exact only for an untied head and Q orthogonal with Q·1 = ±1.
    /// </summary>
    public static Model ResidualRotation(Model m, Tensor q)
    {
        using var scope = NewDisposeScope();
        (Tensor W, Tensor B) Reader(Tensor gamma, Tensor beta, Tensor w)
        {
            var mm = matmul(matmul(diag(1.0 / gamma), q.t()), diag(gamma));          // [d, d]
            var minv = matmul(matmul(diag(1.0 / gamma), q), diag(gamma));            // M⁻¹ (Q orthogonal)
            return (matmul(mm, w), matmul(beta, minv));
        }
        var layers = new List<LayerWeights>();
        foreach (var l in m.Layers)
        {
            var (aw, b1) = Reader(l.Ln1W, l.Ln1B, l.AttnW);
            var (fw, b2) = Reader(l.Ln2W, l.Ln2B, l.FcW);
            layers.Add(new LayerWeights
            {
                Ln1W = l.Ln1W.clone(), Ln1B = b1, AttnW = aw, AttnB = l.AttnB.clone(),
                AttnProjW = matmul(l.AttnProjW, q), AttnProjB = matmul(l.AttnProjB, q),
                Ln2W = l.Ln2W.clone(), Ln2B = b2, FcW = fw, FcB = l.FcB.clone(),
                MlpProjW = matmul(l.MlpProjW, q), MlpProjB = matmul(l.MlpProjB, q),
            }.MoveToOuterDisposeScope());
        }
        var g = m.Globals;
        var (headT, bf) = Reader(g.LnFW, g.LnFB, g.LmHead!.t());
        var globals = new GlobalWeights
        {
            Wte = matmul(g.Wte, q), Wpe = matmul(g.Wpe, q), LnFW = g.LnFW.clone(), LnFB = bf, LmHead = headT.t().contiguous(),
        }.MoveToOuterDisposeScope();
        return new Model(layers, globals);
    }

    /// <summary>
    /// Family 11 (GAUGE.md §2): the residual coordinates permuted (canonical j ← original perm[j]) and the stream
    /// multiplied by σ = ±1. wte, wpe → σ·(·)P; readers W → PᵀW, ln_1/ln_2 γ → σγP, β → βP; writers W → σWP,
    /// b → σbP; ln_f γ_f → γ_fP, β_f → σβ_fP; an untied lm_head → σ·lm_head·P.
    /// </summary>
    public static Model ResidualPermutation(Model m, int[] perm, double sigma)
    {
        using var scope = NewDisposeScope();
        var p = tensor(perm.Select(i => (long)i).ToArray(), ScalarType.Int64);
        Tensor Cols(Tensor w) => w.index_select(1, p);
        Tensor Vec(Tensor b) => b.index_select(0, p);
        var layers = m.Layers.Select(l => new LayerWeights
        {
            Ln1W = Vec(l.Ln1W) * sigma, Ln1B = Vec(l.Ln1B), AttnW = l.AttnW.index_select(0, p), AttnB = l.AttnB.clone(),
            AttnProjW = Cols(l.AttnProjW) * sigma, AttnProjB = Vec(l.AttnProjB) * sigma,
            Ln2W = Vec(l.Ln2W) * sigma, Ln2B = Vec(l.Ln2B), FcW = l.FcW.index_select(0, p), FcB = l.FcB.clone(),
            MlpProjW = Cols(l.MlpProjW) * sigma, MlpProjB = Vec(l.MlpProjB) * sigma,
        }.MoveToOuterDisposeScope()).ToList();
        var g = m.Globals;
        var globals = new GlobalWeights
        {
            Wte = Cols(g.Wte) * sigma, Wpe = Cols(g.Wpe) * sigma, LnFW = Vec(g.LnFW), LnFB = Vec(g.LnFB) * sigma,
            LmHead = g.LmHead is null ? null : Cols(g.LmHead) * sigma,
        }.MoveToOuterDisposeScope();
        return new Model(layers, globals);
    }

    /// <summary>g·θ for a random g of families 1–10 (both permutations included).</summary>
    public static Model TransformBasic(Model m, Gpt2Config c, long seed, bool papersFamiliesOnly = false)
    {
        var gen = new Generator((ulong)seed);
        double z = papersFamiliesOnly ? 0.0 : 1.0; // scales the additive families 4–10 (and turns off 6 below)
        long d = c.NEmbd, h = c.NHead, dk = c.HeadDim, f = c.NInner;
        var layers = new List<LayerWeights>();
        foreach (var w0 in m.Layers)
        {
            using var scope = NewDisposeScope();
            var w = w0.Clone();
            var wq = w.AttnW.narrow(1, 0, d).clone(); var wk = w.AttnW.narrow(1, d, d).clone(); var wv = w.AttnW.narrow(1, 2 * d, d).clone();
            var bq = w.AttnB.narrow(0, 0, d).clone(); var bk = w.AttnB.narrow(0, d, d).clone(); var bv = w.AttnB.narrow(0, 2 * d, d).clone();
            var wo = w.AttnProjW.clone(); var bo = w.AttnProjB.clone();
            var qs = new List<Tensor>(); var ks = new List<Tensor>(); var vs = new List<Tensor>(); var os = new List<Tensor>();
            var bqs = new List<Tensor>(); var bks = new List<Tensor>(); var bvs = new List<Tensor>();
            for (long i = 0; i < h; i++)
            {
                var a = RandomGL(dk, gen, symmetric: i % 2 == 0);             // family 1
                var ait = linalg.inv(a).t();
                var cm = RandomGL(dk, gen, symmetric: i % 2 == 1);            // family 2
                var ci = linalg.inv(cm);
                var sl = (i * dk, dk);
                qs.Add(matmul(wq.narrow(1, sl.Item1, dk), a)); bqs.Add(matmul(bq.narrow(0, sl.Item1, dk), a));
                var t = randn(dk, ScalarType.Float64, generator: gen) * 0.1 * z * Rms(bk);   // family 4
                ks.Add(matmul(wk.narrow(1, sl.Item1, dk), ait)); bks.Add(matmul(bk.narrow(0, sl.Item1, dk), ait) + t);
                var delta = randn(dk, ScalarType.Float64, generator: gen) * 0.1 * z * Rms(bv);   // family 5 (in the old basis)
                var woI = wo.narrow(0, sl.Item1, dk);
                bo = bo - matmul(delta, woI);
                vs.Add(matmul(wv.narrow(1, sl.Item1, dk), cm)); bvs.Add(matmul(bv.narrow(0, sl.Item1, dk) + delta, cm));
                os.Add(matmul(ci, woI));
            }
            // family 3: head permutation
            var sigma = randperm(h, generator: gen).data<long>().ToArray();
            Tensor Cat(List<Tensor> parts, int dim) => cat(sigma.Select(s => parts[(int)s]).ToList(), dim);
            var attnW = cat([Cat(qs, 1), Cat(ks, 1), Cat(vs, 1)], 1);
            var attnB = cat([Cat(bqs, 0), Cat(bks, 0), Cat(bvs, 0)], 0);
            wo = Cat(os, 0);
            // family 9 (writers): W_O += a1ᵀ, b_O += κ1
            wo = wo + randn(d, 1, ScalarType.Float64, generator: gen) * 0.1 * z * Rms(wo);
            bo = bo + 0.1 * z * Rms(bo) * randn(1, ScalarType.Float64, generator: gen);
            var pw = w.MlpProjW + randn(f, 1, ScalarType.Float64, generator: gen) * 0.1 * z * Rms(w.MlpProjW);
            var pb = w.MlpProjB + 0.1 * z * Rms(w.MlpProjB) * randn(1, ScalarType.Float64, generator: gen);

            (Tensor g, Tensor b, Tensor W, Tensor bias) Ln(Tensor g, Tensor b, Tensor W, Tensor bias)
            {
                var s = (rand(d, ScalarType.Float64, generator: gen) * 1.5 - 0.5) * z + 1.0;   // family 6
                g = g * s; b = b * s; W = W / s.unsqueeze(1);
                var t = randn(d, ScalarType.Float64, generator: gen) * 0.1 * z * Rms(b);      // family 7
                b = b + t; bias = bias - matmul(t, W);
                var cvec = randn(W.shape[1], ScalarType.Float64, generator: gen) * 0.1 * z * Rms(W);   // family 8
                W = W + (1.0 / g).unsqueeze(1) * cvec.unsqueeze(0);
                bias = bias - (b / g).sum() * cvec;
                return (g, b, W, bias);
            }
            var (g1, b1, aw, ab) = Ln(w.Ln1W, w.Ln1B, attnW, attnB);
            var (g2, b2, fw, fb) = Ln(w.Ln2W, w.Ln2B, w.FcW, w.FcB);
            // family 3: MLP unit permutation
            var pi = randperm(f, generator: gen);
            fw = fw.index_select(1, pi); fb = fb.index_select(0, pi); pw = pw.index_select(0, pi);
            var outW = new LayerWeights
            {
                Ln1W = g1, Ln1B = b1, AttnW = aw, AttnB = ab, AttnProjW = wo, AttnProjB = bo,
                Ln2W = g2, Ln2B = b2, FcW = fw, FcB = fb, MlpProjW = pw, MlpProjB = pb,
            };
            layers.Add(outW.Clone().MoveToOuterDisposeScope());
            w.Dispose();
        }
        // family 10: wte + 1uᵀ, wpe − 1uᵀ, wpe + c1ᵀ
        var gl = m.Globals;
        var u = randn(1, d, ScalarType.Float64, generator: gen) * 0.1 * z * Rms(gl.Wte);
        var cpos = randn(c.NPositions, 1, ScalarType.Float64, generator: gen) * 0.1 * z * Rms(gl.Wpe);
        var globals = new GlobalWeights
        {
            Wte = gl.Wte + u, Wpe = gl.Wpe - u + cpos, LnFW = gl.LnFW.clone(), LnFB = gl.LnFB.clone(), LmHead = gl.LmHead?.clone(),
        };
        u.Dispose(); cpos.Dispose();
        return new Model(layers, globals);
    }
}
