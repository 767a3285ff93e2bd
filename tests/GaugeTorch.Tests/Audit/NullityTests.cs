using System.Text.Json.Nodes;
using GaugeTorch.Audit;
using GaugeTorch.Model;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Audit;

/// <summary>
/// The Jacobian-nullity certificate, on the symmetry catalog's own families (<see cref="CatalogRows"/>): GAUGE.md's eight values, shapes the tool was not tuned to, the batched forward
/// it uses against <see cref="Forward"/>, a catalog that is missing a family (the check must fail), and the memory
/// guard.
/// </summary>
public class NullityTests(ITestOutputHelper output)
{
    private NullityResult Certify(ModelTraits t, long? expected = null, IEnumerable<FamilyRow>? catalog = null, int seed = 1)
    {
        var r = JacobianNullity.Run(t, catalog ?? CatalogRows.For(t), new NullityOptions { Seed = seed });
        output.WriteLine($"{t.Describe()} P={t.MaxPositions}: p={r.Parameters} m={r.Outputs} nullity={r.Nullity} formula={r.Formula} gap={r.Gap:E2} " +
                         $"kept={r.SmallestKept:E2} dropped={r.LargestDropped:E2} jac={r.JacobianSeconds:F2}s svd={r.SvdSeconds:F2}s");
        if (expected is long e) Assert.Equal(e, r.Formula);
        return r;
    }

    /// <summary>GAUGE.md §2 and §2b: (L=1, d=8, h=2, F=32, V=11, P=6) 224 / 279, (L=2, d=12, h=3, F=20, V=13, P=5) 533 / 636.</summary>
    [Theory]
    [InlineData(1, 8, 2, 32, 11, 6, false, 224)]
    [InlineData(1, 8, 2, 32, 11, 6, true, 279)]
    [InlineData(2, 12, 3, 20, 13, 5, false, 533)]
    [InlineData(2, 12, 3, 20, 13, 5, true, 636)]
    public void Gpt2NullityEqualsGaugeMd(int l, int d, int h, int f, int v, int p, bool untied, long value)
    {
        var r = Certify(RandomModel.Traits("gpt2", l, d, h, null, null, f, v, p, untied), value);
        Assert.Equal(value, r.Nullity);
        Assert.True(r.Certified, $"gap {r.Gap:E2}");
    }

    /// <summary>GAUGE.md §6.2: (d=8, H=4, G=2, hd=2, L=1, F=12, V=11) 84 / 40; (d=8, H=4, G=2, hd=4, L=2, F=12, V=13, q/k/v biases) 180 / 136.</summary>
    [Theory]
    [InlineData("llama", 1, 2, 11, true, 84)]
    [InlineData("llama", 1, 2, 11, false, 40)]
    [InlineData("qwen2", 2, 4, 13, true, 180)]
    [InlineData("qwen2", 2, 4, 13, false, 136)]
    public void LlamaNullityEqualsGaugeMd(string arch, int l, int hd, int v, bool untied, long value)
    {
        var r = Certify(RandomModel.Traits(arch, l, 8, 4, 2, hd, 12, v, 5, untied), value);
        Assert.Equal(value, r.Nullity);
        Assert.True(r.Certified, $"gap {r.Gap:E2}");
        // RMSNorm's eps breaks the residual scale only weakly: a counted singular value far below 1e-4 σ_max but far above τ.
        Assert.Contains(r.WeakKept, x => x < 1e-6 && x > 1e3 * r.RelativeTolerance);
    }

    /// <summary>
    /// Llama with attention_bias (q/k/v and o_proj biases) and mlp_bias: the catalog adds value-bias (L·G·hd: a value
    /// bias reaches the output as a constant, which the o_proj bias absorbs) to GAUGE.md §6.2's formula, and nothing
    /// else; the nullity must equal that sum.
    /// </summary>
    [Theory]
    [InlineData(false, 44)]
    [InlineData(true, 88)]
    public void LlamaWithAttentionAndMlpBiasesAddsValueBias(bool untied, long value)
    {
        var t = RandomModel.Traits("llama", 1, 8, 4, 2, 2, 12, 11, 5, untied) with { QkvBias = true, OutBias = true, MlpBias = true };
        Assert.Contains(CatalogRows.For(t), r => r.Name == "value-bias" && r.Dimension(t) == 4);
        var r = Certify(t, value);
        Assert.Equal(value, r.Nullity);
        Assert.True(r.Certified, $"gap {r.Gap:E2}");
    }

    /// <summary>
    /// Shapes the tool was not tuned to: odd sizes, three layers, F &lt; d, MQA, hd ≠ d/H, biases with GQA. All are
    /// generic in the sense docs/audit.md measures: V ≥ d + 1, sequences of at least 3 positions, and G·hd ≤ d when
    /// q/k/v carry biases without an o_proj bias.
    /// </summary>
    [Theory]
    [InlineData("gpt2", 1, 6, 3, 0, 0, 10, 9, 4, false)]
    [InlineData("gpt2", 3, 4, 2, 0, 0, 8, 7, 5, true)]
    [InlineData("gpt2", 1, 10, 5, 0, 0, 7, 13, 4, true)]      // F < d
    [InlineData("llama", 1, 8, 4, 1, 2, 10, 11, 5, false)]    // MQA
    [InlineData("mistral", 1, 6, 2, 1, 4, 9, 9, 5, true)]     // MQA, hd = 4 ≠ d/H = 3
    [InlineData("qwen2", 1, 10, 2, 1, 6, 12, 13, 5, true)]    // q/k/v biases, hd = 6 ≠ d/H = 5
    [InlineData("llama", 3, 6, 3, 1, 2, 7, 9, 5, true)]
    [InlineData("llama", 2, 6, 3, 3, 2, 5, 9, 6, false)]      // MHA, F < d
    public void NullityEqualsTheFormulaOnUntunedShapes(string arch, int l, int d, int h, int g, int hd, int f, int v, int p, bool untied)
    {
        var t = RandomModel.Traits(arch, l, d, h, g == 0 ? null : g, hd == 0 ? null : hd, f, v, p, untied);
        var r = Certify(t);
        Assert.Equal(r.Formula, r.Nullity);
        Assert.True(r.Certified, $"gap {r.Gap:E2}");
    }

    /// <summary>
    /// The tool finds symmetries the catalog lacks. With q/k/v biases and no o_proj bias (Qwen2), a value-bias shift
    /// δ ∈ R^{G·hd} with Σ_i δ_{g(i)} O_i = 0 changes nothing (attention rows sum to 1): a kernel of dimension
    /// G·hd − d per layer once G·hd > d. No real model has G·hd > d (Qwen2-0.5B: 128 vs 896), so GAUGE.md §6.2
    /// omits it; on a toy shape with G·hd = 16 > d = 8 the nullity exceeds the formula by exactly 8 and nothing is
    /// certified.
    /// </summary>
    [Fact]
    public void ASymmetryBeyondTheCatalogIsFound()
    {
        var r = Certify(RandomModel.Traits("qwen2", 1, 8, 4, 4, 4, 12, 11, 5, true));
        Assert.Equal(r.Formula + (4 * 4 - 8), r.Nullity);
        Assert.True(r.Clear, $"gap {r.Gap:E2}");
        Assert.False(r.Certified);
    }

    [Fact]
    public void AMissingFamilyIsNotCertified()
    {
        var t = RandomModel.Traits("gpt2", 1, 8, 2, null, null, 32, 11, 6, false);
        var r = Certify(t, catalog: ProvisionalCatalog.Rows.Where(f => f.Name != "key-bias"));
        Assert.Equal(224, r.Nullity);
        Assert.Equal(224 - 8, r.Formula);
        Assert.False(r.Certified);
    }

    [Fact]
    public void BatchedForwardIsForwardPerCopy()
    {
        foreach (var t in new[] { RandomModel.Traits("gpt2", 2, 12, 3, null, null, 20, 13, 5, true), RandomModel.Traits("qwen2", 2, 8, 4, 2, 4, 12, 13, 7, false) })
        {
            using var scope = NewDisposeScope();
            using var m = RandomModel.Build(t, 5);
            var tokens = randint(0, t.Vocab, [3, t.MaxPositions], dtype: ScalarType.Int64, generator: new Generator(2));
            var layers = m.Layers.Select(l => BatchedForward.Replicate(l, 3)).ToList();
            var globals = BatchedForward.Replicate(m.Globals, 3);
            var batched = BatchedForward.Logits(tokens, layers, globals, t);
            for (int b = 0; b < 3; b++)
            {
                var single = m.Logits(tokens[b]);
                double err = ((batched[b] - single).norm() / single.norm()).item<double>();
                output.WriteLine($"{t.Describe()} copy {b}: {err:E2}");
                Assert.True(err < 1e-14, $"{err:E2}");
            }
            // Jacobian rows: copy b's gradient of Σ_b Y_b[t, v] is the gradient of sequence b through Forward.
            var y = Forward.RowCentre(batched);
            var seed = zeros_like(y);
            seed.select(1, 2).select(1, 4).fill_(1.0);
            var leaves = layers.SelectMany(l => l.Named()).Concat(globals.Named()).Select(x => x.Tensor).ToList();
            var rows = cat(torch.autograd.grad([y], leaves, [seed]).Select(gr => gr.reshape(3, -1)).ToArray(), 1);
            using var copy = new ModelWeights(m.Layers.Select(l => l.Map(x => x.detach().clone().requires_grad_(true))).ToList(),
                m.Globals.Map(x => x.detach().clone().requires_grad_(true)), t);
            var single1 = copy.Layers.SelectMany(l => l.Named()).Concat(copy.Globals.Named()).Select(x => x.Tensor).ToList();
            var y1 = Forward.RowCentre(copy.Logits(tokens[1]));
            var row1 = cat(torch.autograd.grad([y1[2, 4]], single1).Select(gr => gr.flatten()).ToArray(), 0);
            double rowErr = ((rows[1] - row1).norm() / row1.norm()).item<double>();
            output.WriteLine($"Jacobian row vs Forward autograd: {rowErr:E2}");
            Assert.True(rowErr < 1e-13, $"{rowErr:E2}");
        }
    }

    [Fact]
    public void ATooLargeShapeIsRefusedBeforeAllocating()
    {
        // Library: a modest shape with a small budget names what it needs and what is available.
        var t = RandomModel.Traits("gpt2", 2, 12, 3, null, null, 20, 13, 5, false);
        var e = Assert.Throws<AuditMemoryException>(() => JacobianNullity.Run(t, ProvisionalCatalog.Rows, new NullityOptions { AvailableBytes = 50L << 20 }));
        Assert.Contains("needs about", e.Message);
        Assert.Contains("50.0 MiB is available", e.Message);
        // CLI: a shape whose Jacobian would be terabytes exits 2 with one line, after no allocation.
        var (code, _, err) = CliRunner.Run("audit", "--nullity", "--layers", "12", "--embd", "768", "--heads", "12", "--inner", "3072", "--vocab", "1000", "--positions", "64");
        Assert.Equal(2, code);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Matches(@"needs about [0-9.]+ GiB", err);
        output.WriteLine(err);
    }

    [Fact]
    public void CliCertifiesAndWritesTheJsonFields()
    {
        string json = Path.Combine(TestCheckpoints.NewTempDir("nullity"), "n.json");
        var (code, stdout, stderr) = CliRunner.Run("audit", "--nullity", "--arch", "mistral", "--layers", "1", "--embd", "6", "--heads", "2", "--kv-heads", "1",
            "--head-dim", "4", "--inner", "9", "--vocab", "7", "--untied", "--json", json);
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("CERTIFIED", stdout);
        var o = JsonNode.Parse(File.ReadAllText(json))!.AsObject();
        foreach (var k in new[] { "nullity", "formula", "params", "rank", "gap" }) Assert.NotNull(o[k]);
        Assert.Equal((long)o["formula"]!, (long)o["nullity"]!);
        Assert.Equal((long)o["params"]!, (long)o["rank"]! + (long)o["nullity"]!);
        // L·[G·hd + G·hd² + 2d + F] + 2d + d(d−1)/2 = (4 + 16 + 12 + 9) + 12 + 15.
        Assert.Equal(41 + 12 + 15, (long)o["formula"]!);
        Assert.True((double)o["gap"]! > 1e3);
        // A nullity that is not the formula is exit 1 (the value-bias kernel of ASymmetryBeyondTheCatalogIsFound).
        (code, stdout, _) = CliRunner.Run("audit", "--nullity", "--arch", "qwen2", "--layers", "1", "--kv-heads", "4", "--vocab", "11", "--untied");
        Assert.Equal(1, code);
        Assert.Contains("NOT CERTIFIED", stdout);
        // Fewer outputs than parameters cannot certify anything: refused as bad input.
        var (bad, _, err) = CliRunner.Run("audit", "--nullity", "--sequences", "1");
        Assert.Equal(2, bad);
        Assert.Contains("not more than the 2,608 parameters", err);
    }
}
