using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using Xunit.Abstractions;

namespace GaugeTorch.Tests.Llama;

/// <summary>
/// canonicalize-checkpoint's tied fast path (LlamaCanonicalStream: no check forward, the MLP and the embedding read
/// from the map and written straight into the staging buffer) must write the bytes of the general path (the one the
/// check forward takes; it measures the export but does not change it), in every dtype it handles, including the
/// shapes where its vector loops have tails and its row splits run on two threads; and it must still refuse a
/// non-finite MLP or embedding value by file and tensor. Before the fast path existed there was nothing to compare;
/// a kernel that summed in another order or rounded differently fails the byte comparison.
/// </summary>
public class LlamaCanonicalStreamTests(ITestOutputHelper output)
{
    /// <summary>d = 68, F = 70 (not multiples of the vector width or of four rows; ≥ 64 rows, so the kernels split over two threads), tied.</summary>
    private static LlamaConfig Odd => LlamaFixtures.Tiny with { HiddenSize = 68, IntermediateSize = 70, TieWordEmbeddings = true };

    public static TheoryData<string, string> Cases => new()
    {
        { "tied", "" },
        { "tied-copy", "" },
        { "qwen2", "" },
        { "stream-odd-f32", "F32" },
        { "stream-odd-bf16", "BF16" },
        { "stream-odd-f16", "F16" },
        { "stream-odd-f64", "F64" },
    };

    private static string Fixture(string name, string dtype) => dtype == ""
        ? LlamaFixtures.Get(name)
        : LlamaFixtures.Get(name, Odd, new LlamaMakeOptions { Seed = 41, DType = Enum.Parse<DType>(dtype) });

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheTiedFastPathWritesTheBytesOfTheGeneralPath(string name, string dtype)
    {
        string src = Fixture(name, dtype);
        string root = TestCheckpoints.NewTempDir("llstream");
        string general = Path.Combine(root, "general"), fast = Path.Combine(root, "fast");
        var g = CliRunner.Run("canonicalize-checkpoint", src, "--out", general, "--json", "-");          // check forward: the general path
        Assert.True(g.Code == 0, g.Err);
        var f = CliRunner.Run("canonicalize-checkpoint", src, "--out", fast, "--check-tokens", "0", "--json", "-");
        Assert.True(f.Code == 0, f.Err);
        var a = File.ReadAllBytes(Path.Combine(general, SafeTensorStore.SingleFileName));
        var b = File.ReadAllBytes(Path.Combine(fast, SafeTensorStore.SingleFileName));
        output.WriteLine($"{name} {dtype}: {a.Length} / {b.Length} bytes");
        Assert.True(a.AsSpan().SequenceEqual(b), $"{name}: the fast path's export differs from the general path's");
        Assert.Equal(File.ReadAllText(Path.Combine(general, "config.json")), File.ReadAllText(Path.Combine(fast, "config.json")));
        using (var ck = Checkpoint.Open(fast)) Assert.True(ck.Traits.Tied);
    }

    [Theory]
    [InlineData("model.layers.1.mlp.gate_proj.weight", float.NaN)]
    [InlineData("model.layers.0.mlp.up_proj.weight", float.PositiveInfinity)]
    [InlineData("model.layers.1.mlp.down_proj.weight", float.NegativeInfinity)]
    [InlineData("model.embed_tokens.weight", float.NaN)]
    public void TheFastPathRefusesANonFiniteValueByFileAndTensor(string tensor, float value)
    {
        string bad = DamagedCheckpoints.WithValue(LlamaFixtures.Get("tied"), tensor, 7, value, "llstream-nonfinite");
        string parent = TestCheckpoints.NewTempDir("llstream-nonfinite-out");
        var r = CliRunner.Run("canonicalize-checkpoint", bad, "--out", Path.Combine(parent, "c"), "--check-tokens", "0");
        Assert.True(r.Code == 2, $"exit {r.Code}: {r.Err}");
        Assert.Contains($"'{tensor}'", r.Err);
        Assert.Contains(Path.Combine(bad, SafeTensorStore.SingleFileName), r.Err);
        Assert.Empty(Directory.EnumerateFileSystemEntries(parent));
    }
}
