using System.Text.Json;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Gpt2;

namespace GaugeTorch.Tests.Llama;

/// <summary>
/// An independent forward pass of HuggingFace's LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM in plain
/// float64 C# arrays: no TorchSharp and no code shared with the library. It reads config.json itself (rope_theta at top
/// level or in rope_parameters; rope_scaling with rope_type or type), takes each tensor's raw bytes from the store and
/// decodes F64/F32/F16/BF16 by hand (<see cref="ReferenceGpt2.Decode"/>, test code). It follows HF's modeling code
/// literally: nn.Linear y = x·Wᵀ + b with W [out, in] indexed in place, RMSNorm x·rsqrt(mean(x²) + eps)·g, rotary
/// embeddings by <c>rotate_half</c> with inv_freq computed as HF's <c>_compute_default/linear/llama3_parameters</c>
/// do (masks and blends, not the library's loop), <c>repeat_kv</c> (query head i reads KV head i / n_rep), causal
/// softmax scaled by 1/√hd, SwiGLU down(silu(gate)·up), final RMSNorm, tied or untied head.
/// </summary>
internal sealed class ReferenceLlama
{
    public int L, D, H, G, Hd, F, V;
    public double Eps, Theta;
    public string ModelType;
    public bool QkvBias, OBias, MlpBias;
    private readonly string _head;
    private readonly Func<string, double[]> _get;
    private readonly JsonElement? _scaling;
    private double[]? _invFreqCache;
    // Computed on first use: the init-only switches are set after the constructor runs.
    private double[] _invFreq => _invFreqCache ??= InvFreq(_scaling);

    /// <summary>A deliberately wrong model: rotary pairs (2j, 2j+1) (GPT-J's interleaved layout) instead of rotate_half.</summary>
    public bool InterleavedRope { get; init; }
    /// <summary>A deliberately wrong model: query head i reads KV head i mod G (a tiled repeat) instead of repeat_kv's i / n_rep.</summary>
    public bool TiledKv { get; init; }

    /// <summary>A deliberately wrong model: rope_scaling ignored (plain θ^(−2j/hd) frequencies).</summary>
    public bool IgnoreScaling { get; init; }

    /// <summary>Layer 0's attention probabilities [H][T][T] of the last <see cref="Logits"/> call.</summary>
    public double[][][]? FirstLayerAttention { get; private set; }

    public ReferenceLlama(string dir, SafeTensorStore store)
    {
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "config.json")));
        var r = cfg.RootElement;
        bool Has(JsonElement e, string k) => e.TryGetProperty(k, out var v) && v.ValueKind != JsonValueKind.Null;
        ModelType = r.GetProperty("model_type").GetString()!;
        D = r.GetProperty("hidden_size").GetInt32();
        L = r.GetProperty("num_hidden_layers").GetInt32();
        H = r.GetProperty("num_attention_heads").GetInt32();
        G = Has(r, "num_key_value_heads") ? r.GetProperty("num_key_value_heads").GetInt32() : H;
        Hd = Has(r, "head_dim") ? r.GetProperty("head_dim").GetInt32() : D / H;
        F = r.GetProperty("intermediate_size").GetInt32();
        V = r.GetProperty("vocab_size").GetInt32();
        Eps = r.GetProperty("rms_norm_eps").GetDouble();
        bool attentionBias = Has(r, "attention_bias") && r.GetProperty("attention_bias").GetBoolean();
        QkvBias = ModelType == "qwen2" || (ModelType == "llama" && attentionBias);
        OBias = ModelType == "llama" && attentionBias;
        MlpBias = ModelType == "llama" && Has(r, "mlp_bias") && r.GetProperty("mlp_bias").GetBoolean();

        JsonElement? rp = Has(r, "rope_parameters") ? r.GetProperty("rope_parameters") : null;
        Theta = rp is { } p && Has(p, "rope_theta") ? p.GetProperty("rope_theta").GetDouble()
              : Has(r, "rope_theta") ? r.GetProperty("rope_theta").GetDouble() : 10000.0;
        JsonElement? scaling = Has(r, "rope_scaling") ? r.GetProperty("rope_scaling") : rp;
        _scaling = scaling?.Clone();

        bool tie = Has(r, "tie_word_embeddings") && r.GetProperty("tie_word_embeddings").GetBoolean();
        _head = tie ? "model.embed_tokens.weight" : "lm_head.weight";
        _get = name => ReferenceGpt2.Decode(store.ReadBytes(name), store.Entry(name).DType);
    }

    /// <summary>HF's rope init functions, written out: default θ^(−2j/hd); linear ÷ factor; llama3 band-wise.</summary>
    private double[] InvFreq(JsonElement? scaling)
    {
        int half = Hd / 2;
        var inv = new double[half];
        for (int j = 0; j < half; j++) inv[j] = 1.0 / Math.Pow(Theta, (2.0 * j) / Hd);
        string type = "default";
        if (scaling is { } s)
            type = s.TryGetProperty("rope_type", out var t1) ? t1.GetString()! : s.TryGetProperty("type", out var t2) ? t2.GetString()! : "default";
        if (type == "default" || IgnoreScaling) return inv;
        var sc = scaling!.Value;
        double factor = sc.GetProperty("factor").GetDouble();
        if (type == "linear") return inv.Select(w => w / factor).ToArray();
        if (type != "llama3") throw new NotSupportedException(type);
        double low = sc.GetProperty("low_freq_factor").GetDouble(), high = sc.GetProperty("high_freq_factor").GetDouble();
        double old = sc.GetProperty("original_max_position_embeddings").GetDouble();
        double lowWavelen = old / low, highWavelen = old / high;
        var result = new double[half];
        for (int j = 0; j < half; j++)
        {
            double wavelen = 2 * Math.PI / inv[j];
            double llama = wavelen > lowWavelen ? inv[j] / factor : inv[j];
            double smooth = (old / wavelen - low) / (high - low);
            double smoothed = (1 - smooth) * llama / factor + smooth * llama;
            bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
            result[j] = medium ? smoothed : llama;
        }
        return result;
    }

    private double[] W(string name) => _get(name);
    private static string Layer(int l, string s) => $"model.layers.{l}.{s}";

    private double[][] RmsNorm(double[][] x, double[] g)
    {
        var y = new double[x.Length][];
        for (int t = 0; t < x.Length; t++)
        {
            double ms = 0;
            for (int i = 0; i < D; i++) ms += x[t][i] * x[t][i];
            double inv = 1.0 / Math.Sqrt(ms / D + Eps);
            y[t] = new double[D];
            for (int i = 0; i < D; i++) y[t][i] = g[i] * (x[t][i] * inv);
        }
        return y;
    }

    /// <summary>nn.Linear: y[t][o] = Σ_i x[t][i]·W[o, i] + b[o], W stored [nOut, nIn] row-major.</summary>
    private static double[][] Linear(double[][] x, double[] w, double[]? b, int nIn, int nOut)
    {
        var y = new double[x.Length][];
        for (int t = 0; t < x.Length; t++)
        {
            y[t] = new double[nOut];
            for (int o = 0; o < nOut; o++)
            {
                double s = b?[o] ?? 0;
                for (int i = 0; i < nIn; i++) s += x[t][i] * w[o * nIn + i];
                y[t][o] = s;
            }
        }
        return y;
    }

    /// <summary>Rotates one head's slice [off, off + hd) of v at position p.</summary>
    private void Rope(double[] v, int off, int p)
    {
        int half = Hd / 2;
        var x = v.AsSpan(off, Hd).ToArray();
        for (int j = 0; j < half; j++)
        {
            double c = Math.Cos(p * _invFreq[j]), s = Math.Sin(p * _invFreq[j]);
            if (InterleavedRope)
            {
                v[off + 2 * j] = x[2 * j] * c - x[2 * j + 1] * s;
                v[off + 2 * j + 1] = x[2 * j + 1] * c + x[2 * j] * s;
            }
            else
            {
                // q·cos + rotate_half(q)·sin with rotate_half(x) = [−x2, x1]
                v[off + j] = x[j] * c - x[j + half] * s;
                v[off + j + half] = x[j + half] * c + x[j] * s;
            }
        }
    }

    /// <summary>logits [T, V] as a row-major array.</summary>
    public double[] Logits(IReadOnlyList<int> tokens)
    {
        int T = tokens.Count;
        var emb = W("model.embed_tokens.weight");
        var x = new double[T][];
        for (int t = 0; t < T; t++) x[t] = emb.AsSpan(tokens[t] * D, D).ToArray();
        for (int l = 0; l < L; l++)
        {
            string S(string s) => Layer(l, s);
            double[]? Bias(string s, bool has) => has ? W(S(s)) : null;
            var h = RmsNorm(x, W(S("input_layernorm.weight")));
            var q = Linear(h, W(S("self_attn.q_proj.weight")), Bias("self_attn.q_proj.bias", QkvBias), D, H * Hd);
            var k = Linear(h, W(S("self_attn.k_proj.weight")), Bias("self_attn.k_proj.bias", QkvBias), D, G * Hd);
            var v = Linear(h, W(S("self_attn.v_proj.weight")), Bias("self_attn.v_proj.bias", QkvBias), D, G * Hd);
            for (int t = 0; t < T; t++)
            {
                for (int i = 0; i < H; i++) Rope(q[t], i * Hd, t);
                for (int r = 0; r < G; r++) Rope(k[t], r * Hd, t);
            }
            int nRep = H / G;
            var att = new double[T][];
            var probs = new double[H][][];
            for (int t = 0; t < T; t++) att[t] = new double[H * Hd];
            for (int i = 0; i < H; i++)
            {
                int kv = TiledKv ? i % G : i / nRep;   // repeat_kv: [G, n_rep] flattened, head i = kv·n_rep + rep
                probs[i] = new double[T][];
                for (int t = 0; t < T; t++)
                {
                    var sc = new double[t + 1];
                    double max = double.NegativeInfinity;
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int j = 0; j < Hd; j++) dot += q[t][i * Hd + j] * k[s][kv * Hd + j];
                        sc[s] = dot / Math.Sqrt(Hd);
                        max = Math.Max(max, sc[s]);
                    }
                    double z = 0;
                    for (int s = 0; s <= t; s++) { sc[s] = Math.Exp(sc[s] - max); z += sc[s]; }
                    for (int s = 0; s <= t; s++) sc[s] /= z;
                    probs[i][t] = sc;
                    for (int j = 0; j < Hd; j++)
                    {
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += sc[s] * v[s][kv * Hd + j];
                        att[t][i * Hd + j] = acc;
                    }
                }
            }
            if (l == 0) FirstLayerAttention = probs;
            var o = Linear(att, W(S("self_attn.o_proj.weight")), Bias("self_attn.o_proj.bias", OBias), H * Hd, D);
            for (int t = 0; t < T; t++) for (int c = 0; c < D; c++) x[t][c] += o[t][c];

            var h2 = RmsNorm(x, W(S("post_attention_layernorm.weight")));
            var gate = Linear(h2, W(S("mlp.gate_proj.weight")), Bias("mlp.gate_proj.bias", MlpBias), D, F);
            var up = Linear(h2, W(S("mlp.up_proj.weight")), Bias("mlp.up_proj.bias", MlpBias), D, F);
            for (int t = 0; t < T; t++)
                for (int u = 0; u < F; u++) gate[t][u] = gate[t][u] / (1 + Math.Exp(-gate[t][u])) * up[t][u];   // silu(gate)·up
            var down = Linear(gate, W(S("mlp.down_proj.weight")), Bias("mlp.down_proj.bias", MlpBias), F, D);
            for (int t = 0; t < T; t++) for (int c = 0; c < D; c++) x[t][c] += down[t][c];
        }
        var hf = RmsNorm(x, W("model.norm.weight"));
        var head = W(_head);
        var logits = new double[T * V];
        for (int t = 0; t < T; t++)
            for (int vv = 0; vv < V; vv++)
            {
                double s = 0;
                for (int i = 0; i < D; i++) s += hf[t][i] * head[vv * D + i];
                logits[t * V + vv] = s;
            }
        return logits;
    }
}
