using GaugeTorch.Alignment;
using GaugeTorch.Model;
using GaugeTorch.Tests.Fixtures;
using GaugeTorch.Tests.Symmetry;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Alignment;

/// <summary>
/// Data-free alignment on B = g·A, g a random element of the complete group drawn by the library's catalog (through
/// <c>transform --families all</c>: every family, head and MLP permutations, residual permutation and sign; untied:
/// families 12–16 too). The result is checked by direct weight comparison with A, tensor by tensor.
/// </summary>
public class GaugeAlignmentTests(ITestOutputHelper output)
{
    internal static string Transformed(bool untied, long seed)
    {
        string dir = Path.Combine(TestCheckpoints.NewTempDir("align-g"), "b");
        var (code, _, err) = CliRunner.Run("transform", FamilyTests.Model(untied), "--out", dir, "--families", "all", "--seed", seed.ToString());
        Assert.True(code == 0, err);
        return dir;
    }

    /// <summary>max over tensors of ‖x − y‖/‖y‖, and the same over the whole model.</summary>
    internal static (double MaxTensor, double Total) Compare(ModelWeights x, ModelWeights y)
    {
        double num = 0, den = 0, max = 0;
        var pairs = x.Globals.Named().Zip(y.Globals.Named()).Concat(x.Layers.Zip(y.Layers).SelectMany(p => p.First.Named().Zip(p.Second.Named())));
        foreach (var (a, b) in pairs)
        {
            Assert.Equal(a.Role, b.Role);
            double d = (a.Tensor - b.Tensor).square().sum().item<double>(), n = b.Tensor.square().sum().item<double>();
            num += d; den += n;
            max = Math.Max(max, Math.Sqrt(d / n));
        }
        return (max, Math.Sqrt(num / den));
    }

    [Theory]
    [InlineData(false, 3)]
    [InlineData(false, 4)]
    [InlineData(true, 5)]
    public void AlignReturnsAFromAGaugeTransformedCopy(bool untied, long seed)
    {
        using var ca = Checkpoint.Open(FamilyTests.Model(untied));
        using var cb = Checkpoint.Open(Transformed(untied, seed));
        using var a = ModelWeights.Load(ca, ScalarType.Float64);
        using var b = ModelWeights.Load(cb, ScalarType.Float64);
        var (maxBefore, before) = Compare(b, a);
        using var r = GaugeAlignment.Align(a, b);
        var (max, total) = Compare(r.Aligned, a);
        double fn = ModelEvaluation.RelativeLogitsError(r.Original, r.Aligned, ModelEvaluation.ProbeTokens(a.Traits));
        output.WriteLine($"{(untied ? "untied" : "tied")} seed {seed}: relative distance {before:E2} (max tensor {maxBefore:E2}) -> {total:E2} (max tensor {max:E2}); sign {r.ResidualSign}, rounds {r.Rounds}; function {fn:E2}");
        Assert.True(before > 0.1, $"the transformed copy is too close to A already ({before:G3})");
        Assert.True(max <= 1e-9, $"max tensor distance after alignment {max:G3}");
        Assert.True(fn <= 1e-12, $"alignment changed B's function by {fn:G3}");
    }
}
