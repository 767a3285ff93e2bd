using GaugeTorch.Evaluation;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.SafeTensors;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Fixtures;
using GaugeTorch.Tests.Llama;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Symmetry;

/// <summary>
/// The LLaMA family's catalog (GAUGE.md §6.2, §6.3) on tiny Llama / Qwen2 / Mistral fixtures (MHA, GQA, MQA, hd ≠ d/H,
/// Qwen2 q/k/v biases, Llama attention and MLP biases, tied, untied): every family alone and all together keeps the
/// row-centred logits within 100 ε in float64, every control moves them by at least 1e-3; each family's parts move the
/// weights and their inverses restore them; a transformed export is a standard checkpoint of the same architecture
/// whose logits, computed by the tests' own reference forward (<see cref="ReferenceLlama"/>), equal the input's.
/// </summary>
public class LlamaFamilyTests(ITestOutputHelper output)
{
    public static readonly string[] Every = ["qk-rope", "vo", "head-perm", "group-perm", "mlp-perm", "mlp-scale", "norm-gain"];
    public static readonly string[] Untied = ["final-gain", "unembed-offset", "residual-rotation"];

    public static TheoryData<string> Variants() => new() { "mha", "gqa", "mqa", "head-dim", "qwen2", "llama-bias", "tied", "untied", "llama3" };

    private static int[] Tokens(int vocab, int count = 16, int seed = 3)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
    }

    /// <summary>The names "all" must give for a LLaMA-family model (GAUGE.md §6.2; value-bias with Llama's attention_bias, which has an o_proj bias).</summary>
    internal static string[] ExpectedNames(ModelTraits t)
    {
        var names = Every.ToList();
        if (t.QkvBias && t.OutBias) names.Add("value-bias");
        if (t.Tied) names.Add("residual-signed-perm");
        else names.AddRange(Untied);
        return names.ToArray();
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void EveryFamilyPreservesLogitsAndEveryControlBreaksThem(string variant)
    {
        using var ck = Checkpoint.Open(LlamaFixtures.Get(variant));
        var t = ck.Traits;
        var families = SymmetryCatalog.For(t);
        Assert.Equal(ExpectedNames(t), families.Select(f => f.Name));
        string[] controls = ["invalid:non-commuting-rope", .. t.KvHeads > 1 ? ["invalid:cross-group-mixing"] : Array.Empty<string>(),
            "invalid:mismatched-qk", .. t.Tied ? ["invalid:tied-residual-rotation"] : Array.Empty<string>()];
        Assert.Equal(controls, SymmetryCatalog.ControlsFor(t).Select(c => c.Name));
        var cases = InvarianceEvaluator.StandardCases(t, families, perGroup: 2, seed: 5, controls: true);
        var run = InvarianceEvaluator.Run(ck, Tokens(t.Vocab), ScalarType.Float64, cases);
        double eps = InvarianceMetrics.EpsMach(ScalarType.Float64);
        foreach (var g in run.Cases.Where(c => c.Valid).GroupBy(c => c.Group))
        {
            double max = g.Max(c => c.RelativeError);
            output.WriteLine($"{variant} {g.Key}: max {max:E2} ({max / eps:0.0} ε)");
            Assert.True(max <= 100 * eps, $"{variant} {g.Key}: {max:G3} > 100 ε");
        }
        foreach (var c in controls)
        {
            var errs = run.Cases.Where(x => x.Group == c).Select(x => x.RelativeError).ToList();
            Assert.NotEmpty(errs);
            output.WriteLine($"{variant} {c}: min {errs.Min():E2} median {InvarianceMetrics.Quantile(errs, 0.5):E2}");
            Assert.True(errs.Min() >= 1e-3, $"{variant} {c}: {errs.Min():G3} < 1e-3");
        }
        Assert.Contains(run.Cases, c => c.Group == "all-together");
        Assert.True(InvarianceVerdict.AllPassed(InvarianceVerdict.Summarize(run)));
    }

    [Theory]
    [InlineData("gqa")]
    [InlineData("qwen2")]
    public void Float32ComputeStaysWithinFloat32Precision(string variant)
    {
        using var ck = Checkpoint.Open(LlamaFixtures.Get(variant));
        var cases = InvarianceEvaluator.StandardCases(ck.Traits, SymmetryCatalog.For(ck.Traits), perGroup: 1, seed: 2, controls: false);
        var run = InvarianceEvaluator.Run(ck, Tokens(ck.Traits.Vocab), ScalarType.Float32, cases);
        foreach (var c in run.Cases)
        {
            output.WriteLine($"{variant} {c.Group}: {c.RelativeError:E2} ({c.RelativeError / InvarianceMetrics.EpsMach(ScalarType.Float32):0.0} ε32)");
            Assert.True(c.RelativeError <= 1000 * InvarianceMetrics.EpsMach(ScalarType.Float32), $"{c.Group}: {c.RelativeError:G3}");
            Assert.Equal(1.0, c.Top1Agreement);
        }
    }

    /// <summary>(family, fixture) for every LLaMA family and control with a layer part.</summary>
    public static TheoryData<string, string> LayerParts() => new()
    {
        { "qk-rope", "qwen2" }, { "vo", "qwen2" }, { "head-perm", "gqa" }, { "group-perm", "mha" }, { "mlp-perm", "llama-bias" },
        { "mlp-scale", "llama-bias" }, { "norm-gain", "qwen2" }, { "value-bias", "llama-bias" }, { "residual-signed-perm", "tied" },
        { "residual-rotation", "gqa" }, { "invalid:non-commuting-rope", "gqa" }, { "invalid:cross-group-mixing", "gqa" },
        { "invalid:mismatched-qk", "qwen2" }, { "invalid:tied-residual-rotation", "tied" },
    };

    private static SymmetryFamily Holding(string name, ModelTraits t) =>
        SymmetryCatalog.Families.Concat(SymmetryCatalog.Controls).Single(f => f.Name == name && f.HoldsFor(t));

    [Theory]
    [MemberData(nameof(LayerParts))]
    public void EachLayerPartMovesTheWeightsAndItsInverseRestoresThem(string family, string variant)
    {
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(LlamaFixtures.Get(variant));
        var w = ck.LoadLayer(1, ScalarType.Float64);
        using var element = new GroupElement([Holding(family, ck.Traits)], seed: 9, stream: 0, ck.Traits);
        var transform = element.SampleLayer(1, w);
        var moved = transform.Apply(w, ck.Traits);
        double change = FamilyTests.MaxTensorChange(w, moved);
        Assert.True(change > 1e-3, $"{family} moved the weights by only {change:G3}");
        var back = transform.Inverse().Apply(moved, ck.Traits);
        double residual = FamilyTests.RelativeChange(w, back);
        Assert.True(residual < 1e-12, $"{family}: inverse leaves {residual:G3}");
    }

    [Theory]
    [InlineData("residual-signed-perm", "tied")]
    [InlineData("final-gain", "gqa")]
    [InlineData("unembed-offset", "gqa")]
    [InlineData("residual-rotation", "gqa")]
    [InlineData("invalid:tied-residual-rotation", "tied")]
    public void EachGlobalPartMovesTheGlobalsAndItsInverseRestoresThem(string family, string variant)
    {
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(LlamaFixtures.Get(variant));
        var g = ck.LoadGlobals(ScalarType.Float64);
        using var element = new GroupElement([Holding(family, ck.Traits)], seed: 4, stream: 0, ck.Traits);
        var transform = element.SampleGlobals(g);
        Assert.False(transform.IsIdentity);
        using var state = new GlobalState(g, ck.Traits);
        transform.Apply(state);
        var moved = state.Materialize();
        double change = moved.Named().Zip(g.Named()).Max(p => FamilyTests.RelChange(p.Second.Tensor, p.First.Tensor));
        Assert.True(change > 1e-3, $"{family} moved the globals by only {change:G3}");
        using var back = new GlobalState(moved, ck.Traits);
        transform.Inverse().Apply(back);
        var restored = back.Materialize();
        foreach (var ((name, a), (_, b)) in g.Named().Zip(restored.Named()))
            Assert.True(FamilyTests.RelChange(a, b) < 1e-12, $"{family}: {name} restored to {FamilyTests.RelChange(a, b):G3}");
    }

    [Fact]
    public void QkRopeIsTheCommutantAndNotAGeneralBasisChange()
    {
        // Its query-side matrix, per plane, is a complex scalar: A = aI + bJ on (j, j + hd/2); the control's is not.
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(LlamaFixtures.Get("gqa"));
        var w = ck.LoadLayer(0, ScalarType.Float64);
        double Conformality(SymmetryFamily f)
        {
            using var e = new GroupElement([f], 1, 0, ck.Traits);
            var a = ((RopePlaneAction)e.SampleLayer(0, w).Actions[0]).A;             // [G, hd, hd]
            long h = ck.Traits.HeadDim / 2;
            var tl = a[.., ..(int)h, ..(int)h]; var tr = a[.., ..(int)h, (int)h..];
            var bl = a[.., (int)h.., ..(int)h]; var br = a[.., (int)h.., (int)h..];
            var offDiag = a.norm() - (tl.diagonal(dim1: -2, dim2: -1).square().sum() + tr.diagonal(dim1: -2, dim2: -1).square().sum()
                                     + bl.diagonal(dim1: -2, dim2: -1).square().sum() + br.diagonal(dim1: -2, dim2: -1).square().sum()).sqrt();
            return ((tl - br).norm() + (tr + bl).norm() + offDiag.abs()).item<double>() / a.norm().item<double>();
        }
        Assert.True(Conformality(QkRope.Instance) < 1e-14);
        Assert.True(Conformality(NonCommutingRope.Instance) > 1e-2);
        // The commutant is per-plane complex scalars only when the plane frequencies are distinct: they are, for the
        // default, linear and llama3 (Llama 3.2's) frequencies at every head_dim the fixtures and presets use.
        foreach (var spec in new[] { new RopeSpec(10000), new RopeSpec(10000, "linear", Factor: 4), Architectures.Llama.LlamaConfig.Llama3Scaling(500_000) })
            foreach (int hd in new[] { 8, 12, 16, 64, 128 })
            {
                var om = spec.InverseFrequencies(hd);
                for (int j = 1; j < om.Length; j++) Assert.True(om[j] < om[j - 1], $"{spec} hd={hd}: ω_{j} = {om[j]} is not below ω_{j - 1} = {om[j - 1]}");
            }
        Assert.Throws<ArgumentException>(() => SymmetryCatalog.Parse("qk", ck.Traits));
        Assert.Throws<ArgumentException>(() => SymmetryCatalog.Parse("ln-gain", ck.Traits));
        var e2 = Assert.Throws<ArgumentException>(() => SymmetryCatalog.Parse("residual-signed-perm", ck.Traits));
        Assert.Contains("tied", e2.Message);
    }

    private static ModelTraits Shape(string arch, int l, int d, int h, int g, int hd, int f, int v, bool tied, bool qkvBias = false) => new()
    {
        Architecture = arch, Layers = l, Hidden = d, QueryHeads = h, KvHeads = g, HeadDim = hd, Inner = f, Vocab = v, MaxPositions = 8,
        Norm = NormKind.RmsNorm, NormEps = 1e-6, Positions = PositionKind.Rotary, Rope = new RopeSpec(10000), Mlp = MlpKind.SwiGlu,
        QkvBias = qkvBias, OutBias = false, MlpBias = false, Tied = tied,
    };

    [Fact]
    public void DimensionsAreGaugeMdsCounts()
    {
        // GAUGE.md §6.2's table.
        Assert.Equal(359_424, SymmetryCatalog.Dimension(Shape("qwen2", 24, 896, 14, 2, 64, 4864, 151936, true, true)));
        Assert.Equal(729_088, SymmetryCatalog.Dimension(Shape("llama", 16, 2048, 32, 8, 64, 8192, 128256, true)));
        Assert.Equal(25_917_440, SymmetryCatalog.Dimension(Shape("llama", 32, 4096, 32, 32, 128, 11008, 32000, false)));
        Assert.Equal(13_342_720, SymmetryCatalog.Dimension(Shape("mistral", 32, 4096, 32, 8, 128, 14336, 32000, false)));
        // Its measured nullities.
        Assert.Equal(84, SymmetryCatalog.Dimension(Shape("llama", 1, 8, 4, 2, 2, 12, 11, false)));
        Assert.Equal(40, SymmetryCatalog.Dimension(Shape("llama", 1, 8, 4, 2, 2, 12, 11, true)));
        Assert.Equal(180, SymmetryCatalog.Dimension(Shape("qwen2", 2, 8, 4, 2, 4, 12, 13, false, true)));
        Assert.Equal(136, SymmetryCatalog.Dimension(Shape("qwen2", 2, 8, 4, 2, 4, 12, 13, true, true)));
    }

    /// <summary>Row-centred logits [T·V] of the tests' own reference forward.</summary>
    private static double[] ReferenceCentred(string dir, int[] tokens)
    {
        using var store = SafeTensorStore.Open(dir);
        var r = new ReferenceLlama(dir, store);
        var y = r.Logits(tokens);
        for (int t = 0; t < tokens.Length; t++)
        {
            double mean = 0;
            for (int v = 0; v < r.V; v++) mean += y[t * r.V + v];
            mean /= r.V;
            for (int v = 0; v < r.V; v++) y[t * r.V + v] -= mean;
        }
        return y;
    }

    [Theory]
    [InlineData("qwen2")]       // tied, q/k/v biases, GQA
    [InlineData("mqa")]         // mistral, untied, MQA
    [InlineData("head-dim")]    // untied, hd ≠ d/H
    [InlineData("llama-bias")]  // attention and MLP biases (value-bias)
    [InlineData("tied")]
    public void TransformedExportIsTheSameFunctionUnderTheReferenceForward(string variant)
    {
        string src = LlamaFixtures.Copy(variant, "tok");
        TestTokenizers.Write(src, TestTokenizers.Words(8));
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("llama-transform"), "t");
        var (code, _, err) = CliRunner.Run("transform", src, "--out", outDir, "--seed", "6", "--dtype", "float64");
        Assert.True(code == 0, err);
        using (var a = SafeTensorStore.Open(src))
        using (var b = SafeTensorStore.Open(outDir))
        {
            Assert.Equal(a.Entries.Select(e => e.Name).Order(), b.Entries.Select(e => e.Name).Order());   // a tied input stays tied (no lm_head added)
            Assert.All(b.Entries, e => Assert.Equal(DType.F64, e.DType));
            Assert.Equal("random gauge element", b.Metadata["gaugetorch_transform"]);
            Assert.StartsWith("gaugetorch", b.Metadata["gaugetorch_version"]);
            using var ck = Checkpoint.Open(src);
            Assert.Equal(string.Join(",", ExpectedNames(ck.Traits)), b.Metadata["gaugetorch_families"]);
        }
        Assert.Equal(File.ReadAllText(Path.Combine(src, "config.json")), File.ReadAllText(Path.Combine(outDir, "config.json")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(src, "tokenizer.json")), File.ReadAllBytes(Path.Combine(outDir, "tokenizer.json")));
        using (var ca = Checkpoint.Open(src))
        using (var cb = Checkpoint.Open(outDir))
        {
            Assert.Equal(ca.Tied, cb.Tied);
            Assert.Equal(ca.Traits, cb.Traits);
        }
        var tokens = Tokens(61, 12, 9);
        var ya = ReferenceCentred(src, tokens);
        var yb = ReferenceCentred(outDir, tokens);
        double rel = Gpt2.ReferenceGpt2.RelativeError(yb, ya);
        double changed = FamilyTests.RelChange(LoadAll(src), LoadAll(outDir));
        output.WriteLine($"{variant}: reference-forward relative error {rel:E2} ({rel / InvarianceMetrics.EpsMach(ScalarType.Float64):0.0} ε); weights moved by {changed:E2}");
        Assert.True(changed > 1e-2, $"the export's weights moved by only {changed:G3}");
        Assert.True(rel <= 100 * InvarianceMetrics.EpsMach(ScalarType.Float64), $"{variant}: {rel:G3}");
    }

    [Theory]
    [InlineData("qwen2")]
    [InlineData("mqa")]
    public void VerifyInvarianceCommandNamesTheLlamaFamiliesInItsJson(string variant)
    {
        string dir = LlamaFixtures.Get(variant);
        using var ck = Checkpoint.Open(dir);
        var (code, stdout, err) = CliRunner.Run("verify-invariance", dir, "--tokens", "3,17,42,5,8,13,21,2", "--transforms", "2", "--json", "-");
        Assert.True(code == 0, err);
        var json = System.Text.Json.Nodes.JsonNode.Parse(stdout)!;
        var names = json["families"]!.AsArray().Select(f => f!["name"]!.GetValue<string>()).ToList();
        var controls = SymmetryCatalog.ControlsFor(ck.Traits).Select(c => c.Name);
        Assert.Equal(ExpectedNames(ck.Traits).Append("all-together").Concat(controls), names);
        Assert.All(json["families"]!.AsArray(), f => Assert.True(f!["passed"]!.GetValue<bool>()));
        // A family list, and a GPT-2 family that does not hold, by name.
        (code, stdout, err) = CliRunner.Run("verify-invariance", dir, "--tokens", "3,17,42,5", "--transforms", "1", "--families", "qk-rope,mlp-scale", "--no-controls", "--json", "-");
        Assert.True(code == 0, err);
        names = System.Text.Json.Nodes.JsonNode.Parse(stdout)!["families"]!.AsArray().Select(f => f!["name"]!.GetValue<string>()).ToList();
        Assert.Equal(["qk-rope", "mlp-scale", "all-together"], names);
        (code, _, err) = CliRunner.Run("verify-invariance", dir, "--tokens", "3,17", "--families", "qk");
        Assert.Equal(2, code);
        Assert.Contains("'qk' does not hold", err);
        Assert.Contains("rotary", err);
    }

    private static Tensor LoadAll(string dir)
    {
        using var store = SafeTensorStore.Open(dir);
        return cat(store.Entries.OrderBy(e => e.Name).Select(e => store.Load(e.Name, ScalarType.Float64).reshape(-1)).ToArray());
    }
}
