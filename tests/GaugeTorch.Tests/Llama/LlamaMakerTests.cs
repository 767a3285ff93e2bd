using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Llama;

/// <summary><see cref="LlamaCheckpointMaker"/>: deterministic in the seed (and independent of sharding), streamed in
/// row blocks at the right offsets, the promised weight scales, nothing left behind.</summary>
public class LlamaMakerTests
{
    private static string Make(LlamaConfig c, LlamaMakeOptions o, string hint)
    {
        string dir = Path.Combine(TestCheckpoints.NewTempDir(hint), "m");
        LlamaCheckpointMaker.Make(c, dir, o);
        return dir;
    }

    [Fact]
    public void SameSeedSameBytesOtherSeedOtherBytes()
    {
        var c = LlamaFixtures.Tiny with { ModelType = "qwen2" };
        string a = Make(c, new() { Seed = 5 }, "det"), b = Make(c, new() { Seed = 5 }, "det"), other = Make(c, new() { Seed = 6 }, "det");
        string file = SafeTensorStore.SingleFileName;
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, file)), File.ReadAllBytes(Path.Combine(b, file)));
        Assert.Equal(File.ReadAllText(Path.Combine(a, "config.json")), File.ReadAllText(Path.Combine(b, "config.json")));
        using var sa = SafeTensorStore.Open(a);
        using var so = SafeTensorStore.Open(other);
        foreach (var e in sa.Entries) Assert.NotEqual(sa.ReadBytes(e.Name), so.ReadBytes(e.Name));

        // Sharding changes the files, not the tensors.
        string sharded = Make(c, new() { Seed = 5, Shards = 3 }, "det");
        using var ss = SafeTensorStore.Open(sharded);
        Assert.Equal(3, ss.Files.Count);
        Assert.Equal(sa.Entries.Select(e => e.Name).Order(), ss.Entries.Select(e => e.Name).Order());
        foreach (var e in sa.Entries) Assert.Equal(sa.ReadBytes(e.Name), ss.ReadBytes(e.Name));
        Assert.Equal(new[] { "config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json" },
            Directory.GetFiles(sharded).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void LargeTensorsAreStreamedInBlocksAtTheirOffsets()
    {
        // The embedding [70001, 64] has 4.48 M elements: two row blocks of at most 2^22 elements.
        var c = LlamaFixtures.Tiny with { VocabSize = 70001, HiddenSize = 64, NumAttentionHeads = 4, HeadDim = 16, NumHiddenLayers = 1, TieWordEmbeddings = true };
        string dir = Make(c, new() { Seed = 3, DType = DType.BF16 }, "blocks");
        using var ck = Checkpoint.Open(dir);
        using var scope = NewDisposeScope();
        var e = ck.Load(LlamaKeys.Embed, ScalarType.Float64);
        long block = (1L << 22) / 64;
        var first = e.narrow(0, 0, block);
        var second = e.narrow(0, block, c.VocabSize - block);
        foreach (var part in new[] { first, second })
        {
            double std = part.std().item<double>();
            Assert.InRange(std, 0.0199, 0.0201);                              // N(0, 0.02) in both blocks
            Assert.True(part.abs().sum(1).min().item<double>() > 0, "a row was never written");
        }
        Assert.False((first.narrow(0, 0, 16) == second.narrow(0, 0, 16)).all().item<bool>());
    }

    [Fact]
    public void WeightScalesAreAsDocumented()
    {
        var c = LlamaFixtures.Tiny with { HiddenSize = 256, NumAttentionHeads = 8, NumKeyValueHeads = 2, HeadDim = 32, IntermediateSize = 512, AttentionBias = true };
        string dir = Make(c, new() { Seed = 1, DType = DType.F64 }, "scales");
        using var ck = Checkpoint.Open(dir);
        double Std(string n) { using var t = ck.Load(n, ScalarType.Float64); return t.std().item<double>(); }
        double d = c.HiddenSize;
        Assert.InRange(Std(LlamaKeys.Layer(0, "self_attn.q_proj.weight")) / Math.Sqrt(2 / d), 0.97, 1.03);
        Assert.InRange(Std(LlamaKeys.Layer(0, "self_attn.k_proj.weight")) / Math.Sqrt(2 / d), 0.95, 1.05);
        Assert.InRange(Std(LlamaKeys.Layer(0, "mlp.gate_proj.weight")) / Math.Sqrt(1 / d), 0.97, 1.03);
        Assert.InRange(Std(LlamaKeys.Layer(0, "self_attn.o_proj.weight")) / (0.02 / Math.Sqrt(8 * 32)), 0.95, 1.05);
        Assert.InRange(Std(LlamaKeys.Layer(0, "self_attn.q_proj.bias")) / 0.1, 0.85, 1.15);
        using var g = ck.Load(LlamaKeys.Layer(1, "input_layernorm.weight"), ScalarType.Float64);
        Assert.True(g.min().item<double>() >= 0.5 && g.max().item<double>() <= 1.5 && g.std().item<double>() > 0.2);
    }
}
