using System.Buffers.Binary;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Tests.Gpt2;

/// <summary>
/// An independent GPT-2 forward in plain C# double arrays (no TorchSharp): reads the raw safetensors bytes,
/// decodes F64/F32/F16/BF16 itself and follows HuggingFace's GPT2LMHeadModel step by step.
/// </summary>
public sealed class ReferenceForward
{
    private readonly SafeTensorStore _store;
    private readonly Gpt2Config _c;
    private readonly string _prefix;

    public ReferenceForward(string dir)
    {
        _store = SafeTensorStore.Open(dir);
        _c = Gpt2Config.Load(Path.Combine(dir, "config.json"));
        _prefix = _store.Contains("transformer.wte.weight") ? "transformer." : "";
    }

    private double[] Get(string name)
    {
        string key = name == "lm_head.weight" ? name : _prefix + name;
        var e = _store.Entry(key);
        var bytes = _store.ReadBytes(key);
        var r = new double[e.NumElements];
        for (int i = 0; i < r.Length; i++)
        {
            r[i] = e.DType switch
            {
                DType.F64 => BinaryPrimitives.ReadDoubleLittleEndian(bytes.AsSpan(i * 8)),
                DType.F32 => BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4)),
                DType.F16 => (double)BinaryPrimitives.ReadHalfLittleEndian(bytes.AsSpan(i * 2)),
                DType.BF16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(i * 2)) << 16),
                _ => throw new NotSupportedException(e.DType.ToString()),
            };
        }
        return r;
    }

    /// <summary>x[T,n] · W[n,m] + b[m].</summary>
    private static double[] Linear(double[] x, int t, int n, double[] w, double[] b, int m)
    {
        var y = new double[t * m];
        for (int i = 0; i < t; i++)
        {
            for (int j = 0; j < m; j++) y[i * m + j] = b[j];
            for (int k = 0; k < n; k++)
            {
                double xv = x[i * n + k];
                for (int j = 0; j < m; j++) y[i * m + j] += xv * w[k * m + j];
            }
        }
        return y;
    }

    private double[] LayerNorm(double[] x, int t, double[] g, double[] b)
    {
        int d = _c.NEmbd;
        var y = new double[x.Length];
        for (int i = 0; i < t; i++)
        {
            double mean = 0, var = 0;
            for (int j = 0; j < d; j++) mean += x[i * d + j];
            mean /= d;
            for (int j = 0; j < d; j++) { double z = x[i * d + j] - mean; var += z * z; }
            var /= d;
            double inv = 1.0 / Math.Sqrt(var + _c.LayerNormEpsilon);
            for (int j = 0; j < d; j++) y[i * d + j] = (x[i * d + j] - mean) * inv * g[j] + b[j];
        }
        return y;
    }

    public double[,] Logits(int[] tokens)
    {
        int t = tokens.Length, d = _c.NEmbd, h = _c.NHead, dk = d / h, f = _c.NInner, v = _c.VocabSize;
        var wte = Get("wte.weight");
        var wpe = Get("wpe.weight");
        var x = new double[t * d];
        for (int i = 0; i < t; i++)
            for (int j = 0; j < d; j++) x[i * d + j] = wte[tokens[i] * d + j] + wpe[i * d + j];
        for (int l = 0; l < _c.NLayer; l++)
        {
            string p = $"h.{l}.";
            var a = LayerNorm(x, t, Get(p + "ln_1.weight"), Get(p + "ln_1.bias"));
            var qkv = Linear(a, t, d, Get(p + "attn.c_attn.weight"), Get(p + "attn.c_attn.bias"), 3 * d);
            var y = new double[t * d];
            for (int head = 0; head < h; head++)
            {
                for (int i = 0; i < t; i++)
                {
                    var s = new double[i + 1];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j <= i; j++)
                    {
                        double dot = 0;
                        for (int k = 0; k < dk; k++) dot += qkv[i * 3 * d + head * dk + k] * qkv[j * 3 * d + d + head * dk + k];
                        s[j] = dot / Math.Sqrt(dk);
                        max = Math.Max(max, s[j]);
                    }
                    double z = 0;
                    for (int j = 0; j <= i; j++) { s[j] = Math.Exp(s[j] - max); z += s[j]; }
                    for (int j = 0; j <= i; j++)
                        for (int k = 0; k < dk; k++) y[i * d + head * dk + k] += s[j] / z * qkv[j * 3 * d + 2 * d + head * dk + k];
                }
            }
            var o = Linear(y, t, d, Get(p + "attn.c_proj.weight"), Get(p + "attn.c_proj.bias"), d);
            for (int i = 0; i < x.Length; i++) x[i] += o[i];
            var m = LayerNorm(x, t, Get(p + "ln_2.weight"), Get(p + "ln_2.bias"));
            var hid = Linear(m, t, d, Get(p + "mlp.c_fc.weight"), Get(p + "mlp.c_fc.bias"), f);
            for (int i = 0; i < hid.Length; i++)
            {
                double u = hid[i];
                hid[i] = 0.5 * u * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (u + 0.044715 * u * u * u)));
            }
            var mo = Linear(hid, t, f, Get(p + "mlp.c_proj.weight"), Get(p + "mlp.c_proj.bias"), d);
            for (int i = 0; i < x.Length; i++) x[i] += mo[i];
        }
        var n = LayerNorm(x, t, Get("ln_f.weight"), Get("ln_f.bias"));
        var head2 = _store.Contains("lm_head.weight") ? Get("lm_head.weight") : wte;
        var logits = new double[t, v];
        for (int i = 0; i < t; i++)
            for (int w = 0; w < v; w++)
            {
                double s = 0;
                for (int k = 0; k < d; k++) s += n[i * d + k] * head2[w * d + k];
                logits[i, w] = s;
            }
        return logits;
    }
}
