using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Canonical.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Llama;

/// <summary>
/// The LLaMA-family canonical form against the independent test gauge (<see cref="TestLlamaGauge"/>): on MHA, GQA,
/// MQA, hd ≠ d/H, Qwen2 biases, Llama attention and MLP biases, tied, untied, llama3 scaling and F64 fixtures, the
/// function is preserved to 100 ε_F64, the form is idempotent to 1e-12 and unique on the orbit (two random composed
/// elements of every family) to 1e-9. Then the command: compare exits 0 on a checkpoint and its transform and 1 with
/// 1e-3 noise on one head; canonicalizing a canonical F32 or BF16 export reproduces its bytes; exports are standard
/// checkpoints of the same architecture.
/// </summary>
public class LlamaCanonicalTests(ITestOutputHelper output)
{
    private const double Eps = 2.220446049250313e-16;

    private static Dictionary<string, Tensor> LoadAll(Checkpoint ck) =>
        ck.Store.Entries.Where(e => !ck.Architecture.IsIgnoredBuffer(e.Name)).ToDictionary(e => e.Name, e => ck.Store.Load(e.Name, ScalarType.Float64), StringComparer.Ordinal);

    private static TestLlamaGauge.Shape ShapeOf(ModelTraits t) =>
        new(t.Layers, t.Hidden, t.QueryHeads, t.KvHeads, t.HeadDim, t.Inner, t.Tied, t.QkvBias, t.OutBias, t.MlpBias);

    private static Dictionary<string, Tensor> Canonicalize(Checkpoint ck, Dictionary<string, Tensor> w, LlamaCanonicalReport? report = null)
    {
        var arch = ck.Architecture;
        var t = ck.Traits;
        var p = LlamaCanonicalPrecision.Float64;
        var (g, frame) = LlamaCanonicalForm.Globals(arch.GlobalsToView(n => w[n], t.Tied), t, p, report?.Frame ?? new LlamaFrameReport());
        var o = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (n, x) in arch.GlobalsFromView(g)) o[n] = x.to_type(ScalarType.Float64);
        if (w.ContainsKey(arch.HeadName) && t.Tied) o[arch.HeadName] = o[arch.EmbeddingName];
        for (int l = 0; l < t.Layers; l++)
        {
            var r = new LlamaLayerReport { Layer = l };
            var c = LlamaCanonicalForm.Layer(arch.ToView(l, n => w[n]), t, frame, p, r);
            report?.Layers.Add(r);
            foreach (var (n, x) in arch.FromView(l, c)) o[n] = x.contiguous();
        }
        return o;
    }

    private static Tensor Logits(Checkpoint ck, Dictionary<string, Tensor> w, int[] tokens)
    {
        var arch = ck.Architecture;
        var t = ck.Traits;
        var layers = Enumerable.Range(0, t.Layers).Select(l => arch.ToView(l, n => w[n])).ToList();
        var g = arch.GlobalsToView(n => w[n], t.Tied);
        return Forward.RowCentre(Forward.Logits(tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64), layers, g, t));
    }

    private static double RelLogits(Tensor a, Tensor b) => (a - b).norm().item<double>() / a.norm().item<double>();

    private static double MaxRel(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b, out string where)
    {
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        double worst = 0;
        where = "";
        foreach (var k in a.Keys)
        {
            double r = LlamaCanonicalForm.Rel(a[k], b[k]);
            if (r > worst) { worst = r; where = k; }
        }
        return worst;
    }

    private static int[] Tokens(int vocab, int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
    }

    [Theory]
    [InlineData("mha")]
    [InlineData("gqa")]
    [InlineData("mqa")]
    [InlineData("head-dim")]
    [InlineData("qwen2")]
    [InlineData("llama-bias")]
    [InlineData("tied")]
    [InlineData("tied-copy")]
    [InlineData("llama3")]
    [InlineData("f64")]
    public void CanonicalFormPreservesTheFunctionIsIdempotentAndUniqueOnTheOrbit(string fixture)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(LlamaFixtures.Get(fixture));
        var t = ck.Traits;
        var w = LoadAll(ck);
        var tokens = Tokens(t.Vocab, 24, 5);
        var y = Logits(ck, w, tokens);

        // The test gauge is exact and moves the weights (else the orbit check would prove nothing).
        var g1 = TestLlamaGauge.Transform(w, ShapeOf(t), 1);
        var g2 = TestLlamaGauge.Transform(w, ShapeOf(t), 2);
        double gaugeError = Math.Max(RelLogits(y, Logits(ck, g1, tokens)), RelLogits(y, Logits(ck, g2, tokens)));
        double moved = LlamaCanonicalForm.Rel(w["model.layers.0.self_attn.q_proj.weight"], g1["model.layers.0.self_attn.q_proj.weight"]);
        Assert.True(gaugeError <= 100 * Eps, $"{fixture}: the test gauge changes the logits by {gaugeError:E2}");
        Assert.True(moved > 0.1, $"{fixture}: the test gauge moved q_proj by only {moved:E2}");

        var report = new LlamaCanonicalReport();
        var c = Canonicalize(ck, w, report);
        double function = RelLogits(y, Logits(ck, c, tokens));
        double idem = MaxRel(c, Canonicalize(ck, c), out string idemWhere);
        double orbit1 = MaxRel(c, Canonicalize(ck, g1), out string o1);
        double orbit2 = MaxRel(c, Canonicalize(ck, g2), out string o2);
        double orbit = Math.Max(orbit1, orbit2);
        double movedByForm = LlamaCanonicalForm.Rel(w["model.layers.0.self_attn.q_proj.weight"], c["model.layers.0.self_attn.q_proj.weight"]);
        output.WriteLine($"{fixture} ({t.Describe()}{(t.QkvBias ? " qkv-bias" : "")}{(t.OutBias ? " o-bias" : "")}{(t.MlpBias ? " mlp-bias" : "")}): " +
                         $"test gauge {gaugeError:E2}; function {function:E2} ({function / Eps:F1} ε); idempotence {idem:E2} ({idemWhere}); orbit {orbit:E2} ({(orbit1 >= orbit2 ? o1 : o2)}); near-ties {report.NearTies}");
        Assert.True(movedByForm > 0.01, $"{fixture}: the form left q_proj nearly unchanged ({movedByForm:E2})");
        Assert.True(function <= 100 * Eps, $"{fixture}: function {function:E2} > 100 ε");
        Assert.True(idem <= 1e-12, $"{fixture}: idempotence {idem:E2} at {idemWhere}");
        Assert.True(orbit <= 1e-9, $"{fixture}: orbit uniqueness {orbit:E2} at {(orbit1 >= orbit2 ? o1 : o2)}");
        Assert.True(report.Clean, $"{fixture}: {report.NearTies} near-ties on a generic random checkpoint");
        // Canonical conditions: gains 1 (g_f kept when tied), SwiGLU balanced.
        Assert.True(c["model.layers.0.input_layernorm.weight"].eq(1).all().item<bool>());
        var upN = linalg.vector_norm(c["model.layers.0.mlp.up_proj.weight"], dims: [1]);
        var downN = linalg.vector_norm(c["model.layers.0.mlp.down_proj.weight"], dims: [0]);
        if (!t.MlpBias) Assert.True(((upN - downN).abs() / downN).max().item<double>() < 1e-12);
    }

    [Fact]
    public void ATestGaugeWithAWrongQkElementBreaksTheOrbitCheck()
    {
        // Control: a general 2×2 map on one query plane (not a complex scalar) with its inverse transpose on the key
        // changes the function, and the canonical forms then differ by far more than the orbit bound.
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(LlamaFixtures.Get("gqa"));
        var w = LoadAll(ck);
        var bad = w.ToDictionary(p => p.Key, p => p.Value.clone());
        int hd = ck.Traits.HeadDim, half = hd / 2;
        var a = eye(hd, dtype: ScalarType.Float64);
        a[0, 0] = tensor(2.0, ScalarType.Float64);   // diag(2, 1) on plane 0: not of the form aI + bJ
        var ainvT = linalg.inv(a).t();
        string q = "model.layers.0.self_attn.q_proj.weight", k = "model.layers.0.self_attn.k_proj.weight";
        bad[q] = cat([matmul(a, bad[q].narrow(0, 0, hd)), bad[q].narrow(0, hd, bad[q].shape[0] - hd)], 0);
        int perGroup = ck.Traits.GroupSize;
        for (int i = 1; i < perGroup; i++)
            bad[q] = cat([bad[q].narrow(0, 0, i * hd), matmul(a, bad[q].narrow(0, i * hd, hd)), bad[q].narrow(0, (i + 1) * hd, bad[q].shape[0] - (i + 1) * hd)], 0);
        bad[k] = cat([matmul(ainvT, bad[k].narrow(0, 0, hd)), bad[k].narrow(0, hd, bad[k].shape[0] - hd)], 0);
        double orbit = MaxRel(Canonicalize(ck, w), Canonicalize(ck, bad), out string where);
        Assert.True(orbit > 1e-3, $"a non-commuting QK map gives canonical forms only {orbit:E2} apart ({where}, plane size {half})");
    }

    // ---------------------------------------------------------------- the commands

    private static string WriteCheckpoint(string like, Dictionary<string, Tensor> w, DType dtype, string hint)
    {
        string dir = TestCheckpoints.NewTempDir(hint);
        File.Copy(Path.Combine(like, "config.json"), Path.Combine(dir, "config.json"));
        var list = w.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => KeyValuePair.Create(p.Key, p.Value.to_type(dtype.ToScalarType()))).ToList();
        SafeTensorWriter.WriteAll(Path.Combine(dir, SafeTensorStore.SingleFileName), list, new Dictionary<string, string> { ["format"] = "pt" });
        return dir;
    }

    [Theory]
    [InlineData("gqa")]
    [InlineData("qwen2")]
    [InlineData("mqa")]
    public void CompareExitsZeroOnATransformAndOneWithNoiseOnOneHead(string fixture)
    {
        using var _ = no_grad();
        string src = LlamaFixtures.Get(fixture);
        Dictionary<string, Tensor> w, g;
        TestLlamaGauge.Shape shape;
        using (var ck = Checkpoint.Open(src))
        {
            w = LoadAll(ck);
            shape = ShapeOf(ck.Traits);
            g = TestLlamaGauge.Transform(w, shape, 3);
        }
        string transformed = WriteCheckpoint(src, g, DType.F32, "llcanon-g");
        var ok = CliRunner.Run("compare", src, transformed, "--json", "-");
        var j = JsonNode.Parse(ok.Out)!;
        output.WriteLine($"{fixture}: equivalent exit {ok.Code}, largest {j["largest"]} tolerance {j["tolerance"]}, function {j["function_distance"]} tolerance {j["function_tolerance"]}");
        Assert.True(ok.Code == 0, $"{fixture}: compare of a transform exited {ok.Code}: {ok.Out}{ok.Err}");
        Assert.True((bool)j["equivalent"]!);

        // 1e-3 relative noise on query head 1 of layer 1.
        var noisy = g.ToDictionary(p => p.Key, p => p.Value.clone());
        string q = "model.layers.1.self_attn.q_proj.weight";
        var head = noisy[q].narrow(0, shape.Hd, shape.Hd);
        var gen = new Generator(99);
        var noise = randn(head.shape, ScalarType.Float64, generator: gen) * head.square().mean().sqrt() * 1e-3;
        noisy[q] = cat([noisy[q].narrow(0, 0, shape.Hd), head + noise, noisy[q].narrow(0, 2 * shape.Hd, noisy[q].shape[0] - 2 * shape.Hd)], 0);
        string bad = WriteCheckpoint(src, noisy, DType.F32, "llcanon-noisy");
        var no = CliRunner.Run("compare", src, bad, "--json", "-");
        var jn = JsonNode.Parse(no.Out)!;
        output.WriteLine($"{fixture}: noisy exit {no.Code}, largest {jn["largest"]} at {jn["largest_where"]}, tolerance {jn["tolerance"]}, function {jn["function_distance"]}");
        Assert.True(no.Code == 1, $"{fixture}: compare with a noisy head exited {no.Code}: {no.Err}");
        Assert.Contains("layer 1", (string)jn["largest_where"]!);
    }

    [Theory]
    [InlineData("gqa", false)]
    [InlineData("qwen2", false)]
    [InlineData("bf16", false)]
    [InlineData("bf16-tied", true)]
    [InlineData("inv-freq", false)]
    [InlineData("tied-copy", false)]
    [InlineData("sharded", false)]
    [InlineData("f16", false)]
    public void CanonicalizingACanonicalExportReproducesItsBytes(string fixture, bool custom)
    {
        string src = custom
            ? LlamaFixtures.Get(fixture, LlamaFixtures.Tiny with { TieWordEmbeddings = true }, new LlamaMakeOptions { Seed = 31, DType = DType.BF16 })
            : LlamaFixtures.Get(fixture);
        string root = TestCheckpoints.NewTempDir("llcanon-bytes");
        string c1 = Path.Combine(root, "c1"), c2 = Path.Combine(root, "c2");
        var r1 = CliRunner.Run("canonicalize-checkpoint", src, "--out", c1, "--json", "-");
        Assert.True(r1.Code == 0, r1.Err);
        var j = JsonNode.Parse(r1.Out)!;
        var r2 = CliRunner.Run("canonicalize-checkpoint", c1, "--out", c2, "--json", "-");
        Assert.True(r2.Code == 0, r2.Err);
        var j2 = JsonNode.Parse(r2.Out)!;
        output.WriteLine($"{fixture}: storage logits error {j["logits_error_storage"]} ({j["logits_error_storage_eps"]} ε), second pass kept {j2["kept_layers"]} layers, frame kept {j2["residual_frame"]!["kept"]}");
        Assert.True((double)j["logits_error_storage"]! < 1e-2 && (double)j["logits_error_storage"]! > 0 || (string)j["dtype"]! == "F64");
        Assert.True(File.ReadAllBytes(Path.Combine(c1, "model.safetensors")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(c2, "model.safetensors"))),
            $"{fixture}: the canonical export's canonical form has different bytes (kept {j2["kept_layers"]} layers)");

        // A standard checkpoint of the same architecture: same names and tying, config and side files copied, metadata.
        using var a = Checkpoint.Open(src);
        using var b = Checkpoint.Open(c1);
        Assert.Equal(a.Traits, b.Traits);
        Assert.Equal(a.HasHeadTensor, b.HasHeadTensor);
        Assert.Equal(a.Store.Entries.Select(e => e.Name).OrderBy(x => x), b.Store.Entries.Select(e => e.Name).OrderBy(x => x));
        Assert.Equal(File.ReadAllText(Path.Combine(src, "config.json")).Length > 0, File.Exists(Path.Combine(c1, "config.json")));
        var meta = b.Store.Metadata;
        Assert.Equal("gaugetorch canonicalize-checkpoint", meta["generator"]);
        Assert.Equal("full", meta["gaugetorch.form"]);
        foreach (var buf in a.IgnoredBuffers)
            Assert.True(a.Store.ReadBytes(buf).AsSpan().SequenceEqual(b.Store.ReadBytes(buf)), $"buffer {buf} not copied byte for byte");
    }

    [Fact]
    public void PaperFormIsRefusedForLlamaCheckpoints()
    {
        string dir = TestCheckpoints.NewTempDir("llcanon-paper");
        var r = CliRunner.Run("canonicalize-checkpoint", LlamaFixtures.Get("gqa"), "--out", Path.Combine(dir, "o"), "--form", "paper");
        Assert.Equal(2, r.Code);
        Assert.Contains("--form", r.Err);
        Assert.False(Directory.Exists(Path.Combine(dir, "o")));
    }

    [Fact]
    public void CompareRefusesDifferentArchitectures()
    {
        var r = CliRunner.Run("compare", LlamaFixtures.Get("gqa"), LlamaFixtures.Get("mha"));
        Assert.Equal(2, r.Code);
        Assert.Contains("not comparable", r.Err);
        var r2 = CliRunner.Run("compare", LlamaFixtures.Get("gqa"), TestCheckpoints.Get("tiny"));
        Assert.Equal(2, r2.Code);
        Assert.Contains("not comparable", r2.Err);
    }
}
