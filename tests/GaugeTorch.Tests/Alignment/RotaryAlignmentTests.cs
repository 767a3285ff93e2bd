using GaugeTorch.Alignment;
using GaugeTorch.Model;
using GaugeTorch.Tests.Llama;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Alignment;

/// <summary>
/// Alignment of LLaMA-family models (GAUGE.md §6.2) on B = g·A, with g drawn and applied here, independently of the
/// library's gauge code: norm gains, KV-group and within-group query-head permutations, the QK commutant per group and
/// plane, each group's GL(hd) on V/O, MLP permutation and SwiGLU unit scale per layer; the residual by a signed
/// permutation (tied) or a random orthogonal Q with the final gain and unembedding offset (untied). Checked by direct
/// weight comparison with A.
/// </summary>
public class RotaryAlignmentTests(ITestOutputHelper output)
{
    private static Tensor Gains(long n, Generator gen) =>
        (rand(n, ScalarType.Float64, generator: gen) * 1.5 + 0.5) * where(rand(n, ScalarType.Float64, generator: gen) < 0.3, -1.0, 1.0);

    private static long[] Perm(long n, Generator gen) => randperm(n, generator: gen).data<long>().ToArray();

    /// <summary>(a, b) → (Re z·a − Im z·b, Im z·a + Re z·b) on the planes (j, j + hd/2) of the last axis.</summary>
    private static Tensor Planes(Tensor x, Tensor re, Tensor im)
    {
        long h2 = x.shape[^1] / 2;
        var a = x.narrow(-1, 0, h2);
        var b = x.narrow(-1, h2, h2);
        return cat([re * a - im * b, im * a + re * b], -1);
    }

    internal static ModelWeights Transform(ModelWeights m, long seed)
    {
        var gen = new Generator((ulong)seed);
        var t = m.Traits;
        int d = t.Hidden, h = t.QueryHeads, g = t.KvHeads, k = h / g, hd = t.HeadDim, f = t.Inner;
        var layers = new List<LayerView>();
        // Residual map x → x·R (R orthogonal): a signed permutation when tied, a random orthogonal matrix when untied.
        Tensor r;
        if (t.Tied)
        {
            var p = Perm(d, gen);
            var s = where(rand(d, ScalarType.Float64, generator: gen) < 0.5, -1.0, 1.0);
            r = zeros(d, d, ScalarType.Float64);
            for (int j = 0; j < d; j++) r[p[j], j] = s[j];
        }
        else r = linalg.qr(randn(d, d, ScalarType.Float64, generator: gen)).Q;
        foreach (var l0 in m.Layers)
        {
            var w = l0.Map(x => x.to_type(ScalarType.Float64).clone());
            // residual: readers W → diag(1/g) Rᵀ diag(g) W, writers W → W R (gains kept)
            Tensor Reader(Tensor x, Tensor gain) => gain.reciprocal().unsqueeze(1) * matmul(r.t(), gain.unsqueeze(1) * x);
            Tensor Heads(Tensor x, Tensor gain) => stack(Enumerable.Range(0, (int)x.shape[0]).Select(i => Reader(x[i], gain)).ToArray());
            w.Q = Heads(w.Q, w.Norm1.Gain); w.K = Heads(w.K, w.Norm1.Gain); w.V = Heads(w.V, w.Norm1.Gain);
            w.Up = Reader(w.Up, w.Norm2.Gain); w.Gate = Reader(w.Gate!, w.Norm2.Gain);
            w.O = matmul(w.O, r); w.Down = matmul(w.Down, r);
            if (t.Tied)
            {
                // a signed permutation keeps the gains only permuted: g → g·|R|
                var pr = r.abs();
                var g1 = matmul(w.Norm1.Gain.unsqueeze(0), pr).squeeze(0);
                var g2 = matmul(w.Norm2.Gain.unsqueeze(0), pr).squeeze(0);
                w.Q = stack(Enumerable.Range(0, h).Select(i => matmul(r.t(), l0.Q[i].to_type(ScalarType.Float64))).ToArray());
                w.K = stack(Enumerable.Range(0, g).Select(i => matmul(r.t(), l0.K[i].to_type(ScalarType.Float64))).ToArray());
                w.V = stack(Enumerable.Range(0, g).Select(i => matmul(r.t(), l0.V[i].to_type(ScalarType.Float64))).ToArray());
                w.Up = matmul(r.t(), l0.Up.to_type(ScalarType.Float64)); w.Gate = matmul(r.t(), l0.Gate!.to_type(ScalarType.Float64));
                w.Norm1 = new NormView { Gain = g1 }; w.Norm2 = new NormView { Gain = g2 };
            }
            // norm gains
            var s1 = Gains(d, gen); var s2 = Gains(d, gen);
            w.Norm1 = new NormView { Gain = w.Norm1.Gain * s1 }; w.Norm2 = new NormView { Gain = w.Norm2.Gain * s2 };
            w.Q = w.Q / s1.view(1, -1, 1); w.K = w.K / s1.view(1, -1, 1); w.V = w.V / s1.view(1, -1, 1);
            w.Up = w.Up / s2.unsqueeze(1); w.Gate = w.Gate / s2.unsqueeze(1);
            // groups and query heads within groups
            var tau = Perm(g, gen);
            var qIdx = new long[h];
            for (int rr = 0; rr < g; rr++)
            {
                var inner = Perm(k, gen);
                for (int i = 0; i < k; i++) qIdx[rr * k + i] = tau[rr] * k + inner[i];
            }
            var ti = tensor(tau); var qi = tensor(qIdx);
            w.K = w.K.index_select(0, ti); w.V = w.V.index_select(0, ti);
            if (w.KBias is not null) { w.KBias = w.KBias.index_select(0, ti); w.VBias = w.VBias!.index_select(0, ti); }
            w.Q = w.Q.index_select(0, qi); w.O = w.O.index_select(0, qi);
            if (w.QBias is not null) w.QBias = w.QBias.index_select(0, qi);
            // QK commutant: z per group and plane on the queries, 1/conj(z) on the keys
            var zr = randn(g, hd / 2, ScalarType.Float64, generator: gen); var zi = randn(g, hd / 2, ScalarType.Float64, generator: gen);
            var n2 = zr.square() + zi.square();
            var qzr = zr.repeat_interleave(k, 0); var qzi = zi.repeat_interleave(k, 0);
            w.Q = Planes(w.Q, qzr.unsqueeze(1), qzi.unsqueeze(1));
            if (w.QBias is not null) w.QBias = Planes(w.QBias, qzr, qzi);
            w.K = Planes(w.K, (zr / n2).unsqueeze(1), (zi / n2).unsqueeze(1));
            if (w.KBias is not null) w.KBias = Planes(w.KBias, zr / n2, zi / n2);
            // VO per group
            var c = stack(Enumerable.Range(0, g).Select(_ => GaugeTorch.Tests.Canonical.TestGauge.RandomGL(hd, gen, false)).ToArray());
            w.V = matmul(w.V, c);
            if (w.VBias is not null) w.VBias = matmul(w.VBias.unsqueeze(1), c).squeeze(1);
            w.O = matmul(linalg.inv(c).repeat_interleave(k, 0), w.O);
            // MLP units and SwiGLU unit scale
            var pi = tensor(Perm(f, gen));
            w.Up = w.Up.index_select(1, pi); w.Gate = w.Gate.index_select(1, pi); w.Down = w.Down.index_select(0, pi);
            if (w.UpBias is not null) { w.UpBias = w.UpBias.index_select(0, pi); w.GateBias = w.GateBias!.index_select(0, pi); }
            var us = Gains(f, gen);
            w.Up = w.Up * us.unsqueeze(0); w.Down = w.Down / us.unsqueeze(1);
            if (w.UpBias is not null) w.UpBias = w.UpBias * us;
            layers.Add(w.Map(x => x.contiguous()));
        }
        var gl = m.Globals.Map(x => x.to_type(ScalarType.Float64).clone());
        var gf = gl.FinalNorm.Gain;
        gl.Embed = matmul(gl.Embed, r);
        if (t.Tied) gl.FinalNorm = new NormView { Gain = matmul(gf.unsqueeze(0), r.abs()).squeeze(0) };
        else
        {
            gl.Head = matmul(gl.Head!, gf.unsqueeze(1) * r * gf.reciprocal().unsqueeze(0));
            var sf = Gains(d, gen);
            gl.FinalNorm = new NormView { Gain = gf * sf };
            gl.Head = gl.Head / sf.unsqueeze(0) + randn(1, d, ScalarType.Float64, generator: gen) * 0.1;
        }
        return new ModelWeights(layers, gl, t);
    }

    [Theory]
    [InlineData("gqa", 1)]
    [InlineData("tied", 2)]
    [InlineData("qwen2", 3)]
    [InlineData("mqa", 4)]
    public void AlignReturnsAFromATransformedCopy(string variant, long seed)
    {
        using var ck = Checkpoint.Open(LlamaFixtures.Get(variant));
        using var a = ModelWeights.Load(ck, ScalarType.Float64);
        using var b = Transform(a, seed);
        var tokens = ModelEvaluation.ProbeTokens(a.Traits, 24);
        double gauge = ModelEvaluation.RelativeLogitsError(a, b, tokens);
        var (_, before) = GaugeAlignmentTests.Compare(b, a);
        using var r = GaugeAlignment.Align(a, b);
        var (max, total) = GaugeAlignmentTests.Compare(r.Aligned, a);
        double fn = ModelEvaluation.RelativeLogitsError(r.Original, r.Aligned, tokens);
        output.WriteLine($"{variant} ({a.Traits.Describe()}): g changes logits by {gauge:E2}; distance {before:E2} -> {total:E2} (max tensor {max:E2}); rounds {r.Rounds}; function {fn:E2}");
        Assert.True(gauge <= 1e-12, $"the test's own g is not a symmetry: {gauge:G3}");
        Assert.True(before > 0.1);
        Assert.True(max <= 1e-9, $"max tensor distance after alignment {max:G3}");
        Assert.True(fn <= 1e-12, $"alignment changed B's function by {fn:G3}");
    }
}
