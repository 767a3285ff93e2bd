using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Evaluation;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Fixtures;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Symmetry;

/// <summary>
/// The catalog on tiny float64 GPT-2 fixtures, tied and untied: every family that holds preserves the logits through
/// the streaming evaluator (alone and composed) while every control breaks them; each family's layer and global
/// parts move the weights and their inverses restore them; sampling is deterministic; "all" is every family that
/// holds; the dimension formulas give GAUGE.md's counts.
/// </summary>
public class FamilyTests(ITestOutputHelper output)
{
    private static readonly int[] Tokens = [3, 17, 42, 5, 88, 13, 61, 2, 9, 70, 33, 1, 96, 50, 24, 7];

    internal static string Tied64 => TestCheckpoints.Get("gauge-f64", null, new MakeCheckpointOptions { Seed = 11, DType = DType.F64 });
    internal static string Untied64 => TestCheckpoints.Get("gauge-f64-untied", null, new MakeCheckpointOptions { Seed = 13, DType = DType.F64, Untied = true });
    internal static string Model(bool untied) => untied ? Untied64 : Tied64;

    private static readonly string[] UntiedOnly = ["token-mean", "final-gain", "unembed-offset", "final-bias", "residual-rotation"];

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EveryFamilyAloneAndComposedPreservesLogitsAndEveryControlBreaksThem(bool untied)
    {
        using var ck = Checkpoint.Open(Model(untied));
        var families = SymmetryCatalog.For(ck.Traits);
        var cases = InvarianceEvaluator.StandardCases(ck.Traits, families, perGroup: 2, seed: 5, controls: true);
        var run = InvarianceEvaluator.Run(ck, Tokens, ScalarType.Float64, cases);
        double eps = InvarianceMetrics.EpsMach(ScalarType.Float64);
        foreach (var f in families)
            Assert.Contains(run.Cases, c => c.Group == f.Name);
        foreach (var name in UntiedOnly)
            Assert.Equal(untied, run.Cases.Any(c => c.Group == name));
        Assert.Contains(run.Cases, c => c.Group == "residual-perm");
        Assert.Contains(run.Cases, c => c.Group == "all-together");
        foreach (var g in run.Cases.Where(c => c.Valid).GroupBy(c => c.Group))
        {
            double max = g.Max(c => c.RelativeError);
            output.WriteLine($"{(untied ? "untied" : "tied")} {g.Key}: max {max:E2} ({max / eps:0.0} ε)");
            Assert.True(max <= 100 * eps, $"{g.Key}: {max:G3} > 100 ε");
        }
        foreach (var ctl in SymmetryCatalog.ControlsFor(ck.Traits))
        {
            var errs = run.Cases.Where(c => c.Group == ctl.Name).Select(c => c.RelativeError).ToList();
            Assert.NotEmpty(errs);
            Assert.True(errs.Min() >= 1e-3, $"{ctl}: {errs.Min():G3} < 1e-3");
        }
        Assert.True(InvarianceVerdict.AllPassed(InvarianceVerdict.Summarize(run)));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Float32ComputeStaysWithinFloat32Precision(bool untied)
    {
        string dir = untied
            ? TestCheckpoints.Get("gauge-f32-untied", null, new MakeCheckpointOptions { Seed = 2, Untied = true })
            : TestCheckpoints.Get("gauge-f32");
        using var ck = Checkpoint.Open(dir);
        var cases = InvarianceEvaluator.StandardCases(ck.Traits, SymmetryCatalog.For(ck.Traits), perGroup: 1, seed: 2, controls: false);
        var run = InvarianceEvaluator.Run(ck, Tokens, ScalarType.Float32, cases);
        foreach (var c in run.Cases)
        {
            Assert.True(c.RelativeError <= 1000 * InvarianceMetrics.EpsMach(ScalarType.Float32), $"{c.Group}: {c.RelativeError:G3}");
            Assert.Equal(1.0, c.Top1Agreement);
        }
    }

    /// <summary>Families with a layer part, and whether the fixture must be untied for them to hold.</summary>
    public static TheoryData<string, bool> LayerFamilies() => new()
    {
        { "qk", false }, { "vo", false }, { "head-perm", false }, { "mlp-perm", false }, { "key-bias", false },
        { "value-bias", false }, { "ln-gain", false }, { "ln-bias", false }, { "reader-mean", false }, { "writer-mean", false },
        { "residual-perm", false }, { "residual-rotation", true },
        { "invalid:cross-head-mixing", false }, { "invalid:global-orthogonal", false }, { "invalid:mismatched-qk", false },
    };

    /// <summary>The GPT-2 entry of a name (a name may also be used by a LLaMA-family entry with a disjoint predicate).</summary>
    internal static SymmetryFamily ByName(string name)
    {
        using var ck = Checkpoint.Open(Tied64);
        var named = SymmetryCatalog.Families.Concat(SymmetryCatalog.Controls).Where(f => f.Name == name).ToList();
        return named.Count == 1 ? named[0] : named.Single(f => f.HoldsFor(ck.Traits));
    }

    [Theory]
    [MemberData(nameof(LayerFamilies))]
    public void EachLayerFamilyMovesParametersAndItsInverseRestoresThem(string family, bool untied)
    {
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(Model(untied));
        var w = ck.LoadLayer(1, ScalarType.Float64);
        using var element = new GroupElement([ByName(family)], seed: 9, stream: 0, ck.Traits);
        var transform = element.SampleLayer(1, w);
        var moved = transform.Apply(w, ck.Traits);
        double change = MaxTensorChange(w, moved);
        Assert.True(change > 1e-3, $"{family} moved the parameters by only {change:G3}");
        var back = transform.Inverse().Apply(moved, ck.Traits);
        double residual = RelativeChange(w, back);
        Assert.True(residual < 1e-12, $"{family}: inverse leaves {residual:G3}");
    }

    public static TheoryData<string, bool> GlobalFamilies() => new()
    {
        { "embedding-offset", false }, { "embedding-offset", true }, { "residual-perm", false }, { "residual-perm", true },
        { "token-mean", true }, { "final-gain", true }, { "unembed-offset", true }, { "final-bias", true }, { "residual-rotation", true },
        { "invalid:global-orthogonal", false },
    };

    [Theory]
    [MemberData(nameof(GlobalFamilies))]
    public void EachGlobalFamilyMovesTheGlobalsAndItsInverseRestoresThem(string family, bool untied)
    {
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(Model(untied));
        var g = ck.LoadGlobals(ScalarType.Float64);
        using var element = new GroupElement([ByName(family)], seed: 4, stream: 0, ck.Traits);
        var transform = element.SampleGlobals(g);
        Assert.False(transform.IsIdentity);
        using var state = new GlobalState(g, ck.Traits);
        transform.Apply(state);
        var moved = state.Materialize();
        double change = moved.Named().Zip(g.Named()).Max(p => RelChange(p.Second.Tensor, p.First.Tensor));
        Assert.True(change > 1e-3, $"{family} moved the globals by only {change:G3}");
        using var back = new GlobalState(moved, ck.Traits);
        transform.Inverse().Apply(back);
        var restored = back.Materialize();
        foreach (var ((name, a), (_, b)) in g.Named().Zip(restored.Named()))
            Assert.True(RelChange(a, b) < 1e-12, $"{family}: {name} restored to {RelChange(a, b):G3}");
    }

    [Fact]
    public void SameSeedSameElementDifferentSeedDifferentElement()
    {
        using var scope = NewDisposeScope();
        using var ck = Checkpoint.Open(Untied64);
        var w = ck.LoadLayer(0, ScalarType.Float64);
        var all = SymmetryCatalog.For(ck.Traits);
        LayerView Draw(long seed)
        {
            using var e = new GroupElement(all, seed, 0, ck.Traits);
            return e.SampleLayer(0, w).Apply(w, ck.Traits);
        }
        var a = Draw(21);
        var b = Draw(21);
        var c = Draw(22);
        Assert.Equal(0.0, RelativeChange(a, b));
        Assert.True(RelativeChange(a, c) > 1e-3);
    }

    [Fact]
    public void AllMeansEveryFamilyThatHoldsAndTheListParses()
    {
        using var tied = Checkpoint.Open(Tied64);
        using var untied = Checkpoint.Open(Untied64);
        string[] tiedNames = ["qk", "vo", "head-perm", "mlp-perm", "key-bias", "value-bias", "ln-gain", "ln-bias", "reader-mean", "writer-mean", "embedding-offset", "residual-perm"];
        Assert.Equal(tiedNames, SymmetryCatalog.Parse("all", tied.Traits).Select(f => f.Name));
        Assert.Equal(tiedNames.Concat(UntiedOnly), SymmetryCatalog.Parse("all", untied.Traits).Select(f => f.Name));
        Assert.Equal(["qk", "vo", "head-perm", "mlp-perm"], SymmetryCatalog.Parse("paper", tied.Traits).Select(f => f.Name));
        Assert.Equal(["qk", "writer-mean", "final-bias"], SymmetryCatalog.Parse("final-bias, writer-mean,qk", untied.Traits).Select(f => f.Name));
        Assert.Equal(["invalid:cross-head-mixing", "invalid:global-orthogonal", "invalid:mismatched-qk"], SymmetryCatalog.ControlsFor(tied.Traits).Select(f => f.Name));
        var e = Assert.Throws<ArgumentException>(() => SymmetryCatalog.Parse("qk,bogus", tied.Traits));
        Assert.Contains("bogus", e.Message);
        Assert.DoesNotContain("--", e.Message);
        e = Assert.Throws<ArgumentException>(() => SymmetryCatalog.Parse("token-mean", tied.Traits));
        Assert.Contains("does not hold", e.Message);
        Assert.Contains("untied head", e.Message);
        Assert.Throws<ArgumentException>(() => new GroupElement([FinalGain.Instance], 0, 0, tied.Traits));
    }

    private static ModelTraits Shape(int layers, int d, int heads, int inner, int vocab, int positions, bool tied) =>
        new Gpt2Adapter(new Gpt2Config { NLayer = layers, NEmbd = d, NHead = heads, NInner = inner, VocabSize = vocab, NPositions = positions }).Traits with { Tied = tied };

    [Fact]
    public void DimensionsAreGaugeMdsCounts()
    {
        // GAUGE.md §2's table and §2b's untied gpt2 figure.
        Assert.Equal(1_347_352, SymmetryCatalog.Dimension(Shape(12, 768, 12, 3072, 50257, 1024, true)));
        Assert.Equal(3_590_192, SymmetryCatalog.Dimension(Shape(24, 1024, 16, 4096, 50257, 1024, true)));
        Assert.Equal(6_730_056, SymmetryCatalog.Dimension(Shape(36, 1280, 20, 5120, 50257, 1024, true)));
        Assert.Equal(11_215_520, SymmetryCatalog.Dimension(Shape(48, 1600, 25, 6400, 50257, 1024, true)));
        Assert.Equal(1_693_673, SymmetryCatalog.Dimension(Shape(12, 768, 12, 3072, 50257, 1024, false)));
        // The measured logit-Jacobian nullities (tied and untied).
        Assert.Equal(224, SymmetryCatalog.Dimension(Shape(1, 8, 2, 32, 11, 6, true)));
        Assert.Equal(533, SymmetryCatalog.Dimension(Shape(2, 12, 3, 20, 13, 5, true)));
        Assert.Equal(279, SymmetryCatalog.Dimension(Shape(1, 8, 2, 32, 11, 6, false)));
        Assert.Equal(636, SymmetryCatalog.Dimension(Shape(2, 12, 3, 20, 13, 5, false)));
        var t = Shape(12, 768, 12, 3072, 50257, 1024, false);
        Assert.Equal("L·h·d_k²", QkBasis.Instance.DimensionFormula(t));
        Assert.Equal("(d − 1)(d − 2)/2", ResidualRotation.Instance.DimensionFormula(t));
        Assert.Equal(293_761, ResidualRotation.Instance.Dimension(t));
        Assert.Equal(50_256, TokenMean.Instance.Dimension(t));
        Assert.All(SymmetryCatalog.For(t).Where(f => f.Discrete), f => Assert.Equal(0, f.Dimension(t)));
    }

    /// <summary>The largest relative change of any single tensor (a bias family touches only biases).</summary>
    internal static double MaxTensorChange(LayerView a, LayerView b) => a.Named().Zip(b.Named()).Max(p => RelChange(p.First.Tensor, p.Second.Tensor));

    internal static double RelChange(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var x = a.to_type(ScalarType.Float64);
        return ((x - b.to_type(ScalarType.Float64)).norm() / x.norm()).item<double>();
    }

    internal static double RelativeChange(LayerView a, LayerView b)
    {
        using var scope = NewDisposeScope();
        double num = 0, den = 0;
        foreach (var ((_, x), (_, y)) in a.Named().Zip(b.Named()))
        {
            num += (x.to_type(ScalarType.Float64) - y.to_type(ScalarType.Float64)).square().sum().item<double>();
            den += x.to_type(ScalarType.Float64).square().sum().item<double>();
        }
        return Math.Sqrt(num / den);
    }
}
