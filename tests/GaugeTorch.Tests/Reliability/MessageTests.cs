using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Reliability;

/// <summary>Issue 11, item 10: option values and messages. Each case quotes what the old code said or did.</summary>
public class MessageTests
{
    private static string Tiny() => TestCheckpoints.Get("messages-tiny", options: new MakeCheckpointOptions { Seed = 101 });

    private static string OneErrorLine((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 2, $"exit {r.Code}: {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("gaugetorch: error: ", lines[0]);
        return lines[0];
    }

    [Fact]
    public void NegativeMaxTokensIsRefused()
    {
        // Old: accepted, and the run went ahead.
        var line = OneErrorLine(CliRunner.Run("verify-invariance", Tiny(), "--max-tokens", "-3", "--tokens", "1,2,3"));
        Assert.Contains("--max-tokens: -3", line);
    }

    [Fact]
    public void EmptyPromptBlamesPrompt()
    {
        // Old: "--text: the text encodes to no tokens" for generate --prompt ''.
        var line = OneErrorLine(CliRunner.Run("generate", "--prompt", ""));
        Assert.Contains("--prompt: the text encodes to no tokens", line);
        Assert.DoesNotContain("--text", line);
        Assert.Contains("--text: the text encodes to no tokens", OneErrorLine(CliRunner.Run("generate", "--text", "")));
    }

    [Theory]
    [InlineData("verify-invariance", "--tolerance", "abc", "'abc' is not a number")]
    [InlineData("compare", "--tolerance", "abc", "'abc' is not a number")]
    [InlineData("verify-invariance", "--transforms", "2.5", "'2.5' is not an integer")]
    [InlineData("make-checkpoint", "--layers", "x", "'x' is not an integer")]
    public void UnparsableNumbersAreSaidInWords(string command, string option, string value, string expected)
    {
        // Old: "Cannot parse argument 'abc' for option '--tolerance' as expected type 'System.Nullable`1[System.Double]'".
        string[] args = command == "compare" ? [command, Tiny(), Tiny(), option, value] : [command, option, value];
        var r = CliRunner.Run(args);
        Assert.Equal(2, r.Code);
        Assert.Contains($"gaugetorch: error: {option}: {expected}", r.Err);
        Assert.DoesNotContain("System.", r.Err);
    }

    [Fact]
    public void MissingConfigNamesTheDirectoryOnce()
    {
        // Old: "config.json: config.json not found".
        string dir = DamagedCheckpoints.CopyOf(Tiny(), "messages-noconfig");
        File.Delete(Path.Combine(dir, "config.json"));
        var line = OneErrorLine(CliRunner.Run("inspect", dir));
        Assert.Contains($"{dir}: no config.json", line);
        Assert.DoesNotContain("config.json: config.json", line);
    }

    [Fact]
    public void ConfigWithoutShapesSaysWhatIsMissing()
    {
        // Old: {"model_type":"gpt2"} silently took GPT-2-124M's sizes and ended in a 148-line shape error.
        string dir = DamagedCheckpoints.CopyOf(Tiny(), "messages-bareconfig");
        File.WriteAllText(Path.Combine(dir, "config.json"), "{\"model_type\":\"gpt2\"}");
        var r = CliRunner.Run("inspect", dir);
        var line = OneErrorLine(r);
        Assert.Contains("vocab_size, n_embd, n_layer, n_head, n_positions missing", line);
        Assert.True(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length == 1, r.Err);
    }

    [Fact]
    public void BuiltInTextOnASmallVocabularyIsFoldedAndSaid()
    {
        // Old: verify-invariance failed with "token ... outside this model's vocabulary"; canonicalize folded ids mod V
        // and still said "83 tokens of the built-in text".
        string json = Path.Combine(TestCheckpoints.NewTempDir("messages-fold"), "v.json");
        var v = CliRunner.Run("verify-invariance", Tiny(), "--transforms", "1", "--families", "qk", "--no-controls", "--json", json);
        Assert.True(v.Code == 0, v.Err);
        Assert.Contains("folded into the vocabulary of 97 (id mod 97)", v.Out);
        Assert.Contains("id mod 97", JsonNode.Parse(File.ReadAllText(json))!["text"]!.GetValue<string>());

        string outDir = Path.Combine(TestCheckpoints.NewTempDir("messages-fold-canon"), "c");
        var c = CliRunner.Run("canonicalize-checkpoint", Tiny(), "--out", outDir);
        Assert.True(c.Code == 0, c.Err);
        Assert.Contains("id mod 97", c.Out);
    }

    [Fact]
    public void InspectNoValidateShowsTheTableAndTheProblems()
    {
        // Old: inspect refused a checkpoint that fails validation, exactly when its tensor table is needed.
        string dir = DamagedCheckpoints.CopyOf(Tiny(), "messages-novalidate");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        cfg["n_layer"] = 3; // the weights have 2 layers
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        Assert.Equal(2, CliRunner.Run("inspect", dir).Code);
        var (code, stdout, err) = CliRunner.Run("inspect", dir, "--no-validate");
        Assert.True(code == 0, err);
        Assert.Contains("h.1.mlp.c_fc.weight", stdout);
        Assert.Contains("missing tensor 'h.2.ln_1.weight'", stdout);
        var (jcode, json, jerr) = CliRunner.Run("inspect", dir, "--no-validate", "--json", "-");
        Assert.True(jcode == 0, jerr);
        var o = JsonNode.Parse(json)!;
        Assert.False(o["validated"]!.GetValue<bool>());
        Assert.Contains(o["problems"]!.AsArray(), p => p!.GetValue<string>().Contains("h.2."));
        Assert.Contains(o["tensors"]!.AsArray(), t => t!["name"]!.GetValue<string>() == "wte.weight");
    }

    [Fact]
    public void TransformWritesNoInputPathAndTheSameBytesFromAnyDirectory()
    {
        // Old: gaugetorch_source held the absolute input path, so the same seed gave different bytes elsewhere.
        string a = DamagedCheckpoints.CopyOf(Tiny(), "messages-src-a");
        string b = DamagedCheckpoints.CopyOf(Tiny(), "messages-src-b");
        string root = TestCheckpoints.NewTempDir("messages-transform");
        Assert.Equal(0, CliRunner.Run("transform", a, "--out", Path.Combine(root, "a"), "--seed", "3").Code);
        Assert.Equal(0, CliRunner.Run("transform", b, "--out", Path.Combine(root, "b"), "--seed", "3").Code);
        byte[] ba = File.ReadAllBytes(Path.Combine(root, "a", SafeTensorStore.SingleFileName));
        Assert.Equal(ba, File.ReadAllBytes(Path.Combine(root, "b", SafeTensorStore.SingleFileName)));
        using var f = SafeTensorFile.Open(Path.Combine(root, "a", SafeTensorStore.SingleFileName));
        Assert.DoesNotContain(f.Metadata.Values, v => v.Contains(a) || v.Contains(Path.GetTempPath().TrimEnd('/')));
    }
}
