using System.Text.Json;
using GaugeTorch.Alignment;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using GaugeTorch.Tests.Symmetry;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Alignment;

/// <summary>
/// align, merge and interpolate through the CLI on B = g·A (g from the library's catalog via transform, every family
/// with both permutations and the residual permutation and sign): outputs compared tensor by tensor with A as stored,
/// functions compared with the independent float64 forward (<see cref="GaugeTorch.Tests.Gpt2.ReferenceGpt2"/>).
/// </summary>
public class AlignmentCliTests(ITestOutputHelper output)
{
    private const string Tokens = "3,17,42,5,88,13,61,2,9,70,33,1,96,50,24,7,19,80,44,12,65,30,8,91";

    /// <summary>max over stored tensors of ‖x − a‖/‖a‖.</summary>
    private static double MaxTensorDistance(string x, string a)
    {
        using var sx = SafeTensorStore.Open(x);
        using var sa = SafeTensorStore.Open(a);
        double max = 0;
        foreach (var e in sa.Entries)
        {
            using var ta = sa.Load(e.Name, ScalarType.Float64);
            using var tx = sx.Load(e.Name, ScalarType.Float64);
            max = Math.Max(max, (tx - ta).norm().item<double>() / ta.norm().item<double>());
        }
        return max;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AlignReturnsAAndKeepsBsFunction(bool untied)
    {
        string a = FamilyTests.Model(untied);
        string b = GaugeAlignmentTests.Transformed(untied, 21);
        string root = TestCheckpoints.NewTempDir("align-cli");
        string outDir = Path.Combine(root, "ab"), json = Path.Combine(root, "ab.json");
        var (code, _, err) = CliRunner.Run("align", a, b, "--out", outDir, "--json", json);
        Assert.True(code == 0, err);
        double before = MaxTensorDistance(b, a), after = MaxTensorDistance(outDir, a);
        double fn = CompleteCatalogTests.ReferenceError(b, outDir);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        double reported = doc.RootElement.GetProperty("distance").GetProperty("relative_after").GetDouble();
        output.WriteLine($"{(untied ? "untied" : "tied")}: max tensor distance to A {before:E2} -> {after:E2}; reported total {reported:E2}; independent forward: aligned vs B {fn:E2}");
        Assert.True(before > 0.1);
        Assert.True(after <= 1e-9, $"aligned B differs from A by {after:G3}");
        Assert.True(fn <= 1e-12, $"the aligned checkpoint's function differs from B's by {fn:G3}");
        Assert.True(reported <= 1e-9);
        Assert.Equal(3, doc.RootElement.GetProperty("parts").GetArrayLength());
    }

    [Fact]
    public void MergeOfAAndATransformedIsA()
    {
        string a = FamilyTests.Tied64;
        string b = GaugeAlignmentTests.Transformed(false, 22);
        string root = TestCheckpoints.NewTempDir("merge-cli");
        var (code, _, err) = CliRunner.Run("merge", a, b, "--out", Path.Combine(root, "m"), "--weights", "1,3");
        Assert.True(code == 0, err);
        (code, _, err) = CliRunner.Run("merge", a, b, "--out", Path.Combine(root, "naive"), "--no-align");
        Assert.True(code == 0, err);
        double merged = MaxTensorDistance(Path.Combine(root, "m"), a);
        double naive = CompleteCatalogTests.ReferenceError(a, Path.Combine(root, "naive"));
        double fn = CompleteCatalogTests.ReferenceError(a, Path.Combine(root, "m"));
        output.WriteLine($"merge A, g·A: max tensor distance to A {merged:E2}, function {fn:E2}; naive merge's function differs from A's by {naive:E2}");
        Assert.True(merged <= 1e-9, $"{merged:G3}");
        Assert.True(fn <= 1e-12);
        Assert.True(naive > 1e-2, $"the naive merge should not be A ({naive:G3})");
    }

    [Fact]
    public void InterpolateShowsNoAlignedBarrier()
    {
        string a = FamilyTests.Tied64;
        string b = GaugeAlignmentTests.Transformed(false, 23);
        string json = Path.Combine(TestCheckpoints.NewTempDir("interp-cli"), "i.json");
        string plot = Path.ChangeExtension(json, ".svg");
        var (code, _, err) = CliRunner.Run("interpolate", a, b, "--tokens", Tokens, "--steps", "4", "--json", json, "--plot", plot);
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var r = doc.RootElement;
        double naive = r.GetProperty("naive").GetProperty("barrier").GetDouble(), aligned = r.GetProperty("aligned").GetProperty("barrier").GetDouble();
        var curve = r.GetProperty("aligned").GetProperty("curve").EnumerateArray().Select(p => p.GetProperty("loss").GetDouble()).ToArray();
        double spread = curve.Max() - curve.Min();
        var naiveCurve = r.GetProperty("naive").GetProperty("curve").EnumerateArray().Select(p => p.GetProperty("loss").GetDouble()).ToArray();
        double apart = naiveCurve.Zip(curve).Max(p => Math.Abs(p.First - p.Second));
        output.WriteLine($"barrier naive {naive:E3}, aligned {aligned:E2}; aligned curve spread {spread:E2}; naive curve departs from it by up to {apart:E2}");
        Assert.Equal(5, curve.Length);
        Assert.True(aligned <= 1e-9, $"{aligned:G3}");
        Assert.True(spread <= 1e-9, $"the aligned curve is not flat: {spread:G3}");
        Assert.True(naive >= 0);
        Assert.True(apart > 1e-3, $"the naive curve departs from the aligned one by only {apart:G3}: the test cannot tell them apart");
        Assert.Contains("<polyline", File.ReadAllText(plot));
    }

    [Fact]
    public void AlignedMergeOfANoisyTransformedCopyIsCloseToTheNaiveMergeWithTheNoisyCopy()
    {
        string a = FamilyTests.Tied64;
        string root = TestCheckpoints.NewTempDir("noise");
        string noisy = Path.Combine(root, "a-noisy");
        using (var ck = Checkpoint.Open(a))
        using (var m = ModelWeights.Load(ck, ScalarType.Float64))
        {
            var gen = new TorchSharp.torch.Generator(99);
            var layers = m.Layers.Select(l => l.Map(x => x + randn(x.shape, ScalarType.Float64, generator: gen) * 0.01 * x.square().mean().sqrt())).ToList();
            var g = m.Globals.Map(x => x + randn(x.shape, ScalarType.Float64, generator: gen) * 0.01 * x.square().mean().sqrt());
            using var n = new ModelWeights(layers, g, m.Traits);
            ModelExport.Write(ck, n, noisy, DType.F64, new Dictionary<string, string>());
        }
        string b = Path.Combine(root, "b");
        var (code, _, err) = CliRunner.Run("transform", noisy, "--out", b, "--seed", "31");
        Assert.True(code == 0, err);
        foreach (var (name, args) in new[] { ("reference", new[] { a, noisy, "--no-align" }), ("aligned", new[] { a, b }), ("unaligned", new[] { a, b, "--no-align" }) })
        {
            (code, _, err) = CliRunner.Run(["merge", .. args, "--out", Path.Combine(root, name)]);
            Assert.True(code == 0, err);
        }
        double aligned = CompleteCatalogTests.ReferenceError(Path.Combine(root, "reference"), Path.Combine(root, "aligned"));
        double unaligned = CompleteCatalogTests.ReferenceError(Path.Combine(root, "reference"), Path.Combine(root, "unaligned"));
        double noise = CompleteCatalogTests.ReferenceError(a, noisy);
        output.WriteLine($"noise changes A's function by {noise:E2}; distance to the naive merge of A and A': aligned merge {aligned:E2}, unaligned {unaligned:E2}");
        Assert.True(aligned < 0.05 * unaligned, $"aligned {aligned:G3} vs unaligned {unaligned:G3}");
    }

    [Fact]
    public void MismatchedShapesAreRefusedNamingTheFirstDifference()
    {
        string root = TestCheckpoints.NewTempDir("mismatch");
        string other = TestCheckpoints.Get("align-d16", new Gpt2Config { NLayer = 2, NEmbd = 16, NHead = 4, NInner = 64, VocabSize = 97, NPositions = 32 });
        string outDir = Path.Combine(root, "o");
        foreach (var cmd in new[] { "align", "merge" })
        {
            var (code, _, err) = CliRunner.Run(cmd, FamilyTests.Tied64, other, "--out", outDir);
            Assert.Equal(2, code);
            Assert.Contains("hidden size d 32 vs 16", err);
            Assert.False(Directory.Exists(outDir));
        }
        var (c2, _, e2) = CliRunner.Run("interpolate", FamilyTests.Tied64, other, "--tokens", Tokens);
        Assert.Equal(2, c2);
        Assert.Contains("hidden size d 32 vs 16", e2);
        Assert.Empty(Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public void NonFiniteWeightsAreRefusedNamingFileAndTensor()
    {
        string clean = TestCheckpoints.Get("align-f32");
        string bad = DamagedCheckpoints.WithValue(clean, "h.1.mlp.c_fc.weight", 5, float.NaN);
        string root = TestCheckpoints.NewTempDir("nonfinite");
        string outDir = Path.Combine(root, "o");
        foreach (var args in new[] { new[] { "align", clean, bad, "--out", outDir }, ["merge", clean, bad, "--out", outDir], ["interpolate", clean, bad, "--tokens", Tokens] })
        {
            var (code, _, err) = CliRunner.Run(args);
            Assert.Equal(2, code);
            Assert.Contains("h.1.mlp.c_fc.weight", err);
            Assert.Contains("model.safetensors", err);
        }
        Assert.Empty(Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public void AlignWorksOnALlamaCheckpointThroughTheCli()
    {
        string a = GaugeTorch.Tests.Llama.LlamaFixtures.Get("f64");
        string root = TestCheckpoints.NewTempDir("align-llama");
        string b = Path.Combine(root, "b"), outDir = Path.Combine(root, "ab");
        var (code, _, err) = CliRunner.Run("transform", a, "--out", b, "--seed", "41");
        Assert.True(code == 0, err);
        (code, _, err) = CliRunner.Run("align", a, b, "--out", outDir);
        Assert.True(code == 0, err);
        double before = MaxTensorDistance(b, a), after = MaxTensorDistance(outDir, a);
        int[] tokens = [1, 5, 9, 33, 2, 60, 17, 4, 40, 12];
        double[] Centred(string dir)
        {
            using var st = SafeTensorStore.Open(dir);
            var y = new GaugeTorch.Tests.Llama.ReferenceLlama(dir, st).Logits(tokens);
            int v = y.Length / tokens.Length;
            for (int i = 0; i < tokens.Length; i++)
            {
                double m = 0;
                for (int j = 0; j < v; j++) m += y[i * v + j];
                for (int j = 0; j < v; j++) y[i * v + j] -= m / v;
            }
            return y;
        }
        double fn = GaugeTorch.Tests.Gpt2.ReferenceGpt2.RelativeError(Centred(outDir), Centred(b));
        output.WriteLine($"llama (untied, GQA) through transform + align: max tensor distance {before:E2} -> {after:E2}; independent forward: aligned vs B {fn:E2}");
        Assert.True(before > 0.1);
        Assert.True(after <= 1e-9, $"{after:G3}");
        Assert.True(fn <= 1e-12, $"{fn:G3}");
    }
}
