using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Llama;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Symmetry;

/// <summary>
/// The LLaMA family's dense controls as maps on activations (issue 12 item 5): the stored block run with the
/// action's <see cref="BlockMaps"/> computes what the block with the action applied to its weights computes, to
/// rounding (tied-residual-rotation's readers need each norm's own gain: <see cref="BlockMaps.Reader2"/>), and the
/// maps change the function.
/// </summary>
public class LlamaActivationMapsTests
{
    [Theory]
    [InlineData("invalid:tied-residual-rotation", "tied")]
    [InlineData("invalid:cross-group-mixing", "gqa")]
    [InlineData("invalid:cross-group-mixing", "llama-bias")]
    public void MapsOnActivationsEqualTheTransformedWeights(string control, string variant)
    {
        using var _ = no_grad();
        using var ck = Checkpoint.Open(LlamaFixtures.Get(variant));
        var t = ck.Traits;
        var family = SymmetryCatalog.ControlsFor(t).Single(c => c.Name == control);
        using var stored = new LayerStream(ck).Read(1, ScalarType.Float64);
        using var x = randn([7, t.Hidden], ScalarType.Float64, generator: new TorchSharp.torch.Generator(3));
        using var element = new GroupElement([family], 5, 0, t);
        using var scope = NewDisposeScope();
        var rope = Forward.RopeTables(t, 0, 7);
        var transform = element.SampleLayer(1, stored);
        var maps = transform.ActivationMaps(t);
        Assert.NotNull(maps);
        var viaWeights = Forward.Block(x, transform.Apply(stored, t), t, rope);
        var viaMaps = Forward.Block(x, stored, t, rope, maps);
        var plain = Forward.Block(x, stored, t, rope);
        double scale = viaWeights.abs().max().item<double>();
        double diff = (viaWeights - viaMaps).abs().max().item<double>() / scale;
        Assert.True(diff < 1e-12, $"{control} on {variant}: maps and weights differ by {diff:E2} (relative)");
        double moved = (viaWeights - plain).abs().max().item<double>() / scale;
        Assert.True(moved > 1e-3, $"{control} on {variant}: the transformed block equals the stored one ({moved:E2})");
    }
}

/// <summary>
/// The plane-by-plane rotary maps (<see cref="RopePlaneAction"/>, issue 12 item 5) equal the block-matrix products of
/// <see cref="QkAction"/> on a stored [out, in] view, on a contiguous copy of it, and on a float32 view.
/// </summary>
public class RopePlaneActionTests
{
    [Theory]
    [InlineData("gqa")]
    [InlineData("qwen2")]
    [InlineData("mha")]
    public void PlanesEqualTheBlockMatrices(string variant)
    {
        using var _ = no_grad();
        using var ck = Checkpoint.Open(LlamaFixtures.Get(variant));
        var t = ck.Traits;
        using var stored = new LayerStream(ck).Read(0, ScalarType.Float64);
        using var scope = NewDisposeScope();
        foreach (var family in new SymmetryFamily[] { QkRope.Instance, NonCommutingRope.Instance, MismatchedQkRope.Instance })
        {
            using var e = new GroupElement([family], 9, 0, t);
            var planes = Assert.IsType<RopePlaneAction>(e.SampleLayer(0, stored).Actions[0]);
            var blocks = new QkAction(planes.Name, planes.A, planes.B);
            foreach (var view in new[] { stored, stored.Map(x => x.contiguous()), stored.To(ScalarType.Float32).Map(x => x.to_type(ScalarType.Float64)) })
            {
                var a = new LayerTransform([planes]).Apply(view, t);
                var b = new LayerTransform([blocks]).Apply(view, t);
                foreach (var ((role, x), (_, y)) in a.Named().Zip(b.Named()))
                {
                    double rel = (x - y).abs().max().item<double>() / Math.Max(1e-300, y.abs().max().item<double>());
                    Assert.True(rel < 1e-14, $"{family.Name} on {variant}: {role} differs by {rel:E2}");
                }
                Assert.True(FamilyTests.RelChange(a.Q, view.Q) > 1e-3, $"{family.Name}: q did not move");
            }
        }
    }
}
