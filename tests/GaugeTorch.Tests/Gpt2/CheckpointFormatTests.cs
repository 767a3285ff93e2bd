using System.Diagnostics;
using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;

namespace GaugeTorch.Tests.Gpt2;

/// <summary>Tokenizer, unsupported configurations, malformed checkpoints, and flat memory over repeated forwards.</summary>
public class CheckpointFormatTests(ITestOutputHelper output)
{
    [Fact]
    public void TokenizerGivesGpt2Ids()
    {
        Assert.Equal([15496, 11, 616, 3290, 318, 13779], Gpt2Tokenizer.Encode("Hello, my dog is cute"));
        Assert.Equal("Hello, my dog is cute", Gpt2Tokenizer.Decode([15496, 11, 616, 3290, 318, 13779]));
    }

    /// <summary>A private copy of a tiny checkpoint that a test may damage.</summary>
    private static string CopyOf(string name, MakeCheckpointOptions? options = null)
    {
        string src = TestCheckpoints.Get(name, options: options);
        string dir = TestCheckpoints.NewTempDir("fmt");
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static void EditConfig(string dir, Action<JsonObject> edit)
    {
        string p = Path.Combine(dir, "config.json");
        var o = JsonNode.Parse(File.ReadAllText(p))!.AsObject();
        edit(o);
        File.WriteAllText(p, o.ToJsonString());
    }

    [Theory]
    [InlineData("activation_function", "gelu", "activation_function 'gelu'")]
    [InlineData("activation_function", "relu", "activation_function 'relu'")]
    [InlineData("model_type", "gpt_neo", "model_type 'gpt_neo'")]
    [InlineData("model_type", "gpt2-xl", "model_type 'gpt2-xl'")]
    public void UnsupportedConfigurationIsAClearError(string key, string value, string fragment)
    {
        string dir = CopyOf("fmt-base");
        EditConfig(dir, o => o[key] = value);
        var ex = Assert.Throws<Gpt2FormatException>(() => Gpt2Checkpoint.Open(dir).Dispose());
        Assert.Contains(Path.Combine(dir, "config.json"), ex.Message);
        Assert.Contains(fragment, ex.Message);
        Assert.Contains("not supported", ex.Message);
    }

    [Fact]
    public void ConfigDisagreeingWithTheWeightsIsAClearError()
    {
        string dir = CopyOf("fmt-base");
        EditConfig(dir, o => o["n_embd"] = 36); // still divisible by n_head=4, but every shape is now wrong
        var ex = Assert.Throws<Gpt2FormatException>(() => Gpt2Checkpoint.Open(dir).Dispose());
        Assert.Contains("'wte.weight' has shape [97, 32], expected [97, 36]", ex.Message);
    }

    [Fact]
    public void MissingUnexpectedAndWronglyShapedTensorsAreListedInOneError()
    {
        string dir = CopyOf("fmt-base");
        string file = Path.Combine(dir, SafeTensorStore.SingleFileName);
        var kept = new List<KeyValuePair<string, torch.Tensor>>();
        using (var store = SafeTensorStore.Open(file))
        {
            foreach (var e in store.Entries)
            {
                if (e.Name is "h.1.mlp.c_fc.bias" or "ln_f.weight") continue;                        // missing
                var t = store.Load(e.Name);
                if (e.Name == "h.0.attn.c_attn.weight") t = t.t().contiguous();                       // [3d, d]: Linear layout, not Conv1D
                kept.Add(new(e.Name, t));
            }
            kept.Add(new("h.0.attn.rotary.inv_freq", torch.ones(4)));                              // unexpected
            kept.Add(new("h.2.ln_1.weight", torch.ones(32)));                                     // a layer the config lacks
        }
        File.Delete(file);
        try
        {
            SafeTensorWriter.WriteAll(file, kept, null);
        }
        finally
        {
            foreach (var kv in kept) kv.Value.Dispose();
        }
        var ex = Assert.Throws<Gpt2FormatException>(() => Gpt2Checkpoint.Open(dir).Dispose());
        output.WriteLine(ex.Message);
        Assert.Contains(file, ex.Message);
        Assert.Contains("missing tensor 'h.1.mlp.c_fc.bias'", ex.Message);
        Assert.Contains("missing tensor 'ln_f.weight'", ex.Message);
        Assert.Contains("unexpected tensor 'h.0.attn.rotary.inv_freq'", ex.Message);
        Assert.Contains("unexpected tensor 'h.2.ln_1.weight'", ex.Message);
        Assert.Contains("'h.0.attn.c_attn.weight' has shape [96, 32], expected [32, 96]", ex.Message);
        Assert.Contains("5 problem(s)", ex.Message);
    }

    [Fact]
    public void UntiedConfigWithoutHeadIsAnError()
    {
        string dir = CopyOf("fmt-base");
        EditConfig(dir, o => o["tie_word_embeddings"] = false);
        var ex = Assert.Throws<Gpt2FormatException>(() => Gpt2Checkpoint.Open(dir).Dispose());
        Assert.Contains("lm_head.weight", ex.Message);
    }

    [Fact]
    public void StoredHeadEqualToWteIsTied()
    {
        // Some exports store lm_head.weight as a copy of wte: that is still a tied model.
        string dir = CopyOf("fmt-base");
        string file = Path.Combine(dir, SafeTensorStore.SingleFileName);
        var all = new List<KeyValuePair<string, torch.Tensor>>();
        using (var store = SafeTensorStore.Open(file))
        {
            foreach (var e in store.Entries) all.Add(new(e.Name, store.Load(e.Name)));
            all.Add(new(Gpt2Keys.LmHead, store.Load(Gpt2Keys.Wte)));
        }
        File.Delete(file);
        try
        {
            SafeTensorWriter.WriteAll(file, all, null);
        }
        finally
        {
            foreach (var kv in all) kv.Value.Dispose();
        }
        using var ck = Gpt2Checkpoint.Open(dir);
        Assert.True(ck.Tied);
        Assert.True(ck.HasLmHeadTensor);
    }

    [Fact]
    public void MemoryStaysFlatOverRepeatedForwards()
    {
        using var ck = Gpt2Checkpoint.Open(TestCheckpoints.Get("fmt-mem", new Gpt2Config { NLayer = 2, NEmbd = 64, NHead = 4, NInner = 256, VocabSize = 2048, NPositions = 64 }, new MakeCheckpointOptions { Seed = 4 }));
        foreach (var dtype in new[] { torch.ScalarType.Float64, torch.ScalarType.Float32 })
        {
            using var m = Gpt2Model.Load(ck, dtype);
            int[] tokens = Enumerable.Range(0, 64).Select(i => (i * 37) % 2048).ToArray();
            // Warm up (the native allocator and thread pools grow a few MiB on first use), then measure.
            for (int i = 0; i < 50; i++) m.Logits(tokens).Dispose();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            long liveBefore = torch.Tensor.TotalCount;
            long rssBefore = Rss();
            for (int i = 0; i < 50; i++)
            {
                using var logits = m.Logits(tokens);
                Assert.Equal(64 * 2048, logits.numel());
            }
            GC.Collect();
            GC.WaitForPendingFinalizers();
            long liveAfter = torch.Tensor.TotalCount;
            long rssAfter = Rss();
            output.WriteLine($"{dtype}: live tensors {liveBefore} → {liveAfter}, RSS {rssBefore >> 20} → {rssAfter >> 20} MiB over 50 forwards (one forward allocates {64 * 2048 * (dtype == torch.ScalarType.Float64 ? 8 : 4) >> 10} KiB of logits)");
            Assert.Equal(liveBefore, liveAfter);
            // 50 leaked logits tensors alone would be 25-50 MiB (measured: flat within ±10 MiB of noise over 400 forwards).
            Assert.True(rssAfter - rssBefore < 20L << 20, $"RSS grew by {(rssAfter - rssBefore) >> 20} MiB");
        }
    }

    private static long Rss()
    {
        using var p = Process.GetCurrentProcess();
        p.Refresh();
        return p.WorkingSet64;
    }
}
