using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;

namespace GaugeTorch.Tests.Gpt2;

/// <summary>
/// Gpt2Model's logits against the independent float64 reference (<see cref="ReferenceGpt2"/>): relative Frobenius
/// error ≤ 1e-12 for the float64 path and ≤ 1e-5 for the float32 path, for every checkpoint layout variant.
/// </summary>
public class ReferenceForwardTests(ITestOutputHelper output)
{
    public const double F64Tolerance = 1e-12;
    public const double F32Tolerance = 1e-5;

    private static readonly Gpt2Config Tiny = TestCheckpoints.Tiny;                                        // d_k = 8
    private static readonly Gpt2Config Dk16 = new() { NLayer = 2, NEmbd = 48, NHead = 3, NInner = 192, VocabSize = 101, NPositions = 40 };
    private static readonly Gpt2Config Dk64 = new() { NLayer = 2, NEmbd = 128, NHead = 2, NInner = 512, VocabSize = 89, NPositions = 24 };

    public static TheoryData<string> Variants => new()
    {
        "plain", "prefix", "buffers", "f16", "bf16", "f64", "sharded", "untied", "dk16", "dk64", "everything",
    };

    private static (Gpt2Config Config, MakeCheckpointOptions Options) Variant(string name) => name switch
    {
        "plain" => (Tiny, new() { Seed = 21 }),
        "prefix" => (Tiny, new() { Seed = 22, Prefix = true }),
        "buffers" => (Tiny, new() { Seed = 23, MaskBuffers = true }),
        "f16" => (Tiny, new() { Seed = 24, DType = DType.F16 }),
        "bf16" => (Tiny, new() { Seed = 25, DType = DType.BF16 }),
        "f64" => (Tiny, new() { Seed = 26, DType = DType.F64 }),
        "sharded" => (Tiny, new() { Seed = 27, Shards = 3 }),
        "untied" => (Tiny, new() { Seed = 28, Untied = true }),
        "dk16" => (Dk16, new() { Seed = 29 }),
        "dk64" => (Dk64, new() { Seed = 30 }),
        "everything" => (Dk16, new() { Seed = 31, Prefix = true, MaskBuffers = true, Shards = 2, Untied = true, DType = DType.BF16 }),
        _ => throw new ArgumentException(name),
    };

    private static int[] Tokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
    }

    private static double[] ModelLogits(Gpt2Checkpoint ck, torch.ScalarType dtype, int[] tokens)
    {
        using var m = Gpt2Model.Load(ck, dtype);
        using var logits = m.Logits(tokens);
        Assert.Equal(dtype, logits.dtype);
        Assert.Equal(new long[] { tokens.Length, ck.Config.VocabSize }, logits.shape);
        using var d = logits.to_type(torch.ScalarType.Float64);
        return d.data<double>().ToArray();
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void LogitsMatchTheIndependentReference(string variant)
    {
        var (cfg, opt) = Variant(variant);
        string dir = TestCheckpoints.Get("fwdref-" + variant, cfg, opt);
        using var ck = Gpt2Checkpoint.Open(dir);

        // The checkpoint really has the layout the variant names (so the variant is exercised, not assumed).
        Assert.Equal(opt.Prefix ? "transformer." : "", ck.Prefix);
        Assert.Equal(opt.MaskBuffers, ck.HasMaskBuffers);
        Assert.Equal(!opt.Untied, ck.Tied);
        Assert.Equal(opt.DType, ck.StorageDType);
        Assert.Equal(opt.Shards, ck.Store.Files.Count);
        Assert.Equal(cfg.NEmbd / cfg.NHead, ck.Config.HeadDim);

        int T = Math.Min(cfg.NPositions, 19);
        var tokens = Tokens(T, cfg.VocabSize, (int)opt.Seed);
        var reference = new ReferenceGpt2(dir, ck.Store).Logits(tokens);

        double e64 = ReferenceGpt2.RelativeError(ModelLogits(ck, torch.ScalarType.Float64, tokens), reference);
        double e32 = ReferenceGpt2.RelativeError(ModelLogits(ck, torch.ScalarType.Float32, tokens), reference);
        output.WriteLine($"variant {variant,-10} d={cfg.NEmbd} h={cfg.NHead} d_k={cfg.HeadDim} {opt.DType} T={T}: rel. error float64 {e64:E3}, float32 {e32:E3}");
        Assert.True(e64 <= F64Tolerance, $"{variant}: float64 relative error {e64:E3} > {F64Tolerance:E0}");
        Assert.True(e32 <= F32Tolerance, $"{variant}: float32 relative error {e32:E3} > {F32Tolerance:E0}");
    }

    [Fact]
    public void FullContextMatchesTheReference()
    {
        // T = n_positions: the last position, every causal-mask row, and wpe's last row are used.
        var cfg = Dk16 with { NPositions = 24 };
        string dir = TestCheckpoints.Get("fwdref-fullctx", cfg, new MakeCheckpointOptions { Seed = 32 });
        using var ck = Gpt2Checkpoint.Open(dir);
        var tokens = Tokens(cfg.NPositions, cfg.VocabSize, 5);
        var reference = new ReferenceGpt2(dir, ck.Store).Logits(tokens);
        double e64 = ReferenceGpt2.RelativeError(ModelLogits(ck, torch.ScalarType.Float64, tokens), reference);
        output.WriteLine($"full context T={cfg.NPositions}: rel. error float64 {e64:E3}");
        Assert.True(e64 <= F64Tolerance, $"{e64:E3}");
    }

    [Fact]
    public void TheComparisonDiscriminates()
    {
        // The tolerance must be able to fail: a reference without the causal mask, or a checkpoint whose single
        // weight differs, is far outside it. (Guards against a comparison that is vacuously small.)
        var (cfg, opt) = Variant("plain");
        string dir = TestCheckpoints.Get("fwdref-plain", cfg, opt);
        using var ck = Gpt2Checkpoint.Open(dir);
        var tokens = Tokens(12, cfg.VocabSize, 9);
        var model = ModelLogits(ck, torch.ScalarType.Float64, tokens);
        var noMask = new ReferenceGpt2(dir, ck.Store) { Causal = false }.Logits(tokens);
        double eMask = ReferenceGpt2.RelativeError(model, noMask);
        output.WriteLine($"model vs. non-causal reference: {eMask:E3}");
        Assert.True(eMask > 1e-6, $"{eMask:E3}");

        // Logits of another seed's checkpoint (same shapes) are nowhere near.
        string other = TestCheckpoints.Get("fwdref-plain-other", cfg, opt with { Seed = 99 });
        using var ck2 = Gpt2Checkpoint.Open(other);
        double eOther = ReferenceGpt2.RelativeError(model, new ReferenceGpt2(other, ck2.Store).Logits(tokens));
        Assert.True(eOther > 1e-2, $"{eOther:E3}");
    }

    [Fact]
    public void HalfDecodingIsExact()
    {
        // The reference's own F16 decoder against .NET's Half for every bit pattern.
        for (int bits = 0; bits < 1 << 16; bits++)
        {
            double mine = ReferenceGpt2.HalfToDouble((ushort)bits);
            double net = (double)BitConverter.UInt16BitsToHalf((ushort)bits);
            Assert.True(mine.Equals(net), $"0x{bits:X4}: {mine} vs {net}");
        }
    }
}
