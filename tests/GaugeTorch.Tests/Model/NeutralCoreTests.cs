using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using GaugeTorch.Tests.Gpt2;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Model;

/// <summary>
/// The architecture-neutral core on GPT-2 checkpoints: the adapter's view round-trips the stored bytes exactly, and
/// the neutral forward on views matches the independent float64 reference (<see cref="ReferenceGpt2"/>).
/// </summary>
public class NeutralCoreTests(ITestOutputHelper output)
{
    public static TheoryData<string> Variants => new() { "plain", "prefix", "buffers", "f16", "untied", "sharded" };

    private static (Gpt2Config Config, MakeCheckpointOptions Options) Variant(string name) => name switch
    {
        "plain" => (TestCheckpoints.Tiny, new() { Seed = 41 }),
        "prefix" => (TestCheckpoints.Tiny, new() { Seed = 42, Prefix = true }),
        "buffers" => (TestCheckpoints.Tiny, new() { Seed = 43, MaskBuffers = true }),
        "f16" => (TestCheckpoints.Tiny, new() { Seed = 44, DType = DType.F16 }),
        "untied" => (TestCheckpoints.Tiny, new() { Seed = 45, Untied = true }),
        "sharded" => (TestCheckpoints.Tiny, new() { Seed = 46, Shards = 2 }),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void ViewsRoundTripTheStoredTensorsExactly(string variant)
    {
        var (cfg, opt) = Variant(variant);
        using var ck = Checkpoint.Open(TestCheckpoints.Get("core-" + variant, cfg, opt));
        Assert.Equal(!opt.Untied, ck.Tied);
        Assert.Equal(opt.MaskBuffers ? 2 * cfg.NLayer : 0, ck.IgnoredBuffers.Count);
        using var scope = NewDisposeScope();
        var dtype = opt.DType.ToScalarType();
        for (int l = 0; l < cfg.NLayer; l++)
        {
            var v = ck.LoadLayer(l, dtype);
            Assert.Equal(new long[] { cfg.NHead, cfg.NEmbd, cfg.HeadDim }, v.Q.shape);
            Assert.Equal(new long[] { cfg.NHead, cfg.HeadDim, cfg.NEmbd }, v.O.shape);
            var names = ck.Architecture.LayerNames(l);
            var back = ck.Architecture.FromView(l, v).ToList();
            Assert.Equal(names, back.Select(p => p.Name));
            foreach (var (name, t) in back)
                Assert.True((t.contiguous() == ck.Load(name, dtype)).all().item<bool>(), $"{name} changed in the round trip");
        }
        var g = ck.LoadGlobals(dtype);
        Assert.Equal(opt.Untied, g.Head is not null);
        foreach (var (name, t) in ck.Architecture.GlobalsFromView(g))
            Assert.True((t == ck.Load(name, dtype)).all().item<bool>(), $"{name} changed in the round trip");
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void NeutralForwardMatchesTheIndependentReference(string variant)
    {
        var (cfg, opt) = Variant(variant);
        string dir = TestCheckpoints.Get("core-" + variant, cfg, opt);
        using var ck = Checkpoint.Open(dir);
        var rng = new Random(7);
        var tokens = Enumerable.Range(0, 17).Select(_ => rng.Next(cfg.VocabSize)).ToArray();
        var reference = new ReferenceGpt2(dir, ck.Store).Logits(tokens);
        foreach (var dtype in new[] { ScalarType.Float64, ScalarType.Float32 })
        {
            using var scope = NewDisposeScope();
            var layers = Enumerable.Range(0, cfg.NLayer).Select(l => ck.LoadLayer(l, dtype)).ToList();
            var g = ck.LoadGlobals(dtype);
            var t = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
            var logits = Forward.Logits(t, layers, g, ck.Traits).to_type(ScalarType.Float64);
            double err = ReferenceGpt2.RelativeError(logits.data<double>().ToArray(), reference);
            output.WriteLine($"{variant} {dtype}: relative error {err:E3}");
            Assert.True(err <= (dtype == ScalarType.Float64 ? 1e-12 : 1e-5), $"{variant} {dtype}: {err:E3}");
        }
    }
}
