using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests.SafeTensors;

/// <summary>Sharded checkpoints read through <c>model.safetensors.index.json</c>, and the index's own failure modes.</summary>
public class ShardedStoreTests
{
    private static string Single() => TestCheckpoints.Get("st-single", options: new MakeCheckpointOptions { Seed = 11 });
    private static string Sharded() => TestCheckpoints.Get("st-shard3", options: new MakeCheckpointOptions { Seed = 11, Shards = 3 });

    [Fact]
    public void ShardedStoreHoldsTheSameTensorsAsTheSingleFile()
    {
        using var one = SafeTensorStore.Open(Single());
        using var three = SafeTensorStore.Open(Sharded());
        Assert.Single(one.Files);
        Assert.Equal(3, three.Files.Count);
        Assert.Equal(4, three.SourcePaths.Count);
        Assert.EndsWith(SafeTensorStore.IndexFileName, three.SourcePaths[0]);
        Assert.Equal(one.Entries.Select(e => e.Name).Order(StringComparer.Ordinal), three.Entries.Select(e => e.Name).Order(StringComparer.Ordinal));
        foreach (var e in one.Entries)
        {
            var s = three.Entry(e.Name);
            Assert.Equal(e.DType, s.DType);
            Assert.Equal(e.Shape, s.Shape);
            Assert.Equal(one.ReadBytes(e.Name), three.ReadBytes(e.Name));
            using var a = one.Load(e.Name, torch.ScalarType.Float64);
            using var b = three.Load(e.Name, torch.ScalarType.Float64);
            Assert.True(TensorAssert.Same(a, b));
        }
        // Every shard holds something, and each tensor is read from the shard the index names.
        Assert.All(three.Files, f => Assert.NotEmpty(f.Entries));
        var map = JsonNode.Parse(File.ReadAllText(Path.Combine(Sharded(), SafeTensorStore.IndexFileName)))!["weight_map"]!.AsObject();
        foreach (var e in three.Entries) Assert.Equal(map[e.Name]!.GetValue<string>(), Path.GetFileName(e.File));
    }

    [Fact]
    public void OpeningTheIndexFileOrTheDirectoryIsTheSame()
    {
        using var byDir = SafeTensorStore.Open(Sharded());
        using var byIndex = SafeTensorStore.Open(Path.Combine(Sharded(), SafeTensorStore.IndexFileName));
        Assert.Equal(byDir.SourcePaths, byIndex.SourcePaths);
    }

    /// <summary>A private copy of the sharded checkpoint whose index the test may break.</summary>
    private static (string Dir, JsonObject Index) CopyOfSharded()
    {
        string dir = TestCheckpoints.NewTempDir("st-idx");
        foreach (var f in Directory.GetFiles(Sharded())) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, SafeTensorStore.IndexFileName)))!.AsObject();
        return (dir, index);
    }

    private static SafeTensorsException Rejected(string dir, string? index = null)
    {
        if (index is not null) File.WriteAllText(Path.Combine(dir, SafeTensorStore.IndexFileName), index);
        return Assert.Throws<SafeTensorsException>(() => SafeTensorStore.Open(dir).Dispose());
    }

    [Fact]
    public void IndexListsATensorItsShardLacks()
    {
        var (dir, index) = CopyOfSharded();
        string shard = index["weight_map"]!.AsObject().First().Value!.GetValue<string>();
        index["weight_map"]!["h.99.attn.c_attn.weight"] = shard;
        var ex = Rejected(dir, index.ToJsonString());
        Assert.Equal("h.99.attn.c_attn.weight", ex.Tensor);
        Assert.Contains(shard, ex.Message);
        Assert.Contains("not present", ex.Message);
    }

    [Fact]
    public void ShardHoldsATensorTheIndexDoesNotList()
    {
        var (dir, index) = CopyOfSharded();
        var first = index["weight_map"]!.AsObject().First();
        index["weight_map"]!.AsObject().Remove(first.Key);
        var ex = Rejected(dir, index.ToJsonString());
        Assert.Equal(first.Key, ex.Tensor);
        Assert.Contains("not listed", ex.Message);
    }

    [Fact]
    public void IndexPointsATensorAtTheWrongShard()
    {
        var (dir, index) = CopyOfSharded();
        var wm = index["weight_map"]!.AsObject();
        var shards = wm.Select(kv => kv.Value!.GetValue<string>()).Distinct().ToList();
        var victim = wm.First(kv => kv.Value!.GetValue<string>() == shards[0]).Key;
        wm[victim] = shards[1];
        var ex = Rejected(dir, index.ToJsonString());
        Assert.Equal(victim, ex.Tensor);
    }

    [Fact]
    public void MissingShardFile()
    {
        var (dir, index) = CopyOfSharded();
        string shard = index["weight_map"]!.AsObject().Last().Value!.GetValue<string>();
        File.Delete(Path.Combine(dir, shard));
        var ex = Rejected(dir);
        Assert.Equal(Path.Combine(dir, shard), ex.File);
        Assert.Contains("not found", ex.Message);
    }

    [Fact]
    public void MalformedShardIsReportedWithItsName()
    {
        var (dir, index) = CopyOfSharded();
        string shard = index["weight_map"]!.AsObject().Last().Value!.GetValue<string>();
        string path = Path.Combine(dir, shard);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^1]);
        var ex = Rejected(dir);
        Assert.Equal(path, ex.File);
    }

    [Fact]
    public void TensorInTwoShards()
    {
        var (dir, index) = CopyOfSharded();
        var wm = index["weight_map"]!.AsObject();
        var shards = wm.Select(kv => kv.Value!.GetValue<string>()).Distinct().ToList();
        // Replace shard 2 by a file holding one of shard 1's tensors.
        string name = wm.First(kv => kv.Value!.GetValue<string>() == shards[0]).Key;
        using (var src = SafeTensorStore.Open(Path.Combine(dir, shards[0])))
        using (var t = src.Load(name))
        using (var extra = torch.ones(2))
        {
            File.Delete(Path.Combine(dir, shards[1]));
            SafeTensorWriter.WriteAll(Path.Combine(dir, shards[1]), [new(name, t), new("extra", extra)], null);
        }
        foreach (var kv in wm.Where(kv => kv.Value!.GetValue<string>() == shards[1]).ToList()) wm.Remove(kv.Key);
        wm["extra"] = shards[1];
        var ex = Rejected(dir, index.ToJsonString());
        Assert.Equal(name, ex.Tensor);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[]")]
    [InlineData("{}")]
    [InlineData("{\"weight_map\":[]}")]
    [InlineData("{\"weight_map\":{}}")]
    [InlineData("{\"weight_map\":{\"a\":3}}")]
    [InlineData("{\"weight_map\":{\"a\":\"../model.safetensors\"}}")]
    [InlineData("{\"weight_map\":{\"a\":\"x.safetensors\",\"a\":\"x.safetensors\"}}")]
    public void MalformedIndex(string text)
    {
        var (dir, _) = CopyOfSharded();
        var ex = Rejected(dir, text);
        Assert.Contains(dir, ex.Message);
    }
}
