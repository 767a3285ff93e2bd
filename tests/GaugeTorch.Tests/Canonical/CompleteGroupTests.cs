using System.Text.Json.Nodes;
using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Canonical;

/// <summary>
/// The canonical form and compare on the complete GPT-2 group (GAUGE.md §2 family 11 and §2b families 12–16,
/// step 4b of §5; issue 9 item 3), tied and untied.
/// </summary>
public class CompleteGroupTests(ITestOutputHelper output)
{
    private const double Eps64 = 2.220446049250313e-16;

    private static Gpt2Checkpoint Fixture(string name) => CanonicalFormTests.Open(name);

    [Theory]
    [InlineData("canon-tiny-f64")]
    [InlineData("canon-tiny-f64-untied")]
    [InlineData("canon-small3-f32-untied")]
    public void TestGaugeFamiliesElevenToSixteenAreExactAndMoveTheWeights(string name)
    {
        using var ck = Fixture(name);
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        var gen = new Generator(3);
        var perm = randperm(c.NEmbd, generator: gen).data<long>().Select(i => (int)i).ToArray();
        foreach (double sigma in new[] { 1.0, -1.0 })
        {
            using var t = TestGauge.ResidualPermutation(m, perm, sigma);
            double err = CanonicalFormTests.LogitsError(m, t, c);
            output.WriteLine($"{name}: family 11 (σ = {sigma:+0;-0}): logits {err:E2}, weights moved {CanonicalFormTests.MaxRelDiff(m, t):E2}");
            Assert.True(err < 100 * Eps64, $"family 11: {err:E2}");
            Assert.True(CanonicalFormTests.MaxRelDiff(m, t) > 0.1);
        }
        if (m.Globals.LmHead is null) return;
        using var u = TestGauge.Untied(m, gen);
        double eu = CanonicalFormTests.LogitsError(m, u, c);
        output.WriteLine($"{name}: families 12–16 composed: logits {eu:E2}");
        Assert.True(eu < 100 * Eps64, $"families 12–16: {eu:E2}");
        using var q = TestGauge.ResidualRotation(m, TestGauge.RandomResidualRotation(c.NEmbd, gen, -1));
        double eq = CanonicalFormTests.LogitsError(m, q, c);
        Assert.True(eq < 100 * Eps64, $"family 16 alone: {eq:E2}");
        Assert.True(CanonicalFormTests.MaxRelDiff(m, q) > 0.1);
        // A residual rotation is not a symmetry of the tied model (GAUGE.md §2b): tying the head back breaks it.
        using var tiedBack = new TestGauge.Model(q.Layers.Select(l => l.Clone()).ToList(),
            new GlobalWeights { Wte = q.Globals.Wte.clone(), Wpe = q.Globals.Wpe.clone(), LnFW = q.Globals.LnFW.clone(), LnFB = q.Globals.LnFB.clone() });
        using var tiedOrig = new TestGauge.Model(m.Layers.Select(l => l.Clone()).ToList(),
            new GlobalWeights { Wte = m.Globals.Wte.clone(), Wpe = m.Globals.Wpe.clone(), LnFW = m.Globals.LnFW.clone(), LnFB = m.Globals.LnFB.clone() });
        Assert.True(CanonicalFormTests.LogitsError(tiedOrig, tiedBack, c) > 1e-3);
    }

    /// <summary>The issue's opening examples: one residual permutation, or the negation, of a checkpoint.</summary>
    [Theory]
    [InlineData("canon-tiny-f64", DType.F64)]
    [InlineData("canon-tiny-f32", DType.F32)]
    [InlineData("canon-small3-f32-untied", DType.F32)]
    public void ResidualPermutationOrNegationOfACheckpointComparesEquivalent(string name, DType dtype)
    {
        using var ck = Fixture(name);
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        var perm = randperm(c.NEmbd, generator: new Generator(21)).data<long>().Select(i => (int)i).ToArray();
        var identity = Enumerable.Range(0, (int)c.NEmbd).ToArray();
        foreach (var (p, sigma, what) in new[] { (perm, 1.0, "permuted"), (identity, -1.0, "negated") })
        {
            using var t = TestGauge.ResidualPermutation(m, p, sigma);
            string dir = CanonicalCliTests.Save(t, c, dtype, "residual-" + what);
            var (rc, json, err) = CliRunner.Run("compare", ck.Directory, dir, "--json", "-");
            var o = JsonNode.Parse(json)!;
            output.WriteLine($"{name} {what}: exit {rc}, largest {o["largest"]}, tolerance {o["tolerance"]}, function {o["function_distance"]}");
            Assert.True(rc == 0, err + json);
            // The canonical forms agree tensor by tensor, not only within compare's matching.
            using var k = CanonicalFormTests.Canon(m, c, CanonicalFormKind.Full, out _);
            using var kt = CanonicalFormTests.Canon(t, c, CanonicalFormKind.Full, out _);
            double u = CanonicalFormTests.MaxRelDiff(k, kt);
            Assert.True(u < 1e-12, $"{what}: canonical forms differ by {u:E2}");
        }
    }

    [Theory]
    [InlineData(DType.F64)]
    [InlineData(DType.F32)]
    public void UntiedCheckpointAndItsResidualRotationCompareEquivalent(DType dtype)
    {
        string src = TestCheckpoints.Get($"canon-untied-rot-{dtype}", CanonicalFormTests.Small3, new MakeCheckpointOptions { Seed = 41, DType = dtype, Untied = true });
        string rotated = Path.Combine(TestCheckpoints.NewTempDir("rot"), "r");
        var (rc0, _, err0) = CliRunner.Run("transform", src, "--out", rotated, "--residual-rotation", "--seed", "5");
        Assert.True(rc0 == 0, err0);
        var (rc, json, err) = CliRunner.Run("compare", src, rotated, "--json", "-");
        var o = JsonNode.Parse(json)!;
        output.WriteLine($"untied {dtype} vs transform --residual-rotation: exit {rc}, largest {o["largest"]} at {o["largest_where"]}, tolerance {o["tolerance"]}, function {o["function_distance"]}");
        Assert.True(rc == 0, err + json);
        Assert.Equal("untied", o["head_form"]!.GetValue<string>());
    }

    /// <summary>Orbit uniqueness with a γ_f tie, a β_f tie and a zero β_f: the residual freedom is reported and broken by the next rules.</summary>
    [Fact]
    public void GammaTiesAndZeroBetaAreReportedAndStillOrbitUnique()
    {
        using var ck = Fixture("canon-small3-f64");
        var c = ck.Config;
        using var m0 = TestGauge.Load(ck);
        foreach (bool zeroBeta in new[] { false, true })
        {
            using var m = new TestGauge.Model(m0.Layers.Select(l => l.Clone()).ToList(), m0.Globals.Clone());
            using (no_grad())
            {
                m.Globals.LnFW[7] = m.Globals.LnFW[3];                     // γ_f tie, broken by β_f
                m.Globals.LnFW[11] = m.Globals.LnFW[5];                    // γ_f and β_f tie, broken by the wte column norms
                m.Globals.LnFB[11] = m.Globals.LnFB[5];
                if (zeroBeta) m.Globals.LnFB.zero_();
            }
            using var k = CanonicalFormTests.Canon(m, c, CanonicalFormKind.Full, out var report);
            var fr = report.Frame;
            output.WriteLine($"zero β_f {zeroBeta}: γ_f ties {fr.GammaTies}, by data {fr.GammaTiesByData}, unbroken {fr.GammaTiesUnbroken}, β_f zero {fr.BetaZero}; notes: {string.Join("; ", report.GlobalNotes)}");
            Assert.Equal("permutation", fr.Kind);
            Assert.Equal(2, fr.GammaTies);
            Assert.Equal(zeroBeta, fr.BetaZero);
            Assert.Equal(0, fr.GammaTiesUnbroken);
            Assert.False(report.Clean && zeroBeta, "a zero β_f is residual freedom and must make the report unclean");
            for (long seed = 1; seed <= 2; seed++)
            {
                using var t = TestGauge.Transform(m, c, seed);
                using var kt = CanonicalFormTests.Canon(t, c, CanonicalFormKind.Full, out _);
                double u = CanonicalFormTests.MaxRelDiff(k, kt);
                output.WriteLine($"  seed {seed}: uniqueness {u:E2}");
                Assert.True(u <= 1e-9, $"uniqueness {u:E2}");
            }
        }
    }

    [Fact]
    public void NearDegenerateEmbeddingSingularValuesAreReported()
    {
        using var ck = Fixture("canon-tiny-f64-untied");
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        using (no_grad())
        {
            // Make σ₁ = σ₂ of the centred wte: rescale its singular values.
            var wte = m.Globals.Wte;
            var centred = wte - wte.mean([0], keepdim: true);
            centred = centred - centred.mean([1], keepdim: true);
            var (u, s, vh) = linalg.svd(centred, fullMatrices: false);
            s[1] = s[0];
            wte.copy_(matmul(u * s.unsqueeze(0), vh));
        }
        using var k = CanonicalFormTests.Canon(m, c, CanonicalFormKind.Full, out var report);
        output.WriteLine(string.Join("; ", report.GlobalNotes));
        Assert.Equal("rotation", report.Frame.Kind);
        Assert.True(report.Frame.EmbeddingNearDegenerate >= 1);
        Assert.False(report.Clean);
        Assert.Contains(report.GlobalNotes, n => n.Contains("near-degenerate"));
        Assert.True(CanonicalFormTests.LogitsError(m, k, c) < 100 * Eps64);
    }

    [Fact]
    public void CanonicalizeReportsTheResidualFrameInTextAndJson()
    {
        using var ck = Fixture("canon-small3-f32-untied");
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("frame-report"), "out");
        var (rc, text, err) = CliRunner.Run("canonicalize-checkpoint", ck.Directory, "--out", outDir, "--json", outDir + ".json");
        Assert.True(rc == 0, err);
        Assert.Contains("residual frame", text);
        Assert.Contains("wte rank", text);
        var fr = JsonNode.Parse(File.ReadAllText(outDir + ".json"))!["residual_frame"]!;
        Assert.Equal("rotation", fr["kind"]!.GetValue<string>());
        Assert.Equal((int)ck.Config.NEmbd - 1, fr["embedding_rank"]!.GetValue<int>());
        Assert.Equal(0, fr["embedding_near_degenerate"]!.GetValue<int>());
        Assert.NotNull(fr["gamma_f_ties"]);
        Assert.NotNull(fr["beta_f_zero"]);

        using var tied = Fixture("canon-tiny-f32");
        string out2 = Path.Combine(TestCheckpoints.NewTempDir("frame-report"), "out");
        (rc, text, err) = CliRunner.Run("canonicalize-checkpoint", tied.Directory, "--out", out2, "--json", out2 + ".json");
        Assert.True(rc == 0, err);
        Assert.Contains("γ_f ties", text);
        var fr2 = JsonNode.Parse(File.ReadAllText(out2 + ".json"))!["residual_frame"]!;
        Assert.Equal("permutation", fr2["kind"]!.GetValue<string>());
        Assert.False(fr2["beta_f_zero"]!.GetValue<bool>());
    }
}
