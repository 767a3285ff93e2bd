using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Llama;

/// <summary>
/// Test-only: a second, independent reading of the LLaMA-family gauge group (GAUGE.md §6.2), applied to the stored
/// HuggingFace tensors by name ([out, in] nn.Linear layout, float64), sharing no code with the library's symmetry or
/// canonical code. One random element of every family, composed: per layer norm-gain, qk-rope (a complex scalar per
/// group and rotary plane on the query rows, 1/conj(z) on the key rows), vo (C ∈ GL(hd) per group), the value-bias
/// shift into the o_proj bias when both exist, head-perm within each group, group-perm, mlp-scale and mlp-perm; then,
/// tied, a signed permutation of the residual coordinates, or, untied, final-gain, unembed-offset and a random
/// residual rotation.
/// </summary>
internal static class TestLlamaGauge
{
    public sealed record Shape(int L, int D, int H, int G, int Hd, int F, bool Tied, bool QkvBias, bool OBias, bool MlpBias)
    {
        public int K => H / G;
    }

    private static string N(int l, string s) => $"model.layers.{l}.{s}";

    private static Tensor RandomGL(long n, Generator gen)
    {
        var (q1, _) = linalg.qr(randn(n, n, ScalarType.Float64, generator: gen));
        var (q2, _) = linalg.qr(randn(n, n, ScalarType.Float64, generator: gen));
        var lam = rand(n, ScalarType.Float64, generator: gen) * 1.5 + 0.5;
        return matmul(q1 * lam.unsqueeze(0), q2.t());
    }

    private static Tensor Orthogonal(long n, Generator gen) => linalg.qr(randn(n, n, ScalarType.Float64, generator: gen)).Q;

    /// <summary>Nonzero scales of both signs, |s| in [0.5, 2].</summary>
    private static Tensor Scales(long n, Generator gen)
    {
        var sign = where(rand(n, ScalarType.Float64, generator: gen) < 0.3, -1.0, 1.0);
        return (rand(n, ScalarType.Float64, generator: gen) * 1.5 + 0.5) * sign;
    }

    /// <summary>The [hd, hd] matrix multiplying every rotary plane j (rows j and j + hd/2) by the complex z_j.</summary>
    private static Tensor PlaneMatrix(double[] re, double[] im)
    {
        int half = re.Length, hd = 2 * half;
        var m = new double[hd * hd];
        for (int j = 0; j < half; j++)
        {
            m[j * hd + j] = re[j];
            m[j * hd + j + half] = -im[j];
            m[(j + half) * hd + j] = im[j];
            m[(j + half) * hd + j + half] = re[j];
        }
        return tensor(m, ScalarType.Float64).view(hd, hd);
    }

    private static Tensor Rows(Tensor w, long block, long size) => w.narrow(0, block * size, size);

    /// <summary>g·θ for a random element g of every family (the input is not modified).</summary>
    public static Dictionary<string, Tensor> Transform(Dictionary<string, Tensor> input, Shape s, long seed)
    {
        var gen = new Generator((ulong)(seed * 1_000_003 + 7));
        var w = input.ToDictionary(p => p.Key, p => p.Value.clone());
        int hd = s.Hd, half = hd / 2, k = s.K;
        for (int l = 0; l < s.L; l++)
        {
            Tensor W(string x) => w[N(l, x)];
            void Set(string x, Tensor t) => w[N(l, x)] = t;
            // norm-gain: g → g∘s, every reader's input columns / s.
            var s1 = Scales(s.D, gen);
            Set("input_layernorm.weight", W("input_layernorm.weight") * s1);
            foreach (var p in new[] { "q", "k", "v" }) Set($"self_attn.{p}_proj.weight", W($"self_attn.{p}_proj.weight") / s1.unsqueeze(0));
            var s2 = Scales(s.D, gen);
            Set("post_attention_layernorm.weight", W("post_attention_layernorm.weight") * s2);
            foreach (var p in new[] { "gate", "up" }) Set($"mlp.{p}_proj.weight", W($"mlp.{p}_proj.weight") / s2.unsqueeze(0));

            var q = W("self_attn.q_proj.weight"); var kk = W("self_attn.k_proj.weight"); var v = W("self_attn.v_proj.weight");
            var o = W("self_attn.o_proj.weight");
            Tensor? qb = s.QkvBias ? W("self_attn.q_proj.bias") : null, kb = s.QkvBias ? W("self_attn.k_proj.bias") : null, vb = s.QkvBias ? W("self_attn.v_proj.bias") : null;
            Tensor? ob = s.OBias ? W("self_attn.o_proj.bias") : null;
            var qBlocks = new List<Tensor>(); var qbBlocks = new List<Tensor>(); var oBlocks = new List<Tensor>();
            var kBlocks = new List<Tensor>(); var kbBlocks = new List<Tensor>(); var vBlocks = new List<Tensor>(); var vbBlocks = new List<Tensor>();
            for (int r = 0; r < s.G; r++)
            {
                // qk-rope: z per plane on the queries, 1/conj(z) = z/|z|² on the key.
                var rho = Enumerable.Range(0, half).Select(_ => 0.5 + 1.5 * rand(1, ScalarType.Float64, generator: gen).item<double>()).ToArray();
                var th = Enumerable.Range(0, half).Select(_ => 2 * Math.PI * rand(1, ScalarType.Float64, generator: gen).item<double>()).ToArray();
                var mz = PlaneMatrix(rho.Select((p, j) => p * Math.Cos(th[j])).ToArray(), rho.Select((p, j) => p * Math.Sin(th[j])).ToArray());
                var mw = PlaneMatrix(rho.Select((p, j) => Math.Cos(th[j]) / p).ToArray(), rho.Select((p, j) => Math.Sin(th[j]) / p).ToArray());
                // vo: C ∈ GL(hd): v rows → Cᵀ·rows, bias → Cᵀ·b, o columns of the group's heads → ·C^{−ᵀ}.
                var c = RandomGL(hd, gen);
                var cinvT = linalg.inv(c).t();
                kBlocks.Add(matmul(mw, Rows(kk, r, hd)));
                if (kb is not null) kbBlocks.Add(matmul(mw, Rows(kb, r, hd)));
                vBlocks.Add(matmul(c.t(), Rows(v, r, hd)));
                Tensor? vbr = vb is null ? null : matmul(c.t(), Rows(vb, r, hd));
                // head-perm within the group.
                var hp = randperm(k, generator: gen).data<long>().ToArray();
                var delta = vbr is not null && ob is not null ? randn(hd, ScalarType.Float64, generator: gen) * 0.1 : null;
                for (int m = 0; m < k; m++)
                {
                    int i = r * k + (int)hp[m];
                    qBlocks.Add(matmul(mz, Rows(q, i, hd)));
                    if (qb is not null) qbBlocks.Add(matmul(mz, Rows(qb, i, hd)));
                    var oi = matmul(o.narrow(1, i * hd, hd), cinvT);
                    oBlocks.Add(oi);
                    // value-bias shift: b_V + δ with o bias − O_i·δ for every head of the group.
                    if (delta is not null) ob = ob! - matmul(oi, delta);
                }
                if (vbr is not null) vbBlocks.Add(delta is null ? vbr : vbr + delta);
            }
            // group-perm: whole groups with their query heads.
            var gp = randperm(s.G, generator: gen).data<long>().Select(x => (int)x).ToArray();
            Tensor Groups(List<Tensor> blocks, int per) => cat(gp.SelectMany(r => blocks.Skip(r * per).Take(per)).ToList(), 0);
            Set("self_attn.q_proj.weight", Groups(qBlocks, k));
            Set("self_attn.o_proj.weight", cat(gp.SelectMany(r => oBlocks.Skip(r * k).Take(k)).ToList(), 1));
            Set("self_attn.k_proj.weight", Groups(kBlocks, 1));
            Set("self_attn.v_proj.weight", Groups(vBlocks, 1));
            if (qb is not null)
            {
                Set("self_attn.q_proj.bias", Groups(qbBlocks, k));
                Set("self_attn.k_proj.bias", Groups(kbBlocks, 1));
                Set("self_attn.v_proj.bias", Groups(vbBlocks, 1));
            }
            if (ob is not null) Set("self_attn.o_proj.bias", ob);

            // mlp-scale (up rows · s, down columns / s), then mlp-perm.
            var su = Scales(s.F, gen);
            Set("mlp.up_proj.weight", W("mlp.up_proj.weight") * su.unsqueeze(1));
            if (s.MlpBias) Set("mlp.up_proj.bias", W("mlp.up_proj.bias") * su);
            Set("mlp.down_proj.weight", W("mlp.down_proj.weight") / su.unsqueeze(0));
            var up = randperm(s.F, generator: gen);
            foreach (var p in new[] { "gate", "up" })
            {
                Set($"mlp.{p}_proj.weight", W($"mlp.{p}_proj.weight").index_select(0, up));
                if (s.MlpBias) Set($"mlp.{p}_proj.bias", W($"mlp.{p}_proj.bias").index_select(0, up));
            }
            Set("mlp.down_proj.weight", W("mlp.down_proj.weight").index_select(1, up));
        }

        var readers = new[] { ("input_layernorm.weight", new[] { "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight" }),
                              ("post_attention_layernorm.weight", new[] { "mlp.gate_proj.weight", "mlp.up_proj.weight" }) };
        var writers = new List<string> { "self_attn.o_proj.weight", "mlp.down_proj.weight" };
        if (s.OBias) writers.Add("self_attn.o_proj.bias");
        if (s.MlpBias) writers.Add("mlp.down_proj.bias");
        if (s.Tied)
        {
            // Signed permutation of the residual: new coordinate j = σ_j · old coordinate perm[j].
            var perm = randperm(s.D, generator: gen);
            var sigma = where(rand(s.D, ScalarType.Float64, generator: gen) < 0.5, -1.0, 1.0);
            w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"].index_select(1, perm) * sigma;
            w["model.norm.weight"] = w["model.norm.weight"].index_select(0, perm);
            for (int l = 0; l < s.L; l++)
            {
                foreach (var (gain, names) in readers)
                {
                    w[N(l, gain)] = w[N(l, gain)].index_select(0, perm);
                    foreach (var n in names) w[N(l, n)] = w[N(l, n)].index_select(1, perm) * sigma;
                }
                foreach (var n in writers)
                {
                    var x = w[N(l, n)];
                    w[N(l, n)] = x.dim() == 1 ? x.index_select(0, perm) * sigma : x.index_select(0, perm) * sigma.unsqueeze(1);
                }
            }
            if (w.ContainsKey("lm_head.weight")) w["lm_head.weight"] = w["model.embed_tokens.weight"].clone();
        }
        else
        {
            // final-gain, unembed-offset, then a residual rotation Q ∈ O(d).
            var sf = Scales(s.D, gen);
            w["model.norm.weight"] = w["model.norm.weight"] * sf;
            var head = w["lm_head.weight"] / sf.unsqueeze(0);
            var rms = head.square().mean().sqrt();
            head = head + randn(1, s.D, ScalarType.Float64, generator: gen) * rms;
            var rot = Orthogonal(s.D, gen);
            Tensor Reader(Tensor x, Tensor g) => matmul(x * g.unsqueeze(0), rot) / g.unsqueeze(0);   // W·diag(g)·Q·diag(g)⁻¹
            w["lm_head.weight"] = Reader(head, w["model.norm.weight"]);
            w["model.embed_tokens.weight"] = matmul(w["model.embed_tokens.weight"], rot);
            for (int l = 0; l < s.L; l++)
            {
                foreach (var (gain, names) in readers)
                    foreach (var n in names) w[N(l, n)] = Reader(w[N(l, n)], w[N(l, gain)]);
                foreach (var n in writers)
                {
                    var x = w[N(l, n)];
                    w[N(l, n)] = x.dim() == 1 ? matmul(rot.t(), x.unsqueeze(1)).squeeze(1) : matmul(rot.t(), x);
                }
            }
        }
        return w;
    }
}
