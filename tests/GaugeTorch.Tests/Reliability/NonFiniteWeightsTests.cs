using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests.Reliability;

/// <summary>
/// Issue 11, item 1 (transform, verify-invariance, logits, generate) and item 2 (JSON). Before the fix a NaN or ±inf in
/// any tensor went through: transform exited 0 with a whole NaN output tensor, logits wrote NaN logits, generate
/// printed a continuation, verify-invariance printed a NaN table and "FAILED" (exit 1) without naming the tensor, and
/// with --json it then died with the serializer's message (exit 2). Every case below asserted against that code fails
/// on the exit code or on the missing tensor name.
/// </summary>
public class NonFiniteWeightsTests
{
    /// <summary>A tiny model with GPT-2's vocabulary, so that generate's --prompt is tokenizable.</summary>
    private static string Model() => TestCheckpoints.Get("nonfinite-v50257", TestCheckpoints.Tiny with { VocabSize = 50257 }, new MakeCheckpointOptions { Seed = 61 });

    private static void AssertRefused((int Code, string Out, string Err) r, string file, string tensor, string outputParent, string command)
    {
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(r.Code == 2, $"{command}: exit {r.Code}, stderr: {r.Err}");
        Assert.True(lines.Length == 1, $"{command}: {lines.Length} stderr lines:\n{r.Err}");
        Assert.StartsWith("gaugetorch: error: ", lines[0]);
        Assert.Contains(file, lines[0]);
        Assert.Contains($"'{tensor}'", lines[0]);
        Assert.Contains(FiniteWeights.AllowOption, lines[0]);
        Assert.Equal("", r.Out);
        Assert.Empty(Directory.EnumerateFileSystemEntries(outputParent)); // no output, no temporary
    }

    [Theory]
    [InlineData("wte.weight", float.NaN)]
    [InlineData("wpe.weight", float.PositiveInfinity)]
    [InlineData("ln_f.weight", float.NaN)]
    [InlineData("ln_f.bias", float.NegativeInfinity)]
    [InlineData("h.1.mlp.c_fc.weight", float.NaN)]
    [InlineData("h.0.ln_1.bias", float.PositiveInfinity)]
    public void EveryWeightReadingCommandRefusesNonFiniteValuesByFileAndTensor(string tensor, float value)
    {
        string bad = DamagedCheckpoints.WithValue(Model(), tensor, 5, value, "nonfinite");
        string file = Path.Combine(bad, SafeTensorStore.SingleFileName);
        string parent = TestCheckpoints.NewTempDir("nonfinite-out");

        AssertRefused(CliRunner.Run("transform", bad, "--out", Path.Combine(parent, "t")), file, tensor, parent, "transform");
        AssertRefused(CliRunner.Run("verify-invariance", bad, "--transforms", "1", "--tokens", "1,2,3,4", "--json", Path.Combine(parent, "v.json")),
            file, tensor, parent, "verify-invariance");
        AssertRefused(CliRunner.Run("logits", bad, "--tokens", "1,2,3", "--out", Path.Combine(parent, "l.safetensors")), file, tensor, parent, "logits");
        AssertRefused(CliRunner.Run("generate", bad, "--prompt", "Hello", "--max-new-tokens", "3"), file, tensor, parent, "generate");
    }

    [Fact]
    public void AllowNonFiniteIsExplicitAndTheJsonThenCarriesNullsAndTheTablesVerdict()
    {
        string bad = DamagedCheckpoints.WithValue(Model(), "wte.weight", 5, float.NaN, "nonfinite-allow");
        string parent = TestCheckpoints.NewTempDir("nonfinite-allow-out");

        // transform: written, and the NaN is carried into the output (that is what the flag asks for).
        var t = CliRunner.Run("transform", bad, "--out", Path.Combine(parent, "t"), "--allow-nonfinite");
        Assert.True(t.Code == 0, t.Err);
        using (var st = SafeTensorStore.Open(Path.Combine(parent, "t")))
        using (var wte = st.Load("wte.weight", torch.ScalarType.Float64))
            Assert.False(wte.isfinite().all().item<bool>());

        // verify-invariance: the checks run and fail (exit 1, not 2); the JSON is written, NaN as null, and says what the table says.
        string json = Path.Combine(parent, "v.json");
        var v = CliRunner.Run("verify-invariance", bad, "--transforms", "1", "--tokens", "1,2,3,4", "--no-controls", "--families", "qk,ln-gain",
                              "--json", json, "--allow-nonfinite");
        Assert.True(v.Code == 1, $"exit {v.Code}: {v.Err}");
        Assert.Contains("FAILED", v.Out);
        var o = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.False(o["passed"]!.GetValue<bool>());
        var fams = o["families"]!.AsArray();
        Assert.All(fams, f => Assert.False(f!["passed"]!.GetValue<bool>()));
        Assert.Contains(fams, f => f!["max"] is null);                  // NaN written as null
        Assert.Contains(o["errors"]!.AsArray(), e => e!["error"] is null);

        // logits: written, NaN and all.
        var l = CliRunner.Run("logits", bad, "--tokens", "5,1", "--out", Path.Combine(parent, "l.safetensors"), "--allow-nonfinite");
        Assert.True(l.Code == 0, l.Err);
    }

    [Fact]
    public void FinitenessCheckNamesCountsAndPosition()
    {
        string bad = DamagedCheckpoints.WithValue(Model(), "h.0.attn.c_attn.weight", 17, float.NegativeInfinity, "nonfinite-lib");
        using var ck = Checkpoint.Open(bad);
        using var w = ck.LoadLayer(0, torch.ScalarType.Float64);
        var e = Assert.Throws<NonFiniteWeightsException>(() => FiniteWeights.RequireLayer(ck, 0, w));
        Assert.Equal("h.0.attn.c_attn.weight", e.Tensor);
        Assert.Equal(Path.Combine(bad, SafeTensorStore.SingleFileName), e.File);
        Assert.Contains("0 NaN and 1 infinite", e.Message);
        Assert.Contains("flat index 17", e.Message);
        using var g = ck.LoadGlobals(torch.ScalarType.Float64);
        FiniteWeights.RequireGlobals(ck, g); // the globals are finite: no exception
    }
}
