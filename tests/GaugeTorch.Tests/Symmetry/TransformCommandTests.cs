using GaugeTorch.Evaluation;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests.Symmetry;

public class TransformCommandTests
{
    private static readonly int[] Tokens = [5, 9, 77, 31, 2, 64, 18, 40, 11, 3];

    private static double LogitError(string a, string b)
    {
        using var scope = torch.NewDisposeScope();
        using var ca = Gpt2Checkpoint.Open(a);
        using var cb = Gpt2Checkpoint.Open(b);
        using var ma = Gpt2Model.Load(ca, torch.ScalarType.Float64);
        using var mb = Gpt2Model.Load(cb, torch.ScalarType.Float64);
        return InvarianceMetrics.RelativeError(ma.Logits(Tokens), mb.Logits(Tokens), InvarianceMetrics.EpsMach(torch.ScalarType.Float64));
    }

    [Fact]
    public void TransformedCheckpointReproducesLogitsKeepsLayoutAndRecordsMetadata()
    {
        string src = TestCheckpoints.Get("transform-src", null, new MakeCheckpointOptions { Seed = 8, DType = DType.F32, Prefix = true, MaskBuffers = true });
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("transform"), "t");
        var (code, _, err) = CliRunner.Run("transform", src, "--out", outDir, "--seed", "4", "--dtype", "float64");
        Assert.True(code == 0, err);
        using (var a = SafeTensorStore.Open(src))
        using (var b = SafeTensorStore.Open(outDir))
        {
            Assert.Equal(a.Entries.Select(e => e.Name).Order(), b.Entries.Select(e => e.Name).Order());
            foreach (var e in a.Entries)
            {
                var o = b.Entry(e.Name);
                Assert.Equal(e.Shape, o.Shape);
                if (e.Name.EndsWith(".attn.bias", StringComparison.Ordinal) || e.Name.EndsWith(".attn.masked_bias", StringComparison.Ordinal))
                    Assert.Equal(a.ReadBytes(e.Name), b.ReadBytes(e.Name));
                else
                    Assert.Equal(DType.F64, o.DType);
            }
            Assert.Equal("4", b.Metadata["gaugetorch_seed"]);
            Assert.Equal("pt", b.Metadata["format"]);
            Assert.Contains("embedding-offset", b.Metadata["gaugetorch_families"]);
        }
        using (var ck = Gpt2Checkpoint.Open(outDir)) Assert.True(ck.Tied);
        double err64 = LogitError(src, outDir);
        Assert.True(err64 < 100 * InvarianceMetrics.EpsMach(torch.ScalarType.Float64), $"F64 transform: {err64:G3}");
    }

    [Fact]
    public void SameSeedGivesSameBytes()
    {
        string src = TestCheckpoints.Get("transform-bytes");
        string root = TestCheckpoints.NewTempDir("bytes");
        Assert.Equal(0, CliRunner.Run("transform", src, "--out", Path.Combine(root, "a"), "--seed", "7").Code);
        Assert.Equal(0, CliRunner.Run("transform", src, "--out", Path.Combine(root, "b"), "--seed", "7").Code);
        Assert.Equal(0, CliRunner.Run("transform", src, "--out", Path.Combine(root, "c"), "--seed", "8").Code);
        byte[] a = File.ReadAllBytes(Path.Combine(root, "a", "model.safetensors"));
        Assert.Equal(a, File.ReadAllBytes(Path.Combine(root, "b", "model.safetensors")));
        Assert.NotEqual(a, File.ReadAllBytes(Path.Combine(root, "c", "model.safetensors")));
    }

    [Fact]
    public void StorageRoundingOfAnF32TransformIsSmallButVisible()
    {
        string src = TestCheckpoints.Get("transform-bytes");
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("f32"), "t");
        Assert.Equal(0, CliRunner.Run("transform", src, "--out", outDir, "--seed", "1").Code);
        double err = LogitError(src, outDir);
        Assert.InRange(err, 1e-10, 1e-5);
    }

    [Fact]
    public void ResidualRotationUntiesTheHeadAndPreservesTheFunction()
    {
        string src = TestCheckpoints.Get("transform-rot", null, new MakeCheckpointOptions { Seed = 3, DType = DType.F64 });
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("rot"), "t");
        var (code, _, err) = CliRunner.Run("transform", src, "--out", outDir, "--families", "paper", "--residual-rotation");
        Assert.True(code == 0, err);
        using (var ck = Gpt2Checkpoint.Open(outDir))
        {
            Assert.False(ck.Tied);
            using var w = ck.Load(Gpt2Keys.Layer(0, "ln_1.weight"), torch.ScalarType.Float64);
            Assert.True(w.allclose(torch.ones_like(w)));
        }
        double e = LogitError(src, outDir);
        Assert.True(e < 100 * InvarianceMetrics.EpsMach(torch.ScalarType.Float64), $"residual rotation: {e:G3}");
    }

    [Fact]
    public void BadInputsFailCleanlyAndLeaveNothing()
    {
        string src = TestCheckpoints.Get("transform-bytes");
        string root = TestCheckpoints.NewTempDir("bad");
        var (code, _, err) = CliRunner.Run("transform", src, "--out", Path.Combine(root, "x"), "--families", "qk,nonsense");
        Assert.Equal(2, code);
        Assert.Contains("nonsense", err);
        Assert.False(Directory.Exists(Path.Combine(root, "x")));
        (code, _, err) = CliRunner.Run("transform", src, "--out", src);
        Assert.Equal(2, code);
        Assert.Contains("input", err);
        Assert.Empty(Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public void VerifyInvarianceWritesJsonAndPlotAndPasses()
    {
        string src = TestCheckpoints.Get("verify-cli", null, new MakeCheckpointOptions { Seed = 12, DType = DType.F64 });
        string root = TestCheckpoints.NewTempDir("verify");
        string json = Path.Combine(root, "v.json"), svg = Path.Combine(root, "v.svg");
        var (code, stdout, err) = CliRunner.Run("verify-invariance", src, "--tokens-for-test-unused");
        Assert.Equal(2, code); // unknown option is an error, not a pass
        (code, stdout, err) = CliRunner.Run("verify-invariance", src, "--transforms", "2", "--json", json, "--plot", svg, "--tokens", "5,9,77,31,2,64,18,40");
        Assert.True(code == 0, stdout + err);
        var doc = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.True(doc["passed"]!.GetValue<bool>());
        Assert.Equal("float64", doc["dtype"]!.GetValue<string>());
        foreach (var key in new[] { "model", "eps_mach", "tokens", "families" }) Assert.NotNull(doc[key]);
        var fams = doc["families"]!.AsArray();
        Assert.Equal(12 + 1 + 3, fams.Count);   // every family that holds for a tied GPT-2, all together, three controls
        foreach (var f in fams)
            foreach (var key in new[] { "name", "valid", "count", "max", "median", "p99", "passed" }) Assert.NotNull(f![key]);
        Assert.StartsWith("<svg", File.ReadAllText(svg));
    }
}
