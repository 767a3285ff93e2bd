using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Canonical;

public class CanonicalFormTests(ITestOutputHelper output)
{
    private const double Eps64 = 2.220446049250313e-16;

    public static Gpt2Config Small3 => new() { NLayer = 3, NEmbd = 48, NHead = 3, NInner = 80, VocabSize = 61, NPositions = 16 };

    /// <summary>The fixtures: (name, config, options).</summary>
    public static readonly Dictionary<string, (Gpt2Config Config, MakeCheckpointOptions Options)> Fixtures = new()
    {
        ["canon-tiny-f64"] = (TestCheckpoints.Tiny, new MakeCheckpointOptions { Seed = 11, DType = DType.F64 }),
        ["canon-small3-f64"] = (Small3, new MakeCheckpointOptions { Seed = 12, DType = DType.F64 }),
        ["canon-tiny-f32"] = (TestCheckpoints.Tiny, new MakeCheckpointOptions { Seed = 13, DType = DType.F32 }),
        ["canon-small3-f32-untied"] = (Small3, new MakeCheckpointOptions { Seed = 14, DType = DType.F32, Untied = true }),
        ["canon-tiny-f64-untied"] = (TestCheckpoints.Tiny, new MakeCheckpointOptions { Seed = 15, DType = DType.F64, Untied = true }),
    };

    /// <summary>Float64 precision without keeping canonical input: measures the arithmetic of the form itself.</summary>
    public static readonly CanonicalPrecision Recompute = CanonicalPrecision.Float64 with { KeepCanonicalInput = false };

    public static IEnumerable<object[]> FixtureNames => Fixtures.Keys.Select(k => new object[] { k });

    public static Gpt2Checkpoint Open(string name)
    {
        var (cfg, opt) = Fixtures[name];
        return Gpt2Checkpoint.Open(TestCheckpoints.Get(name, cfg, opt));
    }

    public static int[] Tokens(Gpt2Config c) =>
        Gpt2Tokenizer.Encode(Gpt2Tokenizer.BuiltInText).Take(c.NPositions).Select(t => t % c.VocabSize).ToArray();

    public static TestGauge.Model Canon(TestGauge.Model m, Gpt2Config c, CanonicalFormKind form, out CanonicalReport report, CanonicalPrecision? precision = null, bool untied = false)
    {
        var (layers, g, r) = CanonicalForm.Canonicalize(m.Layers, m.Globals, c, form, precision, untied);
        report = r;
        return new TestGauge.Model(layers, g);
    }

    /// <summary>Largest relative Frobenius difference over all tensors (0 when both are exactly 0).</summary>
    public static double MaxRelDiff(TestGauge.Model a, TestGauge.Model b)
    {
        double worst = 0;
        var pairs = a.Layers.Zip(b.Layers).SelectMany(p => p.First.Named().Zip(p.Second.Named(), (x, y) => (x.Tensor, y.Tensor)))
            .Concat(a.Globals.Named().Zip(b.Globals.Named(), (x, y) => (x.Tensor, y.Tensor)));
        foreach (var (x, y) in pairs)
        {
            double diff = (x - y).norm().item<double>();
            double scale = Math.Max(x.norm().item<double>(), y.norm().item<double>());
            if (diff == 0) continue;
            worst = Math.Max(worst, diff / scale);
        }
        return worst;
    }

    public static double LogitsError(TestGauge.Model a, TestGauge.Model b, Gpt2Config c)
    {
        var tokens = Tokens(c);
        using var ya = TestGauge.Logits(a, c, tokens);
        using var yb = TestGauge.Logits(b, c, tokens);
        return (ya - yb).norm().item<double>() / (ya.norm().item<double>() + Eps64);
    }

    [Theory]
    [MemberData(nameof(FixtureNames))]
    public void PreservesFunctionIsIdempotentAndOrbitUnique(string name)
    {
        using var ck = Open(name);
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        foreach (var form in new[] { CanonicalFormKind.Full, CanonicalFormKind.Paper })
        {
            using var k = Canon(m, c, form, out var report);
            Assert.True(report.Clean, string.Join("; ", report.Layers.SelectMany(l => l.Notes)));
            double fn = LogitsError(m, k, c);
            // Idempotence of the float64 arithmetic (recomputed), and exactly (kept: already canonical).
            using var k2 = Canon(k, c, form, out _, Recompute);
            double idem = MaxRelDiff(k, k2);
            if (form == CanonicalFormKind.Full)
            {
                using var kept = Canon(k, c, form, out var keptReport);
                Assert.Equal(0, MaxRelDiff(k, kept));
                Assert.Equal(c.NLayer, keptReport.KeptLayers);
                Assert.True(keptReport.Frame.Kept);
            }
            double uniq = 0;
            for (long seed = 1; seed <= 2; seed++)
            {
                using var t = form == CanonicalFormKind.Full ? TestGauge.Transform(m, c, seed) : TestGauge.Transform(m, c, seed, papersFamiliesOnly: true);
                Assert.True(LogitsError(m, t, c) < 1e-12, "the test transform itself must preserve the function");
                Assert.True(MaxRelDiff(m, t) > 1e-3, "the test transform must change the weights");
                using var kt = Canon(t, c, form, out _);
                uniq = Math.Max(uniq, MaxRelDiff(k, kt));
            }
            output.WriteLine($"{name} {form.Name()}: logits {fn:E2} ({fn / Eps64:F1} eps), idempotence {idem:E2}, uniqueness {uniq:E2} (families 1–10{(form == CanonicalFormKind.Full ? ", 11" + (m.Globals.LmHead is null ? "" : ", 12–16") : " only 1–3")})");
            Assert.True(fn <= 100 * Eps64, $"{form}: logits changed by {fn:E2}");
            Assert.True(idem <= 1e-12, $"{form}: idempotence error {idem:E2}");
            Assert.True(uniq <= 1e-9, $"{form}: uniqueness error {uniq:E2}");
        }
    }

    [Fact]
    public void FullFormHasTheDocumentedShape()
    {
        using var ck = Open("canon-tiny-f64");
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        using var k = Canon(m, c, CanonicalFormKind.Full, out var report);
        long d = c.NEmbd, dk = c.HeadDim;
        foreach (var l in k.Layers)
        {
            Assert.Equal(0, (l.Ln1W - 1).abs().max().item<double>());
            Assert.Equal(0, l.Ln1B.abs().max().item<double>());
            Assert.Equal(0, l.AttnB.narrow(0, d, 2 * d).abs().max().item<double>());   // b_K = b_V = 0
            Assert.True(l.AttnW.sum([0]).abs().max().item<double>() < 1e-14);              // centred readers
            Assert.True(l.AttnProjW.sum([1]).abs().max().item<double>() < 1e-14);          // centred writers
            Assert.True(l.MlpProjW.sum([1]).abs().max().item<double>() < 1e-14);
            for (long i = 0; i < c.NHead; i++)
            {
                // Balanced QK: Gram matrices of W̃_Q = [W_Q; b_Q] and W_K are equal and diagonal.
                var q = cat([l.AttnW.narrow(1, i * dk, dk), l.AttnB.narrow(0, i * dk, dk).unsqueeze(0)], 0);
                var kk = l.AttnW.narrow(1, d + i * dk, dk);
                var gq = matmul(q.t(), q);
                var gk = matmul(kk.t(), kk);
                double scale = gq.abs().max().item<double>();
                Assert.True((gq - gk).abs().max().item<double>() < 1e-14 * scale);
                Assert.True((gq - diag(gq.diagonal())).abs().max().item<double>() < 1e-14 * scale);
            }
        }
        // Heads in descending Σ S_QK.
        foreach (var lr in report.Layers)
            for (int i = 0; i + 1 < lr.Heads.Length; i++) Assert.True(lr.Heads[i].QkSum >= lr.Heads[i + 1].QkSum);
        // Embeddings: wte has zero mean over the vocabulary, wpe rows are centred.
        Assert.True(k.Globals.Wte.mean([0]).abs().max().item<double>() < 1e-15);
        Assert.True(k.Globals.Wpe.mean([1]).abs().max().item<double>() < 1e-15);
    }

    /// <summary>Zero head, two identical heads, rank-deficient W_V, LayerNorm weight with zeros.</summary>
    private static TestGauge.Model Degenerate(TestGauge.Model m, Gpt2Config c, bool lnZeros)
    {
        long d = c.NEmbd, dk = c.HeadDim;
        var layers = m.Layers.Select(l => l.Clone()).ToList();
        var w = layers[0];
        using (no_grad())
        {
            foreach (long off in new[] { 0L, d, 2 * d })
            {
                w.AttnW.narrow(1, off, dk).zero_();                                            // head 0 is zero
                w.AttnB.narrow(0, off, dk).zero_();
                w.AttnW.narrow(1, off + 2 * dk, dk).copy_(w.AttnW.narrow(1, off + dk, dk));   // head 2 = head 1
                w.AttnB.narrow(0, off + 2 * dk, dk).copy_(w.AttnB.narrow(0, off + dk, dk));
            }
            w.AttnProjW.narrow(0, 0, dk).zero_();
            w.AttnProjW.narrow(0, 2 * dk, dk).copy_(w.AttnProjW.narrow(0, dk, dk));
            var v3 = w.AttnW.narrow(1, 2 * d + 3 * dk, dk);                                     // head 3: rank(W_V) = 2
            v3.copy_(matmul(v3.narrow(1, 0, 2), randn(2, dk, ScalarType.Float64, generator: new Generator(5))));
            w.AttnB.narrow(0, 2 * d + 3 * dk, dk).zero_();
            if (lnZeros)
            {
                layers[1].Ln1W.narrow(0, 0, 3).zero_();
                layers[1].Ln2W.narrow(0, 5, 2).zero_();
            }
        }
        return new TestGauge.Model(layers, m.Globals.Clone());
    }

    [Fact]
    public void DegenerateInputsGiveFiniteOutputAndAnHonestReport()
    {
        using var ck = Open("canon-tiny-f64");
        var c = ck.Config;
        using var m0 = TestGauge.Load(ck);
        using var m = Degenerate(m0, c, lnZeros: true);
        foreach (var form in new[] { CanonicalFormKind.Full, CanonicalFormKind.Paper })
        {
            using var k = Canon(m, c, form, out var report);
            foreach (var l in k.Layers)
                foreach (var (s, t) in l.Named())
                    Assert.True(t.isfinite().all().item<bool>(), $"{form} {s} has non-finite values");
            var lr = report.Layers[0];
            output.WriteLine($"{form.Name()}: " + string.Join(" | ", lr.Notes));
            Assert.True(lr.QkZeroed >= c.HeadDim, "zero head: every QK singular value is 0");
            Assert.True(lr.VoZeroed >= c.HeadDim + (c.HeadDim - 2), "zero head + rank-2 W_V");
            Assert.True(lr.NearTiedHeads >= 1, "identical heads are reported as tied");
            Assert.Contains(lr.Notes, n => n.Contains("composite is zero"));
            double fn = LogitsError(m, k, c);
            using var k2 = Canon(k, c, form, out _, Recompute);
            double idem = MaxRelDiff(k, k2);
            output.WriteLine($"{form.Name()}: logits {fn:E2}, idempotence {idem:E2}");
            Assert.True(fn <= 100 * Eps64);
            Assert.True(idem <= 1e-12);
        }

        // Without the LayerNorm zeros (families 6 and 8 divide by γ) the degenerate model is still orbit-unique.
        using var md = Degenerate(m0, c, lnZeros: false);
        using var kd = Canon(md, c, CanonicalFormKind.Full, out _);
        using var td = TestGauge.Transform(md, c, 7);
        using var ktd = Canon(td, c, CanonicalFormKind.Full, out _);
        double u = MaxRelDiff(kd, ktd);
        output.WriteLine($"degenerate uniqueness {u:E2}");
        Assert.True(u <= 1e-9);
    }
}
