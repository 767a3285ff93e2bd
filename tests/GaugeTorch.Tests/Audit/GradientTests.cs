using System.Text.Json.Nodes;
using GaugeTorch.Audit;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Audit;

/// <summary>
/// Tangents written here, straight from GAUGE.md §2, independently of the provisional catalog, in full (no
/// broadcast zeros): qk (family 1), ln-gain (6), writer-mean (9), embedding-offset (10); and a control that is
/// not a gauge (the query-key tangent with the key side's sign and transpose wrong: W_K X instead of −W_K Xᵀ).
/// </summary>
internal sealed class TestTangent(string family, long seed) : ITangent
{
    private Generator Gen(int layer) => new Generator((ulong)(seed * 1000 + layer + 1) * 2654435761UL % 0x7FFFFFFFUL);

    public LayerView? Layer(int layer, LayerView at)
    {
        using var scope = NewDisposeScope();
        var g = Gen(layer);
        var v = at.Map(z => zeros_like(z));
        long h = at.Q.shape[0], d = at.Q.shape[1], dk = at.Q.shape[2], f = at.Up.shape[1];
        switch (family)
        {
            case "qk" or "control":
            {
                // W_Q^i → W_Q^i A_i, b_Q^i → b_Q^i A_i, W_K^i → W_K^i A_i^{-T}: d/dt at A = exp(tX) is (W_Q X, −W_K Xᵀ).
                var x = randn([h, dk, dk], ScalarType.Float64, generator: g);
                var kx = family == "qk" ? -x.transpose(1, 2) : x;
                v.Q = einsum("hdk,hkj->hdj", at.Q, x);
                v.QBias = einsum("hk,hkj->hj", at.QBias!, x);
                v.K = einsum("hdk,hkj->hdj", at.K, kx);
                v.KBias = einsum("hk,hkj->hj", at.KBias!, kx);
                break;
            }
            case "ln-gain":
            {
                // γ → γ∘s, β → β∘s, W → diag(s)⁻¹W for ln_1 / c_attn and ln_2 / c_fc; s = exp(t u).
                var u1 = randn([d], ScalarType.Float64, generator: g);
                var u2 = randn([d], ScalarType.Float64, generator: g);
                v.Norm1.Gain = at.Norm1.Gain * u1;
                v.Norm1.Bias = at.Norm1.Bias! * u1;
                v.Q = -at.Q * u1.view(1, d, 1);
                v.K = -at.K * u1.view(1, d, 1);
                v.V = -at.V * u1.view(1, d, 1);
                v.Norm2.Gain = at.Norm2.Gain * u2;
                v.Norm2.Bias = at.Norm2.Bias! * u2;
                v.Up = -at.Up * u2.view(d, 1);
                break;
            }
            case "writer-mean":
            {
                // W_O → W_O + a 1ᵀ, b_O → b_O + κ1; mlp.c_proj likewise.
                var a = randn([h, dk, 1], ScalarType.Float64, generator: g);
                v.O = a * ones([1, 1, d], ScalarType.Float64);
                v.OBias = ones([d], ScalarType.Float64) * randn([1], ScalarType.Float64, generator: g);
                v.Down = randn([f, 1], ScalarType.Float64, generator: g) * ones([1, d], ScalarType.Float64);
                v.DownBias = ones([d], ScalarType.Float64) * randn([1], ScalarType.Float64, generator: g);
                break;
            }
            default:
                v.Dispose();
                return null;
        }
        return v.MoveToOuterDisposeScope();
    }

    public GlobalView? Globals(GlobalView at)
    {
        if (family != "embedding-offset") return null;
        using var scope = NewDisposeScope();
        // wte → wte + 1uᵀ, wpe → wpe − 1uᵀ + c1ᵀ.
        var g = Gen(-1);
        var v = at.Map(z => zeros_like(z));
        long vocab = at.Embed.shape[0], d = at.Embed.shape[1], p = at.Positions!.shape[0];
        var u = randn([d], ScalarType.Float64, generator: g);
        var c = randn([p], ScalarType.Float64, generator: g);
        v.Embed = ones([vocab, 1], ScalarType.Float64) * u;
        v.Positions = c.unsqueeze(1) * ones([1, d], ScalarType.Float64) - ones([p, 1], ScalarType.Float64) * u;
        return v.MoveToOuterDisposeScope();
    }
}

public class GradientTests(ITestOutputHelper output)
{
    private static int[] Tokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
    }

    /// <summary>The plain gradient: every parameter a leaf, one forward of the whole model, one backward.</summary>
    private static (Dictionary<string, Tensor> Grads, double Loss) PlainGradient(ModelWeights m, int[] tokens)
    {
        var copy = new ModelWeights(m.Layers.Select(l => l.Map(x => x.detach().clone().requires_grad_(true))).ToList(),
            m.Globals.Map(x => x.detach().clone().requires_grad_(true)), m.Traits);
        var named = copy.Layers.SelectMany((l, i) => l.Named().Select(x => ($"{i}.{x.Role}", x.Tensor))).Concat(copy.Globals.Named().Select(x => ($"g.{x.Role}", x.Tensor))).ToList();
        var tok = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        var loss = nn.functional.cross_entropy(copy.Logits(tok).narrow(0, 0, tokens.Length - 1), tok.narrow(0, 1, tokens.Length - 1));
        var grads = torch.autograd.grad([loss], named.Select(n => n.Item2).ToList());
        return (named.Select((n, i) => (n.Item1, grads[i])).ToDictionary(x => x.Item1, x => x.Item2), loss.item<double>());
    }

    /// <summary>The streamed gradient equals the plain whole-model gradient, tensor by tensor.</summary>
    [Theory]
    [InlineData("gpt2", false)]
    [InlineData("gpt2", true)]
    [InlineData("qwen2", false)]
    [InlineData("llama", true)]
    public void StreamedGradientEqualsThePlainGradient(string arch, bool untied)
    {
        using var scope = NewDisposeScope();
        var t = arch == "gpt2" ? RandomModel.Traits("gpt2", 3, 16, 4, null, null, 40, 23, 12, untied)
            : RandomModel.Traits(arch, 3, 16, 4, 2, 6, 24, 23, 12, untied);
        using var m = RandomModel.Build(t, 7);
        var tokens = Tokens(12, t.Vocab, 3);
        var (plain, plainLoss) = PlainGradient(m, tokens);
        var streamed = new Dictionary<string, Tensor>();
        var r = GradientOrthogonality.Run(new MemorySource(m), tokens, [],
            (l, v) => { foreach (var (role, g) in v.Named()) streamed[$"{l}.{role}"] = g.clone().DetachFromDisposeScope(); },
            v => { foreach (var (role, g) in v.Named()) streamed[$"g.{role}"] = g.clone().DetachFromDisposeScope(); });
        Assert.Equal(plain.Keys.Order(), streamed.Keys.Order());
        double worst = 0, num = 0, den = 0;
        foreach (var (k, g) in plain)
        {
            double e = (streamed[k] - g).norm().item<double>(), n = g.norm().item<double>();
            worst = Math.Max(worst, e / Math.Max(n, 1e-300));
            num += e * e;
            den += n * n;
        }
        double total = Math.Sqrt(num / den);
        output.WriteLine($"{t.Describe()}: loss {r.Loss:F6} (plain {plainLoss:F6}); whole gradient {total:E2}, worst tensor {worst:E2}");
        Assert.Equal(plainLoss, r.Loss, 12);
        Assert.True(total < 1e-13, $"{total:E2}");
        Assert.True(worst < 1e-12, $"{worst:E2}");
        Assert.Equal(Math.Sqrt(den), r.GradientNorm, 1e-12 * Math.Sqrt(den));
        foreach (var g in streamed.Values) g.Dispose();
    }

    /// <summary>The test's own GPT-2 tangents are orthogonal to ∇L on a checkpoint; the control is not.</summary>
    [Fact]
    public void GaugeTangentsAreOrthogonalAndTheControlIsNot()
    {
        using var ck = Checkpoint.Open(TestCheckpoints.Get("audit-tied", options: new MakeCheckpointOptions { Seed = 3 }));
        var tokens = Tokens(24, ck.Traits.Vocab, 5);
        string[] names = ["qk", "ln-gain", "writer-mean", "embedding-offset", "control"];
        var fams = names.Select(n => new TangentFamily(n, Enumerable.Range(0, 3).Select(k => (ITangent)new TestTangent(n, 10 * k + 1)).ToList())).ToList();
        var r = GradientOrthogonality.Run(new CheckpointSource(ck), tokens, fams);
        foreach (var f in r.Families) output.WriteLine($"{f.Name}: cosines {string.Join(", ", f.Cosines.Select(c => c.ToString("E2")))}");
        foreach (var f in r.Families.Where(f => f.Name != "control"))
            Assert.True(f.Max < GradientOrthogonality.Bound, $"{f.Name}: {f.Max:E2}");
        double control = r.Families.Single(f => f.Name == "control").Cosines.Min();
        // The gauge tangents sit at rounding (~1e-18 here); the control is 1e6 times above the 1e-12 bound.
        Assert.True(control > 1e-6, $"control {control:E2}");
    }

    /// <summary>Every provisional tangent (GPT-2 tied and untied, LLaMA family with biases and GQA) passes; the bound is 1e-12.</summary>
    [Theory]
    [InlineData("gpt2", false)]
    [InlineData("gpt2", true)]
    [InlineData("qwen2", true)]
    [InlineData("llama", false)]
    public void ProvisionalTangentsAreOrthogonal(string arch, bool untied)
    {
        var t = arch == "gpt2" ? RandomModel.Traits("gpt2", 2, 16, 4, null, null, 40, 23, 12, untied)
            : RandomModel.Traits(arch, 2, 16, 4, 2, 6, 24, 23, 12, untied);
        using var m = RandomModel.Build(t, 11);
        var fams = ProvisionalCatalog.For(t).Where(f => f.IsContinuous(t))
            .Select(f => new TangentFamily(f.Name, Enumerable.Range(0, 2).Select(k => f.Tangent!(t, k + 1)).ToList())).ToList();
        var r = GradientOrthogonality.Run(new MemorySource(m), Tokens(12, t.Vocab, 9), fams);
        Assert.Equal(RedundancyTable.For(t, ProvisionalCatalog.Rows).Rows.Count(x => x.Continuous), r.Families.Count);
        foreach (var f in r.Families)
        {
            output.WriteLine($"{t.Describe()} {f.Name}: {f.Max:E2}");
            Assert.True(f.Max < GradientOrthogonality.Bound, $"{f.Name}: {f.Max:E2}");
        }
    }

    [Fact]
    public void CliGradientPassesAndWritesJson()
    {
        string model = TestCheckpoints.Get("audit-untied", options: new MakeCheckpointOptions { Seed = 3, Untied = true });
        string json = Path.Combine(TestCheckpoints.NewTempDir("grad"), "g.json");
        var (code, stdout, stderr) = CliRunner.Run("audit", model, "--gradient", "--tokens", "5,17,3,96,40,2,11,80", "--tangents", "2", "--json", json);
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("PASSED", stdout);
        var o = JsonNode.Parse(File.ReadAllText(json))!.AsObject();
        Assert.Equal(8, (int)o["tokens"]!);
        var fams = o["families"]!.AsArray();
        Assert.Equal(14, fams.Count);   // every continuous GPT-2 family, tied and untied
        Assert.All(fams, f => Assert.True((double)f!["max_cosine"]! < 1e-12));
        Assert.True((bool)o["passed"]!);
    }

    [Fact]
    public void CliGradientBadInputs()
    {
        string model = TestCheckpoints.Get("audit-tied", options: new MakeCheckpointOptions { Seed = 3 });
        var (code, _, err) = CliRunner.Run("audit", model, "--gradient", "--tokens", "5,97");
        Assert.Equal(2, code);
        Assert.Contains("97", err);
        (code, _, err) = CliRunner.Run("audit", model, "--gradient", "--tokens", "5");
        Assert.Equal(2, code);
        Assert.Contains("at least 2 tokens", err);
        (code, _, err) = CliRunner.Run("audit", model, "--gradient", "--text", "a", "--text-file", "b");
        Assert.Equal(2, code);
        Assert.Contains("not --text and --text-file", err);
        (code, _, err) = CliRunner.Run("audit", model, "--gradient", "--text-file", "/nonexistent/text.txt");
        Assert.Equal(2, code);
        Assert.Contains("/nonexistent/text.txt", err);
        (code, _, err) = CliRunner.Run("audit", model, "--gradient", "--tokens", "1,2", "--tangents", "0");
        Assert.Equal(2, code);
        Assert.Contains("--tangents", err);
        (code, _, err) = CliRunner.Run("audit", model, "--nullity");
        Assert.Equal(2, code);
        Assert.Contains("MODEL", err);
        Assert.All(new[] { err }, e => Assert.Single(e.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }
}
