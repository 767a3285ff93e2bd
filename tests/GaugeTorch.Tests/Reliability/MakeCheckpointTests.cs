using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Reliability;

/// <summary>
/// Issue 11, item 5. Before the fix make-checkpoint wrote into any directory: it overwrote a checkpoint, left a stale
/// index beside a new single file, and --shards 3 on a tiny model wrote 2 shards without a word.
/// </summary>
public class MakeCheckpointTests
{
    [Fact]
    public void RefusesANonEmptyDirectoryAndLeavesItAsItWas()
    {
        string dir = TestCheckpoints.NewTempDir("make-nonempty");
        Assert.Equal(0, CliRunner.Run("make-checkpoint", "--out", dir, "--seed", "1").Code);
        var before = Directory.GetFiles(dir).ToDictionary(f => Path.GetFileName(f)!, File.ReadAllBytes);

        var (code, stdout, err) = CliRunner.Run("make-checkpoint", "--out", dir, "--seed", "2");
        Assert.Equal(2, code);
        Assert.Contains("--out", err);
        Assert.Contains("not empty", err);
        Assert.Contains("--force", err);
        Assert.Equal("", stdout);
        var after = Directory.GetFiles(dir).ToDictionary(f => Path.GetFileName(f)!, File.ReadAllBytes);
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (k, v) in before) Assert.Equal(v, after[k]);
        Assert.Empty(Directory.GetFileSystemEntries(Path.GetDirectoryName(dir)!, ".*gaugetorch-*"));
    }

    [Fact]
    public void ForceReplacesTheWholeDirectoryWithoutAStaleIndex()
    {
        string dir = Path.Combine(TestCheckpoints.NewTempDir("make-force"), "ck");
        Assert.Equal(0, CliRunner.Run("make-checkpoint", "--out", dir, "--shards", "2").Code);
        Assert.True(File.Exists(Path.Combine(dir, SafeTensorStore.IndexFileName)));
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "user file");

        var (code, _, err) = CliRunner.Run("make-checkpoint", "--out", dir, "--force");
        Assert.True(code == 0, err);
        Assert.Equal(["config.json", SafeTensorStore.SingleFileName], Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        using (var ck = Gpt2Checkpoint.Open(dir)) Assert.Single(ck.Store.Files);
        Assert.Equal([dir], Directory.GetFileSystemEntries(Path.GetDirectoryName(dir)!)); // nothing beside it either
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    public void ShardsAreExactlyTheNumberAsked(int shards)
    {
        // The tiny preset: V·d = 50257·64 floats in wte dwarf the rest, which made --shards 3 give 2 shards.
        string dir = Path.Combine(TestCheckpoints.NewTempDir("make-shards"), "ck");
        var (code, _, err) = CliRunner.Run("make-checkpoint", "--out", dir, "--shards", shards.ToString());
        Assert.True(code == 0, err);
        var files = Directory.GetFiles(dir, "*.safetensors");
        Assert.Equal(shards, files.Length);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, SafeTensorStore.IndexFileName)))!;
        Assert.Equal(shards, index["weight_map"]!.AsObject().Select(kv => kv.Value!.GetValue<string>()).Distinct().Count());
        using var ck = Gpt2Checkpoint.Open(dir);
        Assert.Equal(shards, ck.Store.Files.Count);
        Assert.All(ck.Store.Files, f => Assert.NotEmpty(f.Entries));
    }

    [Fact]
    public void ImpossibleShardCountIsAnError()
    {
        string parent = TestCheckpoints.NewTempDir("make-shards-bad");
        var (code, _, err) = CliRunner.Run("make-checkpoint", "--out", Path.Combine(parent, "ck"), "--layers", "1", "--shards", "40");
        Assert.Equal(2, code);
        Assert.Contains("--shards 40", err);
        Assert.Contains("16 tensors", err); // 12 per layer + 4 globals
        Assert.Empty(Directory.GetFileSystemEntries(parent));
    }
}
