using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Canonical;

/// <summary>
/// Test-only: applies one random element of every gauge family of GAUGE.md §2 (composed, both permutations
/// included) to a float64 model held in memory. Kept minimal and independent of the library's gauge code so the
/// canonical form is checked against a second reading of the spec.
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

    /// <summary>g·θ for a random g of every family (1–10), both permutations included.</summary>
    public static Model Transform(Model m, Gpt2Config c, long seed, bool papersFamiliesOnly = false)
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
