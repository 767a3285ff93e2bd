using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Evaluation;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Fixtures;
using GaugeTorch.Tests.Gpt2;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Symmetry;

/// <summary>
/// The families GAUGE.md §2 (family 11) and §2b (12–16) add, on tied and untied float64 fixtures: exact through the
/// streaming evaluator (which never forms a transformed embedding or head) and through <c>transform</c> checked by the
/// independent float64 reference (<see cref="ReferenceGpt2"/>); the lazy globals agree with the materialized ones;
/// <c>--residual-rotation</c> still folds while the residual-rotation family does not.
/// </summary>
public class CompleteCatalogTests(ITestOutputHelper output)
{
    private static readonly int[] Tokens = [3, 17, 42, 5, 88, 13, 61, 2, 9, 70, 33, 1, 96, 50, 24, 7, 19, 80];
    private static double Eps64 => InvarianceMetrics.EpsMach(ScalarType.Float64);

    public static TheoryData<string, bool> NewFamilies() => new()
    {
        { "residual-perm", false }, { "residual-perm", true },
        { "token-mean", true }, { "final-gain", true }, { "unembed-offset", true }, { "final-bias", true }, { "residual-rotation", true },
    };

    [Theory]
    [MemberData(nameof(NewFamilies))]
    public void NewFamilyIsExactThroughTheStreamingEvaluator(string family, bool untied)
    {
        using var ck = Checkpoint.Open(FamilyTests.Model(untied));
        var f = SymmetryCatalog.Parse(family, ck.Traits);
        var cases = InvarianceEvaluator.StandardCases(ck.Traits, f, perGroup: 3, seed: 17, controls: false);
        var run = InvarianceEvaluator.Run(ck, Tokens, ScalarType.Float64, cases);
        double max = run.Cases.Max(c => c.RelativeError);
        output.WriteLine($"{family} ({(untied ? "untied" : "tied")}): max {max:E2} = {max / Eps64:0.0} ε");
        Assert.Equal(3, run.Cases.Count);
        Assert.True(max <= 100 * Eps64, $"{family}: {max:G3}");
    }

    [Theory]
    [MemberData(nameof(NewFamilies))]
    public void NewFamilyIsExactThroughTransformAndTheIndependentForward(string family, bool untied)
    {
        string src = FamilyTests.Model(untied);
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("new-family"), "t");
        var (code, _, err) = CliRunner.Run("transform", src, "--out", outDir, "--families", family, "--seed", "3");
        Assert.True(code == 0, err);
        using (var a = Checkpoint.Open(src))
        using (var b = Checkpoint.Open(outDir))
        {
            Assert.Equal(a.Tied, b.Tied);
            Assert.Equal(family, b.Store.Metadata["gaugetorch_families"]);
            double moved = a.Store.Entries.Where(e => b.Store.Contains(e.Name))
                .Max(e => FamilyTests.RelChange(a.Store.Load(e.Name, ScalarType.Float64), b.Store.Load(e.Name, ScalarType.Float64)));
            Assert.True(moved > 1e-3, $"{family}: the export differs from the input by only {moved:G3}");
        }
        double e = ReferenceError(src, outDir);
        output.WriteLine($"{family} ({(untied ? "untied" : "tied")}) through transform: {e:E2} = {e / Eps64:0.0} ε");
        Assert.True(e <= 100 * Eps64, $"{family}: {e:G3}");
    }

    [Fact]
    public void ResidualRotationFlagFoldsWhileTheFamilyRotatesWithoutFolding()
    {
        string src = FamilyTests.Untied64;
        string root = TestCheckpoints.NewTempDir("rot-untied");
        var (code, _, err) = CliRunner.Run("transform", src, "--out", Path.Combine(root, "family"), "--families", "residual-rotation");
        Assert.True(code == 0, err);
        (code, _, err) = CliRunner.Run("transform", src, "--out", Path.Combine(root, "fold"), "--families", "paper", "--residual-rotation");
        Assert.True(code == 0, err);
        // Every family of the untied catalog (the unfolded rotation included), then the fold and its rotation.
        (code, _, err) = CliRunner.Run("transform", src, "--out", Path.Combine(root, "both"), "--residual-rotation", "--seed", "5");
        Assert.True(code == 0, err);
        using var input = Checkpoint.Open(src);
        using var family = Checkpoint.Open(Path.Combine(root, "family"));
        using var fold = Checkpoint.Open(Path.Combine(root, "fold"));
        using var g0 = input.Load(Gpt2Keys.Layer(0, "ln_1.weight"), ScalarType.Float64);
        using var gFamily = family.Load(Gpt2Keys.Layer(0, "ln_1.weight"), ScalarType.Float64);
        using var gFold = fold.Load(Gpt2Keys.Layer(0, "ln_1.weight"), ScalarType.Float64);
        Assert.True((gFamily == g0).all().item<bool>(), "the residual-rotation family must keep the norm gains");
        Assert.True(gFold.allclose(ones_like(gFold)), "--residual-rotation folds the norms");
        Assert.Equal("true", fold.Store.Metadata["gaugetorch_residual_rotation"]);
        Assert.Equal("false", family.Store.Metadata["gaugetorch_residual_rotation"]);
        foreach (var dir in new[] { "family", "fold", "both" })
        {
            double e = ReferenceError(src, Path.Combine(root, dir));
            Assert.True(e <= 100 * Eps64, $"{dir}: {e:G3}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LazyGlobalsAgreeWithTheMaterializedOnes(bool untied)
    {
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(FamilyTests.Model(untied));
        var t = ck.Traits;
        var g = ck.LoadGlobals(ScalarType.Float64);
        var withGlobals = SymmetryCatalog.For(t).Concat([GlobalOrthogonal.Instance]).ToList();
        using var element = new GroupElement(withGlobals, 8, 0, t);
        using var state = new GlobalState(g, t);
        var transform = element.SampleGlobals(g);
        Assert.True(transform.Actions.Count >= (untied ? 8 : 3));
        transform.Apply(state);
        var m = state.Materialize();
        var tok = tensor(Tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        var rows = m.Embed.index_select(0, tok) + m.Positions!.index_select(0, arange(Tokens.Length, dtype: ScalarType.Int64));
        Assert.True(FamilyTests.RelChange(rows, state.EmbedInput(tok, ScalarType.Float64)) < 1e-14);
        var y = randn([Tokens.Length, t.Hidden], ScalarType.Float64);
        Assert.True(FamilyTests.RelChange(matmul(y, m.HeadOrEmbed.t()), state.HeadOrEmbed.Project(y)) < 1e-13);
        var v = randn([t.Hidden], ScalarType.Float64);
        Assert.True(FamilyTests.RelChange(matmul(m.HeadOrEmbed, v), state.HeadOrEmbed.MatVec(v)) < 1e-13);
        var n = Forward.FinalNorm(y, m, t);
        Assert.True(FamilyTests.RelChange(matmul(n, m.HeadOrEmbed.t()), state.Logits(y)) < 1e-13);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void VerifyInvarianceJsonNamesEveryFamilyThatHolds(bool untied)
    {
        string src = FamilyTests.Model(untied);
        string json = Path.Combine(TestCheckpoints.NewTempDir("verify-names"), "v.json");
        var (code, stdout, err) = CliRunner.Run("verify-invariance", src, "--transforms", "1", "--json", json, "--tokens", "5,9,77,31,2,64,18,40");
        Assert.True(code == 0, stdout + err);
        var doc = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        var names = doc["families"]!.AsArray().Select(f => f!["name"]!.GetValue<string>()).ToList();
        using var ck = Checkpoint.Open(src);
        var expected = SymmetryCatalog.For(ck.Traits).Select(f => f.Name).Append("all-together")
            .Concat(["invalid:cross-head-mixing", "invalid:global-orthogonal", "invalid:mismatched-qk"]);
        Assert.Equal(expected, names);
        Assert.Equal(untied ? 17 : 12, SymmetryCatalog.For(ck.Traits).Count);
        foreach (var f in doc["families"]!.AsArray()) Assert.True(f!["passed"]!.GetValue<bool>(), f.ToJsonString());
    }

    [Fact]
    public void AnUntiedFamilyOnATiedCheckpointIsAnErrorThatSaysWhy()
    {
        var (code, _, err) = CliRunner.Run("verify-invariance", FamilyTests.Tied64, "--families", "final-gain", "--tokens", "5,9");
        Assert.Equal(2, code);
        Assert.Contains("final-gain", err);
        Assert.Contains("untied head", err);
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("tied-untied"), "t");
        (code, _, err) = CliRunner.Run("transform", FamilyTests.Tied64, "--out", outDir, "--families", "qk,token-mean");
        Assert.Equal(2, code);
        Assert.Contains("token-mean", err);
        Assert.False(Directory.Exists(outDir));
    }

    /// <summary>Relative error of the row-centred logits of two checkpoints under the independent reference forward.</summary>
    internal static double ReferenceError(string a, string b)
    {
        using var sa = SafeTensorStore.Open(a);
        using var sb = SafeTensorStore.Open(b);
        var ya = RowCentred(new ReferenceGpt2(a, sa).Logits(Tokens), Tokens.Length);
        var yb = RowCentred(new ReferenceGpt2(b, sb).Logits(Tokens), Tokens.Length);
        return ReferenceGpt2.RelativeError(yb, ya);
    }

    private static double[] RowCentred(double[] logits, int rows)
    {
        int v = logits.Length / rows;
        var r = (double[])logits.Clone();
        for (int i = 0; i < rows; i++)
        {
            double mean = 0;
            for (int j = 0; j < v; j++) mean += r[i * v + j];
            mean /= v;
            for (int j = 0; j < v; j++) r[i * v + j] -= mean;
        }
        return r;
    }
}
