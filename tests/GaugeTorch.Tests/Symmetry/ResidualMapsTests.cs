using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Fixtures;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Symmetry;

/// <summary>
/// A last residual change of basis as maps on the hidden state (issue 12, item 1; <see cref="IResidualMapAction"/>):
/// the block with the whole transform applied to its weights, run on a transformed state x′, equals the block with
/// only the earlier actions applied to its matrices, the map's norm changes (OnNorms) and its reader/writer maps, on
/// the same x′, to 1e-12 relative, so the streaming evaluator may run it that way. The maps are not the stored block
/// wrapped in M⁻¹ and M: a wrong norm change or a wrong map fails this. And the transform really moves the block.
/// </summary>
public class ResidualMapsTests
{
    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && (a - b).abs().max().item<double>() == 0;

    private static void Check(LayerTransform transform, LayerView stored, ModelTraits t, string what)
    {
        using var x = randn([7, t.Hidden], ScalarType.Float64, generator: new TorchSharp.torch.Generator(3));
        var (before, map) = transform.SplitResidualMap();
        Assert.NotNull(map);
        var viaWeights = Forward.Block(x, transform.Apply(stored, t), t);
        var rest = before.Apply(stored, t);
        var viaMaps = Forward.Block(x, map.OnNorms(rest), t, maps: map.Maps(rest));
        var plain = Forward.Block(x, stored, t);
        double scale = viaWeights.abs().max().item<double>();
        double diff = (viaWeights - viaMaps).abs().max().item<double>() / scale;
        Assert.True(diff < 1e-12, $"{what}: maps and weights differ by {diff:E2} (relative)");
        double moved = (viaWeights - plain).abs().max().item<double>() / scale;
        Assert.True(moved > 1e-3, $"{what}: the transformed block equals the stored one ({moved:E2})");
        // The norm change matters: the maps with the stored norms do not give the transformed block.
        var wrongNorms = Forward.Block(x, rest, t, maps: map.Maps(rest));
        double off = (viaWeights - wrongNorms).abs().max().item<double>() / scale;
        Assert.True(off > 1e-6, $"{what}: the block does not depend on the norm change ({off:E2})");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ResidualPermutationAloneAndLastOfAllTogether(bool all)
    {
        using var _ = no_grad();
        string dir = TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });
        using var ck = Checkpoint.Open(dir);
        var t = ck.Traits;
        using var stored = new LayerStream(ck).Read(1, ScalarType.Float64);
        IReadOnlyList<SymmetryFamily> families = all ? SymmetryCatalog.For(t) : [ResidualPermutation.Instance];
        using var element = new GroupElement(families, 5, 0, t);
        using var scope = NewDisposeScope();
        var transform = element.SampleLayer(1, stored);
        Assert.IsType<ResidualPermutationAction>(transform.Actions[^1]);
        Check(transform, stored, t, all ? "all-together" : "residual-perm");
    }

    [Fact]
    public void ResidualRotation()
    {
        // The family needs an untied head for its global part; the layer action is the same on either.
        using var _ = no_grad();
        string dir = TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });
        using var ck = Checkpoint.Open(dir);
        var t = ck.Traits;
        using var stored = new LayerStream(ck).Read(0, ScalarType.Float64);
        using var scope = NewDisposeScope();
        var q = GaugeRandom.OrthogonalFixingOnes(t.Hidden, new TorchSharp.torch.Generator(11));
        var bias = new NormBiasAction(randn([t.Hidden], ScalarType.Float64) * 0.1, randn([t.Hidden], ScalarType.Float64) * 0.1);
        Check(new LayerTransform([bias, new ResidualRotationAction(q)]), stored, t, "residual-rotation");
        // Two residual maps at the end (an untied GPT-2's all-together: residual-perm, then residual-rotation) compose.
        var perm = new ResidualPermutationAction(randperm(t.Hidden, generator: new TorchSharp.torch.Generator(5), dtype: ScalarType.Int64), -1.0);
        var both = new LayerTransform([bias, perm, new ResidualRotationAction(q)]);
        Assert.Single(both.SplitResidualMap().Before.Actions);
        Check(both, stored, t, "residual-perm + residual-rotation");
    }

    [Fact]
    public void NoMapWhenTheLastActionIsNotAResidualChange()
    {
        using var _ = no_grad();
        string dir = TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });
        using var ck = Checkpoint.Open(dir);
        var t = ck.Traits;
        using var stored = new LayerStream(ck).Read(0, ScalarType.Float64);
        using var element = new GroupElement([MlpPermutation.Instance], 5, 0, t);
        using var scope = NewDisposeScope();
        var transform = element.SampleLayer(0, stored);
        var (before, map) = transform.SplitResidualMap();
        Assert.Null(map);
        Assert.Same(transform, before);
    }

    [Fact]
    public void FusedReadersReadBackTheSameMatrix()
    {
        // After ln-gain sets Q | K | V from one matrix, Reader1 returns that matrix (no copy), equal to concatenating them.
        using var _ = no_grad();
        string dir = TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });
        using var ck = Checkpoint.Open(dir);
        var t = ck.Traits;
        using var stored = new LayerStream(ck).Read(0, ScalarType.Float64);
        using var scope = NewDisposeScope();
        var w = stored.Map(x => x.alias());
        new NormGainAction("ln-gain", GaugeRandom.Gains(t.Hidden, new TorchSharp.torch.Generator(1)), GaugeRandom.Gains(t.Hidden, new TorchSharp.torch.Generator(2))).Apply(w, t);
        var concatenated = cat([Forward.Flat(w.Q), Forward.Flat(w.K), Forward.Flat(w.V)], 1);
        Assert.True(Same(ViewOps.Reader1(w), concatenated));
        w.K = w.K.clone();                     // no longer a view of that matrix: concatenated again, same values
        Assert.True(Same(ViewOps.Reader1(w), concatenated));
    }

    [Fact]
    public void ColumnGatherEqualsIndexSelect()
    {
        // mlp-perm's column gather (OutInLayout.Monomial) on a contiguous matrix and on a transposed view.
        using var scope = NewDisposeScope();
        var m = randn([5, 9], ScalarType.Float64, generator: new TorchSharp.torch.Generator(2));
        var idx = randperm(9, generator: new TorchSharp.torch.Generator(4), dtype: ScalarType.Int64);
        Assert.True(Same(OutInLayout.Monomial(m, null, null, idx.data<long>().ToArray(), null), m.index_select(1, idx)));
        var idx5 = randperm(5, generator: new TorchSharp.torch.Generator(6), dtype: ScalarType.Int64);
        var mt = m.t();
        Assert.True(Same(OutInLayout.Monomial(mt, null, null, idx5.data<long>().ToArray(), null), mt.index_select(1, idx5)));
    }
}
