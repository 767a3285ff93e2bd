using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Llama;

/// <summary>config.json reading for llama / qwen2 / mistral: defaults and aliases as HF has them, and one clear error
/// naming the file for everything GaugeTorch does not compute; tying resolution against the stored tensors.</summary>
public class LlamaConfigTests
{
    private const string Source = "/models/x/config.json";

    /// <summary>A minimal valid config (the required keys only).</summary>
    private static JsonObject Minimal(string type = "llama") => new()
    {
        ["model_type"] = type, ["hidden_size"] = 64, ["intermediate_size"] = 96, ["num_hidden_layers"] = 2,
        ["num_attention_heads"] = 4, ["vocab_size"] = 50, ["rms_norm_eps"] = 1e-5,
    };

    private static ModelFormatException Fails(JsonObject o) => Assert.Throws<ModelFormatException>(() => LlamaConfig.FromJson(o, Source));

    [Fact]
    public void DefaultsFollowHf()
    {
        var c = LlamaConfig.FromJson(Minimal(), Source);
        Assert.Equal(4, c.NumKeyValueHeads);                 // num_key_value_heads absent: MHA
        Assert.Equal(16, c.HeadDim);                         // head_dim absent: d/H
        Assert.Equal(2048, c.MaxPositionEmbeddings);         // LlamaConfig's default
        Assert.Equal(new RopeSpec(10000), c.Rope);
        Assert.False(c.TieWordEmbeddings);
        Assert.False(c.QkvBias || c.OutBias || c.MlpBias);
        Assert.Null(c.SlidingWindow);
        Assert.Equal(32768, LlamaConfig.FromJson(Minimal("qwen2"), Source).MaxPositionEmbeddings);
        Assert.Equal(131072, LlamaConfig.FromJson(Minimal("mistral"), Source).MaxPositionEmbeddings);
    }

    [Fact]
    public void BiasesPerModelType()
    {
        var q = LlamaConfig.FromJson(Minimal("qwen2"), Source);
        Assert.True(q.QkvBias);
        Assert.False(q.OutBias || q.MlpBias);
        var o = Minimal();
        o["attention_bias"] = true;
        o["mlp_bias"] = true;
        var l = LlamaConfig.FromJson(o, Source);
        Assert.True(l.QkvBias && l.OutBias && l.MlpBias);
        var m = LlamaConfig.FromJson(Minimal("mistral"), Source);
        Assert.False(m.QkvBias || m.OutBias || m.MlpBias);
        var bad = Minimal("mistral");
        bad["attention_bias"] = true;
        Assert.Contains("attention_bias", Fails(bad).Message);
        var badQ = Minimal("qwen2");
        badQ["mlp_bias"] = true;
        Assert.Contains("mlp_bias", Fails(badQ).Message);
    }

    [Fact]
    public void HeadCountsAndHeadDim()
    {
        var o = Minimal();
        o["num_key_value_heads"] = 1;
        o["head_dim"] = 24;   // H·hd = 96 ≠ d = 64
        var c = LlamaConfig.FromJson(o, Source);
        Assert.Equal((1, 24), (c.NumKeyValueHeads, c.HeadDim));
        o["head_dim"] = null;   // JSON null means absent
        Assert.Equal(16, LlamaConfig.FromJson(o, Source).HeadDim);
    }

    public static TheoryData<string, string, string> BadConfigs => new()
    {
        // why, JSON edit (key=value; key=- removes), expected message part
        { "missing hidden_size", "hidden_size=-", "hidden_size missing" },
        { "missing intermediate_size", "intermediate_size=-", "intermediate_size missing" },
        { "missing num_hidden_layers", "num_hidden_layers=-", "num_hidden_layers missing" },
        { "missing num_attention_heads", "num_attention_heads=-", "num_attention_heads missing" },
        { "missing vocab_size", "vocab_size=-", "vocab_size missing" },
        { "missing rms_norm_eps", "rms_norm_eps=-", "rms_norm_eps missing" },
        { "heads not a multiple of KV heads", "num_key_value_heads=3", "not a multiple of num_key_value_heads (3)" },
        { "more KV heads than heads", "num_key_value_heads=8", "not a multiple of num_key_value_heads (8)" },
        { "zero KV heads", "num_key_value_heads=0", "num_key_value_heads must be positive" },
        { "odd head_dim", "head_dim=15", "head_dim (15) must be even" },
        { "d not divisible by H without head_dim", "num_attention_heads=6", "not divisible by num_attention_heads (6)" },
        { "hidden_act gelu", "hidden_act=\"gelu\"", "hidden_act 'gelu' is not supported" },
        { "size not an integer", "hidden_size=\"64\"", "hidden_size is not an integer" },
        { "yarn rope scaling", "rope_scaling={\"rope_type\":\"yarn\",\"factor\":4.0}", "rope_scaling type 'yarn' is not supported" },
        { "dynamic rope scaling (old 'type' key)", "rope_scaling={\"type\":\"dynamic\",\"factor\":2.0}", "rope_scaling type 'dynamic' is not supported" },
        { "longrope in rope_parameters", "rope_parameters={\"rope_type\":\"longrope\",\"rope_theta\":10000.0}", "rope_scaling type 'longrope' is not supported" },
        { "llama3 without its factors", "rope_scaling={\"rope_type\":\"llama3\",\"factor\":8.0}", "rope_scaling.low_freq_factor missing" },
        { "linear without factor", "rope_scaling={\"rope_type\":\"linear\"}", "rope_scaling.factor missing" },
        { "rope_theta in two places disagreeing", "rope_parameters={\"rope_type\":\"default\",\"rope_theta\":500000.0}|rope_theta=10000.0", "disagree" },
        { "partial rotary", "partial_rotary_factor=0.5", "partial_rotary_factor" },
        { "bad model_type", "model_type=\"gemma\"", "model_type 'gemma'" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public void BadConfigGivesOneClearErrorNamingTheFile(string why, string edits, string expected)
    {
        var o = Minimal();
        foreach (var edit in edits.Split('|'))
        {
            int eq = edit.IndexOf('=');
            string k = edit[..eq], v = edit[(eq + 1)..];
            if (v == "-") o.Remove(k);
            else o[k] = JsonNode.Parse(v);
        }
        var e = Fails(o);
        Assert.StartsWith(Source + ": ", e.Message);
        Assert.True(e.Message.Contains(expected), $"{why}: '{e.Message}' does not contain '{expected}'");
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void RopeForms()
    {
        var a = Minimal();
        a["rope_theta"] = 500000.0;
        a["rope_scaling"] = JsonNode.Parse("{\"rope_type\":\"llama3\",\"factor\":32.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}");
        var b = Minimal();
        b["rope_parameters"] = JsonNode.Parse("{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,\"factor\":32.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}");
        var c = Minimal();
        c["rope_theta"] = 500000;
        c["rope_scaling"] = JsonNode.Parse("{\"type\":\"llama3\",\"factor\":32,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}");
        var expected = LlamaConfig.Llama3Scaling(500000);
        Assert.Equal(expected, LlamaConfig.FromJson(a, Source).Rope);
        Assert.Equal(expected, LlamaConfig.FromJson(b, Source).Rope);
        Assert.Equal(expected, LlamaConfig.FromJson(c, Source).Rope);
        var d = Minimal();
        d["rope_parameters"] = JsonNode.Parse("{\"rope_type\":\"default\",\"rope_theta\":1000000.0}");
        Assert.Equal(new RopeSpec(1e6), LlamaConfig.FromJson(d, Source).Rope);
        var e = Minimal();
        e["rope_scaling"] = JsonNode.Parse("{\"type\":\"linear\",\"factor\":4.0}");
        Assert.Equal(new RopeSpec(10000, "linear", Factor: 4), LlamaConfig.FromJson(e, Source).Rope);
    }

    [Fact]
    public void SlidingWindow()
    {
        var m = Minimal("mistral");
        m["sliding_window"] = 4096;
        m["max_position_embeddings"] = 32768;
        Assert.Equal(4096, LlamaConfig.FromJson(m, Source).ContextLength);
        m["sliding_window"] = null;   // Mistral v0.2+: no window
        Assert.Equal(32768, LlamaConfig.FromJson(m, Source).ContextLength);
        var q = Minimal("qwen2");
        q["sliding_window"] = 1024;
        q["max_window_layers"] = 1;
        q["use_sliding_window"] = false;   // Qwen2's default: the window is not used
        Assert.Null(LlamaConfig.FromJson(q, Source).SlidingWindow);
        q["use_sliding_window"] = true;
        Assert.Equal(1024, LlamaConfig.FromJson(q, Source).SlidingWindow);
        q["max_window_layers"] = 2;   // no layer index ≥ 2: no layer slides
        Assert.Null(LlamaConfig.FromJson(q, Source).SlidingWindow);
    }

    [Theory]
    [InlineData("qwen2-0.5b", 494_032_768L)]
    [InlineData("llama-3.2-1b", 1_235_814_400L)]
    public void PresetsHaveThePublishedParameterCounts(string preset, long expected)
    {
        // GAUGE.md §6.2's table.
        var c = LlamaConfig.Presets[preset];
        Assert.Equal(expected, c.ParameterCount(tied: true));
        Assert.True(c.TieWordEmbeddings);
        var traits = new LlamaAdapter(c).Traits;
        Assert.Equal(expected, new LlamaAdapter(c).Parameters().Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b)));
        Assert.Equal(64, traits.HeadDim);
        // The written config.json reads back as the same configuration.
        Assert.Equal(c, LlamaConfig.FromJson(JsonNode.Parse(c.ToJsonText("bfloat16"))!.AsObject(), Source));
    }

    [Fact]
    public void PresetShapes()
    {
        var q = LlamaConfig.Presets["qwen2-0.5b"];
        Assert.Equal(("qwen2", 896, 24, 14, 2, 64, 4864, 151936, 1e6), (q.ModelType, q.HiddenSize, q.NumHiddenLayers, q.NumAttentionHeads, q.NumKeyValueHeads, q.HeadDim, q.IntermediateSize, q.VocabSize, q.Rope.Theta));
        Assert.True(q.QkvBias);
        var l = LlamaConfig.Presets["llama-3.2-1b"];
        Assert.Equal(("llama", 2048, 16, 32, 8, 64, 8192, 128256), (l.ModelType, l.HiddenSize, l.NumHiddenLayers, l.NumAttentionHeads, l.NumKeyValueHeads, l.HeadDim, l.IntermediateSize, l.VocabSize));
        Assert.Equal(LlamaConfig.Llama3Scaling(500000), l.Rope);
        Assert.Equal(new RopeSpec(500000, "llama3", 32, 1, 4, 8192), l.Rope);
    }

    [Fact]
    public void WrittenConfigHasTheKeysHfReads()
    {
        foreach (var type in LlamaConfig.ModelTypes)
        {
            var c = LlamaFixtures.Tiny with { ModelType = type, Rope = LlamaConfig.Llama3Scaling(500000) };
            var o = c.ToJson("float32");
            Assert.Equal(type, (string?)o["model_type"]);
            Assert.Equal(c.ArchitectureClass, (string?)o["architectures"]![0]);
            foreach (var k in new[] { "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
                         "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings", "hidden_act", "torch_dtype" })
                Assert.True(o.ContainsKey(k), $"{type}: {k} missing");
            Assert.Equal("llama3", (string?)o["rope_scaling"]!["rope_type"]);
            Assert.Equal(type == "llama", o.ContainsKey("attention_bias"));
            Assert.Equal(c, LlamaConfig.FromJson(o, Source));
        }
    }

    [Fact]
    public void TyingAgainstTheStoredTensors()
    {
        // tie_word_embeddings=true with a different lm_head: HF would ignore the stored head, so it is an error.
        string dir = LlamaFixtures.Copy("untied", "tie-conflict");
        LlamaFixtures.EditConfig(dir, o => o["tie_word_embeddings"] = true);
        var e = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir).Dispose());
        Assert.Contains("tie_word_embeddings=true", e.Message);
        Assert.Contains(LlamaKeys.LmHead, e.Message);
        Assert.Contains(Path.Combine(dir, SafeTensorStore.SingleFileName), e.Message);

        // tie_word_embeddings=false without a head.
        string tied = LlamaFixtures.Copy("tied", "untie-no-head");
        LlamaFixtures.EditConfig(tied, o => o["tie_word_embeddings"] = false);
        Assert.Contains("no lm_head.weight", Assert.Throws<ModelFormatException>(() => Checkpoint.Open(tied).Dispose()).Message);

        // tie_word_embeddings=false with a head equal to the embedding: the config decides (separate parameters).
        string copy = LlamaFixtures.Copy("tied-copy", "untie-copy");
        LlamaFixtures.EditConfig(copy, o => o["tie_word_embeddings"] = false);
        using (var ck = Checkpoint.Open(copy)) Assert.False(ck.Tied);
        using (var ck = Checkpoint.Open(LlamaFixtures.Get("tied-copy"))) Assert.True(ck.Tied && ck.HasHeadTensor);
    }

    [Fact]
    public void CliReportsAnUnsupportedRopeTypeInOneLine()
    {
        string dir = LlamaFixtures.Copy("gqa", "yarn");
        LlamaFixtures.EditConfig(dir, o => o["rope_scaling"] = JsonNode.Parse("{\"rope_type\":\"yarn\",\"factor\":4.0,\"original_max_position_embeddings\":32}"));
        var (code, stdout, stderr) = CliRunner.Run("inspect", dir);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.Contains(Path.Combine(dir, "config.json"), lines[0]);
        Assert.Contains("'yarn'", lines[0]);
    }
}
