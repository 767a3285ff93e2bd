using GaugeTorch.Architectures.Gpt2;
using TorchSharp;

namespace GaugeTorch.Tests;

public class DemoModelTests
{
    [Fact]
    public void EmbeddedDemoModelIsTheDefaultAndHasLearnedItsText()
    {
        using var ck = Gpt2Checkpoint.Open(null);
        Assert.Equal(50257, ck.Config.VocabSize);
        Assert.True(ck.Tied);
        Assert.True(new FileInfo(Path.Combine(ck.Directory, "model.safetensors")).Length < 20_000_000);
        // A held-out entry of The Devil's Dictionary (from the last 5 % of the text, which training never saw).
        string text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "demo-gpt2", "heldout-sample.txt"));
        var ids = Gpt2Tokenizer.Encode(text).Take(ck.Config.NPositions).ToArray();
        using var m = Gpt2Model.Load(ck, torch.ScalarType.Float32);
        using var logits = m.Logits(ids[..^1]);
        using var targets = torch.tensor(ids[1..].Select(i => (long)i).ToArray());
        double loss = torch.nn.functional.cross_entropy(logits, targets).item<float>();
        // Uniform guessing costs ln(50257) = 10.8 nats; training brought the held-out loss to about 5.3.
        Assert.True(loss < 7.0, $"held-out loss {loss:F2} nats/token");
    }
}
