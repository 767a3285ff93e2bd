using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests;

public class SmokeTests
{
    [Fact]
    public void TinyCheckpointLoadsAndRuns()
    {
        using var ck = Gpt2Checkpoint.Open(TestCheckpoints.Get("smoke"));
        using var m = Gpt2Model.Load(ck, torch.ScalarType.Float64);
        using var logits = m.Logits([1, 2, 3]);
        Assert.Equal(new long[] { 3, 97 }, logits.shape);
        Assert.True(logits.isfinite().all().item<bool>());
    }
}
