using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using GaugeTorch.Text;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Llama;

/// <summary>
/// The commands on llama / qwen2 / mistral checkpoints: make-checkpoint --arch with its options and presets, inspect,
/// logits and generate (token ids, and text through a tokenizer.json written by the test), tokenizer round trips, the
/// error without a tokenizer, and GPT-2's generate unchanged.
/// </summary>
public class LlamaCliTests(ITestOutputHelper output)
{
    private static string[] Lines(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static void AssertOneLineError((int Code, string Out, string Err) r, string why, params string[] contains)
    {
        Assert.True(r.Code == 2, $"{why}: exit {r.Code}, stderr {r.Err}");
        Assert.True(Lines(r.Err).Length == 1, $"{why}: stderr has {Lines(r.Err).Length} lines:\n{r.Err}");
        Assert.StartsWith("gaugetorch: error: ", r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.Equal("", r.Out);
        foreach (var c in contains) Assert.True(r.Err.Contains(c), $"{why}: '{r.Err.Trim()}' lacks '{c}'");
    }

    private static double[] Doubles(Tensor t)
    {
        using var d = t.to_type(ScalarType.Float64).contiguous();
        return d.data<double>().ToArray();
    }

    /// <summary>A copy of fixture <paramref name="variant"/> with the test's byte-level BPE tokenizer.json.</summary>
    private static string WithTokenizer(string variant)
    {
        string dir = LlamaFixtures.Copy(variant, "tok");
        TestTokenizers.Write(dir, TestTokenizers.ByteLevelBpe);
        return dir;
    }

    private static List<int> Greedy(ICausalLanguageModel m, IEnumerable<int> prompt, int n)
    {
        var ids = prompt.ToList();
        for (int i = 0; i < n; i++)
        {
            using var l = m.Logits(ids);
            ids.Add((int)l[-1].argmax().item<long>());
        }
        return ids;
    }

    [Fact]
    public void MakeCheckpointWithArchitectureOptions()
    {
        string dir = Path.Combine(TestCheckpoints.NewTempDir("mk"), "m");
        var r = CliRunner.Run("make-checkpoint", "--arch", "mistral", "--out", dir, "--layers", "1", "--embd", "32", "--heads", "4", "--kv-heads", "1",
            "--head-dim", "12", "--inner", "40", "--vocab", "50", "--positions", "64", "--tied", "--rope-scaling", "llama3", "--seed", "9", "--dtype", "bf16", "--buffers");
        Assert.True(r.Code == 0, r.Err);
        var cfg = Checkpoint.ReadConfig(Path.Combine(dir, "config.json"));
        Assert.Equal("mistral", (string?)cfg["model_type"]);
        Assert.Equal("MistralForCausalLM", (string?)cfg["architectures"]![0]);
        Assert.Equal((1, 32, 4, 1, 12, 40, 50, 64), ((int)cfg["num_hidden_layers"]!, (int)cfg["hidden_size"]!, (int)cfg["num_attention_heads"]!,
            (int)cfg["num_key_value_heads"]!, (int)cfg["head_dim"]!, (int)cfg["intermediate_size"]!, (int)cfg["vocab_size"]!, (int)cfg["max_position_embeddings"]!));
        Assert.True((bool)cfg["tie_word_embeddings"]!);
        Assert.Equal("llama3", (string?)cfg["rope_scaling"]!["rope_type"]);
        Assert.Equal("bfloat16", (string?)cfg["torch_dtype"]);
        using var ck = Checkpoint.Open(dir);
        Assert.True(ck.Tied);
        Assert.Equal(DType.BF16, ck.StorageDType);
        Assert.Single(ck.IgnoredBuffers);
        Assert.Equal(LlamaConfig.Llama3Scaling(10000), ck.Traits.Rope);
        Assert.Equal(new[] { "config.json", "model.safetensors" }, Directory.GetFiles(dir).Select(Path.GetFileName).Order());   // no temp files left
    }

    [Fact]
    public void MakeCheckpointPresetsAndSharding()
    {
        // The qwen2-0.5b preset's shapes with one layer and a small vocabulary (the full preset is 494 M parameters).
        string dir = Path.Combine(TestCheckpoints.NewTempDir("mk"), "q");
        var r = CliRunner.Run("make-checkpoint", "--preset", "qwen2-0.5b", "--layers", "1", "--vocab", "256", "--dtype", "bf16", "--shards", "2", "--out", dir);
        Assert.True(r.Code == 0, r.Err);
        using var ck = Checkpoint.Open(dir);
        var t = ck.Traits;
        Assert.Equal(("qwen2", 896, 14, 2, 64, 4864, true, true, false), (t.Architecture, t.Hidden, t.QueryHeads, t.KvHeads, t.HeadDim, t.Inner, t.Tied, t.QkvBias, t.OutBias));
        Assert.Equal(1e6, t.Rope!.Theta);
        Assert.Equal(3, ck.Store.SourcePaths.Count());   // index + 2 shards
        Assert.Equal(LlamaConfig.Presets["qwen2-0.5b"] with { NumHiddenLayers = 1, VocabSize = 256 }, ((LlamaAdapter)ck.Architecture).Config);
    }

    public static TheoryData<string, string[], string> MakeFailures => new()
    {
        { "kv heads on gpt2", ["--kv-heads", "2"], "--kv-heads applies to" },
        { "head dim on gpt2", ["--arch", "gpt2", "--head-dim", "8"], "--head-dim applies to" },
        { "tied and untied", ["--arch", "llama", "--tied", "--untied"], "not both" },
        { "preset of another arch", ["--arch", "llama", "--preset", "qwen2-0.5b"], "qwen2 model" },
        { "gpt2 preset with llama", ["--arch", "qwen2", "--preset", "gpt2"], "gpt2 model" },
        { "unknown arch", ["--arch", "gemma"], "'gemma'" },
        { "unknown preset", ["--preset", "llama-70b"], "'llama-70b'" },
        { "bad kv heads", ["--arch", "llama", "--kv-heads", "3"], "num_key_value_heads (3)" },
        { "bad rope scaling", ["--arch", "llama", "--rope-scaling", "yarn"], "'yarn'" },
        { "prefix on llama", ["--arch", "llama", "--prefix"], "--prefix" },
    };

    [Theory]
    [MemberData(nameof(MakeFailures))]
    public void MakeCheckpointFailuresGiveOneLineAndNoOutput(string why, string[] args, string expected)
    {
        string parent = TestCheckpoints.NewTempDir("mk-fail");
        string dir = Path.Combine(parent, "m");
        AssertOneLineError(CliRunner.Run(["make-checkpoint", "--out", dir, .. args]), why, expected);
        Assert.Empty(Directory.GetFileSystemEntries(parent));
    }

    [Fact]
    public void MakeCheckpointRefusesANonEmptyDirectory()
    {
        string dir = TestCheckpoints.NewTempDir("mk-full");
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "keep");
        AssertOneLineError(CliRunner.Run("make-checkpoint", "--arch", "llama", "--out", dir), "non-empty", "not empty");
        Assert.Equal(new[] { "notes.txt" }, Directory.GetFiles(dir).Select(Path.GetFileName));
    }

    [Fact]
    public void InspectJson()
    {
        string dir = LlamaFixtures.Get("inv-freq");
        var r = CliRunner.Run("inspect", dir, "--json", "-");
        Assert.True(r.Code == 0, r.Err);
        var o = JsonNode.Parse(r.Out)!.AsObject();
        Assert.Equal("llama", (string?)o["architecture"]);
        Assert.Equal(LlamaFixtures.Tiny.ParameterCount(tied: false), (long)o["parameters"]!);
        Assert.False((bool)o["tied"]!);
        Assert.Equal(LlamaFixtures.Tiny.NumHiddenLayers, o["ignored_buffers"]!.AsArray().Count);
        Assert.Equal(2, (int)o["config"]!["num_key_value_heads"]!);
        var table = CliRunner.Run("inspect", dir);
        Assert.True(table.Code == 0, table.Err);
        Assert.Contains("2 / 32 / 4 / 2 / 8", table.Out);
    }

    [Theory]
    [InlineData("gqa", "float64")]
    [InlineData("qwen2", "float32")]
    [InlineData("sharded", "float64")]
    public void LogitsWithTokensEqualTheModule(string variant, string dtype)
    {
        string dir = LlamaFixtures.Get(variant);
        string outFile = Path.Combine(TestCheckpoints.NewTempDir("ll-logits"), "l.safetensors");
        var r = CliRunner.Run("logits", dir, "--tokens", "5,0,60,17,3", "--dtype", dtype, "--out", outFile);
        Assert.True(r.Code == 0, r.Err);
        var dt = CliCommonDType(dtype);
        using var ck = Checkpoint.Open(dir);
        using var m = LlamaModel.Load(ck, dt);
        using var expected = m.Logits([5, 0, 60, 17, 3]);
        using var f = SafeTensorFile.Open(outFile);
        Assert.Equal(new long[] { 5, 61 }, f["logits"].Shape);
        using var got = f.Load("logits", ScalarType.Float64);
        Assert.Equal(Doubles(expected), Doubles(got));   // bit-exact: same module, same dtype
    }

    private static ScalarType CliCommonDType(string s) => s == "float64" ? ScalarType.Float64 : ScalarType.Float32;

    [Fact]
    public void TextUsesTheDirectorysTokenizerJson()
    {
        string dir = WithTokenizer("gqa");
        string outFile = Path.Combine(TestCheckpoints.NewTempDir("ll-text"), "l.safetensors");
        var r = CliRunner.Run("logits", dir, "--text", "hello world", "--out", outFile);
        Assert.True(r.Code == 0, r.Err);
        using var f = SafeTensorFile.Open(outFile);
        using (var t = f.Load("tokens")) Assert.Equal(TestTokenizers.HelloWorld.Select(i => (long)i), t.data<long>().ToArray());
        using var ck = Checkpoint.Open(dir);
        using var m = LlamaModel.Load(ck, ScalarType.Float64);
        using var expected = m.Logits(TestTokenizers.HelloWorld);
        using var got = f.Load("logits", ScalarType.Float64);
        Assert.Equal(Doubles(expected), Doubles(got));
    }

    [Fact]
    public void GenerateGreedyWithTextAndWithTokens()
    {
        // A word-level tokenizer covering the whole vocabulary, so every generated id shows in the text.
        string dir = LlamaFixtures.Copy("tied", "tok-words");
        TestTokenizers.Write(dir, TestTokenizers.Words(61));
        using var ck = Checkpoint.Open(dir);
        using var m = LanguageModels.Load(ck, ScalarType.Float32);
        using var tok = HfTokenizer.Open(Path.Combine(dir, "tokenizer.json"));
        Assert.Equal(new[] { 7, 42 }, tok.Encode("w7 w42"));
        var ids = Greedy(m, [7, 42], 6);
        var text = CliRunner.Run("generate", dir, "--prompt", "w7 w42", "--max-new-tokens", "6");
        Assert.True(text.Code == 0, text.Err);
        Assert.Equal(string.Join(" ", ids.Select(i => $"w{i}")), text.Out.TrimEnd('\n'));
        output.WriteLine($"generate: {string.Join(",", ids)} → '{text.Out.TrimEnd()}'");

        string bare = LlamaFixtures.Get("tied");
        var byIds = CliRunner.Run("generate", bare, "--tokens", "3,1,4", "--max-new-tokens", "5", "--dtype", "float32");
        Assert.True(byIds.Code == 0, byIds.Err);
        Assert.Equal(string.Join(",", Greedy(m, [3, 1, 4], 5)), byIds.Out.Trim());
    }

    [Fact]
    public void WithoutATokenizerTextAsksForTokens()
    {
        string dir = LlamaFixtures.Get("gqa");
        string outDir = TestCheckpoints.NewTempDir("ll-notok");
        AssertOneLineError(CliRunner.Run("logits", dir, "--text", "hello", "--out", Path.Combine(outDir, "l.safetensors")), "logits --text", "--tokens", "tokenizer.json");
        AssertOneLineError(CliRunner.Run("logits", dir, "--out", Path.Combine(outDir, "l.safetensors")), "logits without input", "--tokens");
        AssertOneLineError(CliRunner.Run("generate", dir, "--prompt", "hello"), "generate --prompt", "--tokens", "tokenizer.json");
        AssertOneLineError(CliRunner.Run("generate", dir), "generate without input", "--prompt", "--tokens");
        Assert.Empty(Directory.GetFileSystemEntries(outDir));
    }

    [Fact]
    public void TokensBeyondTheContextOrVocabularyAreRefused()
    {
        string dir = LlamaFixtures.Get("mistral-window");   // sliding window 24
        string outDir = TestCheckpoints.NewTempDir("ll-long");
        AssertOneLineError(CliRunner.Run("logits", dir, "--tokens", string.Join(",", Enumerable.Repeat("1", 25)), "--out", Path.Combine(outDir, "l.safetensors")), "too long", "24 positions");
        AssertOneLineError(CliRunner.Run("logits", dir, "--tokens", "1,61", "--out", Path.Combine(outDir, "l.safetensors")), "vocab", "61");
        Assert.Empty(Directory.GetFileSystemEntries(outDir));
    }

    [Fact]
    public void TokenizerRoundTrips()
    {
        string dir = TestCheckpoints.NewTempDir("tok");
        using (var bpe = HfTokenizer.Open(TestTokenizers.Write(dir, TestTokenizers.ByteLevelBpe)))
        {
            Assert.Equal(TestTokenizers.HelloWorld, bpe.Encode("hello world"));
            Assert.Equal("hello world", bpe.Decode(TestTokenizers.HelloWorld));   // the special BOS is skipped
            foreach (var s in new[] { "hello", "world hello", "held, owl" })
                Assert.Equal(s.Replace(",", ""), bpe.Decode(bpe.Encode(s)));        // ',' is not in this vocabulary
        }
        string dir2 = TestCheckpoints.NewTempDir("tok");
        using (var words = HfTokenizer.Open(TestTokenizers.Write(dir2, TestTokenizers.WordLevel)))
        {
            Assert.Equal(new[] { 1, 2, 3, 4, 1, 5 }, words.Encode("The cat sat on the mat"));
            Assert.Equal("the cat sat on the mat", words.Decode([1, 2, 3, 4, 1, 5]));
            Assert.Equal(new[] { 1, 0 }, words.Encode("the dog"));
        }
        string dir3 = TestCheckpoints.NewTempDir("tok");
        using (var sp = HfTokenizer.Open(TestTokenizers.Write(dir3, TestTokenizers.MetaspaceBpe)))
        {
            Assert.Equal(new[] { 0, 13, 18 }, sp.Encode("hello world"));
            Assert.Equal("hello world", sp.Decode([0, 13, 18]));
            Assert.Equal("world", sp.Decode([18]));   // the continuation alone loses its leading space
        }
        string bad = TestCheckpoints.NewTempDir("tok");
        string path = Path.Combine(bad, "tokenizer.json");
        File.WriteAllText(path, "{\"model\": {\"type\": \"NoSuchModel\"}}");
        var e = Assert.Throws<ModelFormatException>(() => HfTokenizer.Open(path).Dispose());
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Gpt2GenerateIsUnchanged()
    {
        // The tiny GPT-2 with the full vocabulary: prompt as typed plus the decoded greedy continuation, as before.
        string model = TestCheckpoints.Get("cli-v50257", TestCheckpoints.Tiny with { VocabSize = 50257 }, new MakeCheckpointOptions { Seed = 41 });
        var r = CliRunner.Run("generate", model, "--prompt", "Hello, my dog", "--max-new-tokens", "4");
        Assert.True(r.Code == 0, r.Err);
        using var ck = Gpt2Checkpoint.Open(model);
        using var m = Gpt2Model.Load(ck, ScalarType.Float32);
        var prompt = Gpt2Tokenizer.Encode("Hello, my dog");
        var ids = Greedy(m, prompt, 4);
        Assert.Equal("Hello, my dog" + Gpt2Tokenizer.Decode(ids.Skip(prompt.Length)), r.Out.TrimEnd('\n'));
    }
}
