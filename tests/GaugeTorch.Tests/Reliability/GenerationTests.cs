using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Reliability;

/// <summary>
/// Issue 11, item 3: generate with a key/value cache. Before the fix every step ran a full forward pass and kept the
/// whole [T, V] logits alive through an undisposed view (logits[-1]), so memory grew quadratically: 1.3 GB for 100
/// tokens of the 6.8M demo model. The CLI tests below ran against that code fail (peak RSS, no stop message, one
/// write of the whole text); the library tests pin the cache's arithmetic to the full forward pass.
/// </summary>
public class GenerationTests
{
    private static string Tiny64() => TestCheckpoints.Get("gen-tiny-f64", options: new MakeCheckpointOptions { Seed = 71, DType = GaugeTorch.SafeTensors.DType.F64 });

    /// <summary>The old algorithm: a full forward over the whole sequence per token, argmax of the last row.</summary>
    private static List<int> Uncached(Gpt2Model m, int[] prompt, int n)
    {
        var ids = prompt.ToList();
        var outp = new List<int>();
        for (int i = 0; i < n; i++)
        {
            using var scope = NewDisposeScope();
            var logits = m.Logits(ids);
            int next = (int)logits[-1].argmax().item<long>();
            ids.Add(next);
            outp.Add(next);
        }
        return outp;
    }

    [Fact]
    public void CachedLogitsEqualTheFullForwardAtEveryPosition()
    {
        using var ck = Gpt2Checkpoint.Open(Tiny64());
        using var m = Gpt2Model.Load(ck, ScalarType.Float64);
        int[] seq = [5, 9, 77, 31, 2, 64, 18, 40, 11, 3, 90, 14];
        using var full = m.Logits(seq);                       // [T, V]
        using var cache = m.NewCache();
        // A prompt of 4 at once (the prefill path, T > 1 with a mask), then one token at a time.
        using (var first = m.NextLogits(tensor(seq[..4].Select(i => (long)i).ToArray()), cache))
            AssertClose(full[3], first, "prefill");
        for (int p = 4; p < seq.Length; p++)
        {
            using var step = m.NextLogits(tensor(new long[] { seq[p] }), cache);
            AssertClose(full[p], step, $"position {p}");
        }
        Assert.Equal(seq.Length, cache.Length);
        // Going back two positions and feeding the same token again gives the same logits.
        cache.Truncate(seq.Length - 2);
        using (var again = m.NextLogits(tensor(new long[] { seq[^2] }), cache))
            AssertClose(full[seq.Length - 2], again, "after Truncate");
    }

    private static void AssertClose(Tensor expected, Tensor actual, string where)
    {
        using var scope = NewDisposeScope();
        double err = (expected - actual).abs().max().item<double>() / expected.abs().max().item<double>();
        Assert.True(err < 1e-12, $"{where}: relative difference {err:E2}");
    }

    [Fact]
    public void GreedyTokensAreTheUncachedOnesAndStopAtTheContext()
    {
        using var ck = Gpt2Checkpoint.Open(Tiny64());
        using var m = Gpt2Model.Load(ck, ScalarType.Float64);
        int[] prompt = [5, 9, 77];
        var cached = m.GenerateGreedy(prompt, 20).ToList();
        Assert.Equal(Uncached(m, prompt, 20), cached);
        // P = 32: a 30-token prompt leaves room for 2.
        var longPrompt = Enumerable.Range(0, 30).Select(i => i % 97).ToArray();
        Assert.Equal(2, m.GenerateGreedy(longPrompt, 10).Count());
        Assert.Empty(m.GenerateGreedy(Enumerable.Range(0, 32).ToArray(), 10));
        Assert.Throws<ArgumentException>(() => m.GenerateGreedy(Enumerable.Range(0, 33).Select(i => i % 97).ToArray(), 1));
    }

    [Fact]
    public void NoTensorOutlivesAStep()
    {
        using var ck = Gpt2Checkpoint.Open(Tiny64());
        using var m = Gpt2Model.Load(ck, ScalarType.Float64);
        _ = m.GenerateGreedy([1, 2], 3).ToList(); // warm-up
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var tokens = m.GenerateGreedy([1, 2], 25).ToList();
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Assert.Equal(25, tokens.Count);
        Assert.Equal(before, after);
    }

    [Fact]
    public void StreamingDecoderHoldsBackSplitCharactersAndEndsWithTheWholeText()
    {
        // "é€" is 2 + 3 UTF-8 bytes; GPT-2's BPE splits such text into byte tokens.
        const string text = "café € naïve 😀 end";
        var ids = Gpt2Tokenizer.Encode(text);
        var d = new GaugeTorch.Text.StreamingDecoder(GaugeTorch.Text.Gpt2TextTokenizer.Instance);
        var pieces = ids.Select(d.Add).ToList();
        string streamed = string.Concat(pieces) + d.Flush();
        Assert.Equal(text, streamed);
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
    }

    [Fact]
    public void CliStopsAtTheContextWithAMessageAndStreamsTokens()
    {
        // The demo model has 128 positions: the built-in paragraph as the prompt leaves 128 - T of them.
        string prompt = Gpt2Tokenizer.BuiltInText + " The end";
        int left = 128 - Gpt2Tokenizer.Encode(prompt).Length;
        var recorder = new RecordingWriter();
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var err = new StringWriter();
        Console.SetOut(recorder);
        Console.SetError(err);
        int code;
        try
        {
            code = GaugeTorch.Cli.App.Run(["generate", "--prompt", prompt, "--max-new-tokens", "200"], recorder, err);
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
        Assert.True(code == 0, err.ToString());
        Assert.Contains($"stopped after {left} of 200 new tokens", err.ToString());
        Assert.Contains("128 positions", err.ToString());
        Assert.StartsWith(prompt, recorder.Text);
        // Streamed: the text reached stdout in many flushed pieces, not in one write at the end.
        Assert.True(recorder.Flushes >= left / 2, $"{recorder.Flushes} flushes for {left} tokens");
    }

    private sealed class RecordingWriter : TextWriter
    {
        private readonly System.Text.StringBuilder _b = new();
        public int Flushes { get; private set; }
        public string Text => _b.ToString();
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;
        public override void Write(char value) => _b.Append(value);
        public override void Write(string? value) => _b.Append(value);
        public override void Flush() { if (_b.Length > 0) Flushes++; }
    }

    [Fact]
    public void GeneratingTheDemoModelsWholeContextStaysSmall()
    {
        // 127 new tokens of the demo model: before the fix the process reached 1.3 GB at 100 tokens (issue 11) and
        // grew quadratically; the runtime, libtorch and the 27 MB model take ~0.3 GB. Peak RSS is not timing-noisy.
        var r = CliProcess.Run(["generate", "--prompt", "The", "--max-new-tokens", "127", "--dtype", "float32"], sampleRss: true, timeoutSeconds: 120);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.True(r.PeakRssBytes > 0, "VmHWM not sampled");
        Assert.True(r.PeakRssBytes < 700L << 20, $"peak RSS {r.PeakRssBytes >> 20} MiB");
    }
}
