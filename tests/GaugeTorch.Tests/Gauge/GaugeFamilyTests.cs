using GaugeTorch.Evaluation;
using GaugeTorch.Gauge;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Gauge;

public class GaugeFamilyTests
{
    private static readonly int[] Tokens = [3, 17, 42, 5, 88, 13, 61, 2, 9, 70, 33, 1, 96, 50, 24, 7];
    private static string F64Model => TestCheckpoints.Get("gauge-f64", null, new MakeCheckpointOptions { Seed = 11, DType = DType.F64 });

    [Fact]
    public void EveryFamilyAloneAndComposedPreservesLogitsAndEveryControlBreaksThem()
    {
        using var ck = Gpt2Checkpoint.Open(F64Model);
        var cases = InvarianceEvaluator.StandardCases(ck.Config, GaugeCatalog.All, perGroup: 2, seed: 5, controls: true);
        var run = InvarianceEvaluator.Run(ck, Tokens, ScalarType.Float64, cases);
        double eps = InvarianceMetrics.EpsMach(ScalarType.Float64);
        foreach (var f in GaugeCatalog.All)
            Assert.Contains(run.Cases, c => c.Group == f.CliName());
        Assert.Contains(run.Cases, c => c.Group == "all-together");
        foreach (var c in run.Cases.Where(c => c.Valid))
            Assert.True(c.RelativeError <= 100 * eps, $"{c.Group}: {c.RelativeError:G3} > 100 ε");
        foreach (var ctl in Enum.GetValues<InvalidControl>())
        {
            var errs = run.Cases.Where(c => c.Group == ctl.CliName()).Select(c => c.RelativeError).ToList();
            Assert.NotEmpty(errs);
            Assert.True(errs.Min() >= 1e-3, $"{ctl}: {errs.Min():G3} < 1e-3");
        }
    }

    [Fact]
    public void Float32ComputeStaysWithinFloat32Precision()
    {
        using var ck = Gpt2Checkpoint.Open(TestCheckpoints.Get("gauge-f32"));
        var cases = InvarianceEvaluator.StandardCases(ck.Config, GaugeCatalog.All, perGroup: 1, seed: 2, controls: false);
        var run = InvarianceEvaluator.Run(ck, Tokens, ScalarType.Float32, cases);
        foreach (var c in run.Cases)
        {
            Assert.True(c.RelativeError <= 1000 * InvarianceMetrics.EpsMach(ScalarType.Float32), $"{c.Group}: {c.RelativeError:G3}");
            Assert.Equal(1.0, c.Top1Agreement);
        }
    }

    public static TheoryData<string> Families() => new(GaugeCatalog.All.Where(f => f != GaugeFamily.EmbeddingOffset).Select(f => f.CliName()));

    [Theory]
    [MemberData(nameof(Families))]
    public void EachLayerFamilyMovesParametersAndItsInverseRestoresThem(string family)
    {
        using var scope = NewDisposeScope();
        using var ck = Gpt2Checkpoint.Open(F64Model);
        var f = GaugeCatalog.Parse(family);
        var w = ck.LoadLayer(1, ScalarType.Float64);
        var element = new GaugeElement(ck.Config, f, seed: 9).SampleLayer(1, w);
        var moved = element.Apply(w, ck.Config);
        double change = MaxTensorChange(w, moved);
        Assert.True(change > 1e-3, $"{family} moved the parameters by only {change:G3}");
        var back = element.Inverse().Apply(moved, ck.Config);
        double residual = RelativeChange(w, back);
        Assert.True(residual < 1e-12, $"{family}: inverse leaves {residual:G3}");
    }

    [Fact]
    public void EmbeddingOffsetMovesEmbeddingsAndInverts()
    {
        using var scope = NewDisposeScope();
        using var ck = Gpt2Checkpoint.Open(F64Model);
        var g = ck.LoadGlobals(ScalarType.Float64);
        var off = new GaugeElement(ck.Config, [GaugeFamily.EmbeddingOffset], 4).SampleGlobal(g.Wte, g.Wpe)!;
        var (wte, wpe) = off.Apply(g.Wte, g.Wpe);
        Assert.True(((wte - g.Wte).norm() / g.Wte.norm()).item<double>() > 1e-3);
        Assert.True(((wpe - g.Wpe).norm() / g.Wpe.norm()).item<double>() > 1e-3);
        var (wte0, wpe0) = off.Inverse().Apply(wte, wpe);
        Assert.True(((wte0 - g.Wte).norm() / g.Wte.norm()).item<double>() < 1e-14);
        Assert.True(((wpe0 - g.Wpe).norm() / g.Wpe.norm()).item<double>() < 1e-14);
    }

    [Fact]
    public void SameSeedSameElementDifferentSeedDifferentElement()
    {
        using var scope = NewDisposeScope();
        using var ck = Gpt2Checkpoint.Open(F64Model);
        var w = ck.LoadLayer(0, ScalarType.Float64);
        var a = new GaugeElement(ck.Config, GaugeCatalog.All, 21).SampleLayer(0, w).Apply(w, ck.Config);
        var b = new GaugeElement(ck.Config, GaugeCatalog.All, 21).SampleLayer(0, w).Apply(w, ck.Config);
        var c = new GaugeElement(ck.Config, GaugeCatalog.All, 22).SampleLayer(0, w).Apply(w, ck.Config);
        Assert.Equal(0.0, RelativeChange(a, b));
        Assert.True(RelativeChange(a, c) > 1e-3);
    }

    [Fact]
    public void FamilyListParsing()
    {
        Assert.Equal(11, GaugeCatalog.Parse("all").Count);
        Assert.Equal(GaugeCatalog.Paper, GaugeCatalog.Parse("paper"));
        Assert.Equal([GaugeFamily.QkBasis, GaugeFamily.WriterMean], GaugeCatalog.Parse("writer-mean, qk"));
        var e = Assert.Throws<ArgumentException>(() => GaugeCatalog.Parse("qk,bogus"));
        Assert.Contains("bogus", e.Message);
    }

    /// <summary>The largest relative change of any single tensor (a bias family touches only biases).</summary>
    internal static double MaxTensorChange(LayerWeights a, LayerWeights b) =>
        a.Named().Zip(b.Named()).Max(p => ((p.First.Tensor.to_type(ScalarType.Float64) - p.Second.Tensor.to_type(ScalarType.Float64)).norm() / p.First.Tensor.to_type(ScalarType.Float64).norm()).item<double>());

    internal static double RelativeChange(LayerWeights a, LayerWeights b)
    {
        double num = 0, den = 0;
        foreach (var ((_, x), (_, y)) in a.Named().Zip(b.Named()))
        {
            num += (x.to_type(ScalarType.Float64) - y.to_type(ScalarType.Float64)).square().sum().item<double>();
            den += x.to_type(ScalarType.Float64).square().sum().item<double>();
        }
        return Math.Sqrt(num / den);
    }
}
