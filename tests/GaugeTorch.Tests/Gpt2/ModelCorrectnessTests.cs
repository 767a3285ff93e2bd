using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;

namespace GaugeTorch.Tests.Gpt2;

public class ModelCorrectnessTests(ITestOutputHelper output)
{
    private static readonly int[] Tokens = [0, 5, 17, 96, 42, 42, 3, 60, 11, 88, 1, 29];

    public static TheoryData<string> Variants() => new(["plain-f64", "plain-f32", "prefix", "buffers", "f16", "bf16", "sharded", "untied", "dk16", "dk64"]);

    private static (Gpt2Config, MakeCheckpointOptions) Variant(string name)
    {
        var tiny = TestCheckpoints.Tiny;
        return name switch
        {
            "plain-f64" => (tiny, new() { Seed = 1, DType = DType.F64 }),
            "plain-f32" => (tiny, new() { Seed = 2 }),
            "prefix" => (tiny, new() { Seed = 3, Prefix = true, DType = DType.F64 }),
            "buffers" => (tiny, new() { Seed = 4, MaskBuffers = true, DType = DType.F64 }),
            "f16" => (tiny, new() { Seed = 5, DType = DType.F16 }),
            "bf16" => (tiny, new() { Seed = 6, DType = DType.BF16 }),
            "sharded" => (tiny, new() { Seed = 7, Shards = 3, DType = DType.F64 }),
            "untied" => (tiny, new() { Seed = 8, Untied = true, DType = DType.F64 }),
            "dk16" => (tiny with { NEmbd = 48, NHead = 3, NInner = 96 }, new() { Seed = 9, DType = DType.F64 }),
            "dk64" => (tiny with { NEmbd = 128, NHead = 2, NInner = 256, NLayer = 1 }, new() { Seed = 10, DType = DType.F64 }),
            _ => throw new ArgumentException(name),
        };
    }

    private static double RelErr(torch.Tensor logits, double[,] reference)
    {
        double num = 0, den = 0;
        var l = logits.to_type(torch.ScalarType.Float64).data<double>().ToArray();
        int v = reference.GetLength(1);
        for (int i = 0; i < reference.GetLength(0); i++)
            for (int j = 0; j < v; j++)
            {
                double d = l[i * v + j] - reference[i, j];
                num += d * d;
                den += reference[i, j] * reference[i, j];
            }
        return Math.Sqrt(num / den);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void TorchSharpModelMatchesIndependentReference(string variant)
    {
        var (cfg, opts) = Variant(variant);
        string dir = TestCheckpoints.Get("ref-" + variant, cfg, opts);
        var reference = new ReferenceForward(dir).Logits(Tokens);
        using var ck = Gpt2Checkpoint.Open(dir);
        Assert.Equal(variant == "untied", !ck.Tied);
        Assert.Equal(variant == "buffers", ck.HasMaskBuffers);
        Assert.Equal(variant == "prefix" ? Gpt2Keys.Prefix : "", ck.Prefix);
        using var m64 = Gpt2Model.Load(ck, torch.ScalarType.Float64);
        using var m32 = Gpt2Model.Load(ck, torch.ScalarType.Float32);
        using var l64 = m64.Logits(Tokens);
        using var l32 = m32.Logits(Tokens);
        double e64 = RelErr(l64, reference), e32 = RelErr(l32, reference);
        output.WriteLine($"{variant}: float64 relative error {e64:G3}, float32 {e32:G3}");
        Assert.True(e64 <= 1e-12, $"{variant}: float64 {e64:G3}");
        Assert.True(e32 <= 1e-5, $"{variant}: float32 {e32:G3}");
    }

    [Fact]
    public void TokenizerIsGpt2Bpe()
    {
        Assert.Equal([15496, 11, 616, 3290, 318, 13779], Gpt2Tokenizer.Encode("Hello, my dog is cute"));
        Assert.Equal("Hello, my dog is cute", Gpt2Tokenizer.Decode([15496, 11, 616, 3290, 318, 13779]));
    }

    [Fact]
    public void RepeatedForwardsKeepMemoryFlat()
    {
        using var ck = Gpt2Checkpoint.Open(TestCheckpoints.Get("ref-plain-f64", Variant("plain-f64").Item1, Variant("plain-f64").Item2));
        using var m = Gpt2Model.Load(ck, torch.ScalarType.Float64);
        for (int i = 0; i < 5; i++) m.Logits(Tokens).Dispose();
        long before = DisposeScopeManagerLive();
        for (int i = 0; i < 50; i++) m.Logits(Tokens).Dispose();
        long after = DisposeScopeManagerLive();
        Assert.True(after - before <= 0, $"live tensors grew from {before} to {after} over 50 forwards");
    }

    private static long DisposeScopeManagerLive()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return torch.Tensor.TotalCount;
    }
}
