using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Fixtures;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Symmetry;

/// <summary>
/// The dense controls as maps on activations (issue 12, item 1): the stored block run with the action's
/// <see cref="BlockMaps"/> computes what the block with the action applied to its weights computes, to rounding,
/// so the evaluator may skip the O(d³) weight products. And the maps really change the function (a control).
/// </summary>
public class ActivationMapsTests
{
    public static TheoryData<string> Controls => new() { GlobalOrthogonal.Instance.Name, CrossHeadMixing.Instance.Name };

    [Theory]
    [MemberData(nameof(Controls))]
    public void MapsOnActivationsEqualTheTransformedWeights(string control)
    {
        using var _ = no_grad();
        string dir = TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });
        using var ck = Checkpoint.Open(dir);
        var t = ck.Traits;
        var family = SymmetryCatalog.ControlsFor(t).Single(c => c.Name == control);
        using var stored = new LayerStream(ck).Read(1, ScalarType.Float64);
        using var x = randn([7, t.Hidden], ScalarType.Float64, generator: new TorchSharp.torch.Generator(3));
        using var element = new GroupElement([family], 5, 0, t);
        using var scope = NewDisposeScope();
        var transform = element.SampleLayer(1, stored);
        var maps = transform.ActivationMaps(t);
        Assert.NotNull(maps);
        var viaWeights = Forward.Block(x, transform.Apply(stored, t), t);
        var viaMaps = Forward.Block(x, stored, t, maps: maps);
        var plain = Forward.Block(x, stored, t);
        double scale = viaWeights.abs().max().item<double>();
        double diff = (viaWeights - viaMaps).abs().max().item<double>() / scale;
        Assert.True(diff < 1e-12, $"{control}: maps and weights differ by {diff:E2} (relative)");
        double moved = (viaWeights - plain).abs().max().item<double>() / scale;
        Assert.True(moved > 1e-3, $"{control}: the transformed block equals the stored one ({moved:E2})");
    }

    [Fact]
    public void FamiliesThatAreNotSingleMapActionsGiveNoMaps()
    {
        string dir = TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });
        using var ck = Checkpoint.Open(dir);
        var t = ck.Traits;
        using var stored = new LayerStream(ck).Read(0, ScalarType.Float64);
        using var element = new GroupElement(SymmetryCatalog.For(t), 5, 0, t);
        using var scope = NewDisposeScope();
        Assert.Null(element.SampleLayer(0, stored).ActivationMaps(t));
    }
}
