using System.Diagnostics;
using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Canonical;
using static TorchSharp.torch;

// Usage: CanonicalMeasure PRESET|MODEL_DIR [SEEDS=2] [F64|F32] [untied]
// Makes (for a preset) a random checkpoint (untied head with "untied"), then measures in float64:
//   function error   ‖Y(canon θ) − Y(θ)‖/‖Y(θ)‖ on row-centred logits of the built-in text,
//   idempotence      max over tensors ‖canon(canon θ) − canon θ‖/‖canon θ‖, recomputed (canonical input not kept),
//   uniqueness       max over tensors and seeds ‖canon(g·θ) − canon θ‖/‖canon θ‖ for g of every family of GAUGE.md
//                    §2 and §2b (head, unit and residual permutations and the global sign; 12–16 when untied),
// for the full and the paper form (the paper form with g restricted to families 1–3).
//        CanonicalMeasure compare PRESET [DTYPE] [untied]: compare's distances and derived tolerances.
string what = args.Length > 0 ? args[0] : "gpt2";
if (what == "qr")
{
    if (args.Length > 1) TorchSharp.torch.set_num_threads(int.Parse(args[1]));
    Console.Error.WriteLine($"threads {TorchSharp.torch.get_num_threads()}");
    var a = randn(25, 1601, 64, ScalarType.Float64);
    for (int i = 0; i < 3; i++)
    {
        var sw1 = Stopwatch.StartNew();
        var (q, r) = linalg.qr(a);
        Console.Error.WriteLine($"batched qr {sw1.Elapsed.TotalMilliseconds:F0} ms");
        sw1.Restart();
        for (int j = 0; j < 25; j++) { var (q1, r1) = linalg.qr(a[j]); }
        Console.Error.WriteLine($"loop qr {sw1.Elapsed.TotalMilliseconds:F0} ms");
        sw1.Restart();
        var g = matmul(a.transpose(1, 2), a);
        var ch = linalg.cholesky(g);
        Console.Error.WriteLine($"gram+chol {sw1.Elapsed.TotalMilliseconds:F0} ms");
        sw1.Restart();
        var (u, s2, vh) = linalg.svd(randn(25, 64, 64, ScalarType.Float64), fullMatrices: false);
        Console.Error.WriteLine($"svd core {sw1.Elapsed.TotalMilliseconds:F0} ms");
        sw1.Restart();
        var (hh, tau) = linalg.qr(a, linalg.QRMode.R);
        Console.Error.WriteLine($"qr R only {sw1.Elapsed.TotalMilliseconds:F0} ms");
        sw1.Restart();
        var at = a.transpose(1, 2);
        var gg = matmul(at, a);
        Console.Error.WriteLine($"  gram {sw1.Elapsed.TotalMilliseconds:F0} ms"); sw1.Restart();
        var (l, info) = linalg.cholesky_ex(gg);
        Console.Error.WriteLine($"  chol_ex {sw1.Elapsed.TotalMilliseconds:F0} ms"); sw1.Restart();
        var qt = linalg.solve_triangular(l, at, upper: false);
        Console.Error.WriteLine($"  solve_tri {sw1.Elapsed.TotalMilliseconds:F0} ms"); sw1.Restart();
        var qt2 = linalg.solve_triangular(l, at.contiguous(), upper: false);
        Console.Error.WriteLine($"  solve_tri contiguous {sw1.Elapsed.TotalMilliseconds:F0} ms"); sw1.Restart();
        var qt3 = linalg.solve_triangular(l.transpose(1,2), a, upper: true, left: false);
        Console.Error.WriteLine($"  solve_tri right {sw1.Elapsed.TotalMilliseconds:F0} ms"); sw1.Restart();
        var inv = linalg.inv(l); var qt4 = matmul(a, inv.transpose(1,2));
        Console.Error.WriteLine($"  inv+matmul {sw1.Elapsed.TotalMilliseconds:F0} ms"); sw1.Restart();
        var (ev, evec) = linalg.eigh(gg);
        Console.Error.WriteLine($"  eigh {sw1.Elapsed.TotalMilliseconds:F0} ms"); sw1.Restart();
    }
    return;
}
if (what == "compare")
{
    // compare PRESET [DTYPE]: distance of a checkpoint to a random gauge transform of itself stored in DTYPE, and to a
    // copy with N(0, 1e-3) noise on layer 1 head 2's query and value columns.
    var cdt = args.Length > 2 ? DTypes.ParseUser(args[2]) : DType.F32;
    bool cuntied = args.Contains("untied");
    string root = Path.Combine(Path.GetTempPath(), $"canon-compare-{Environment.ProcessId}");
    try
    {
        var cfg = Gpt2Config.Presets[args[1]];
        CheckpointMaker.Make(cfg, Path.Combine(root, "a"), new MakeCheckpointOptions { Seed = 7, DType = cdt, Untied = cuntied });
        using var ca = Gpt2Checkpoint.Open(Path.Combine(root, "a"));
        using (var m0 = TestGauge.Load(ca))
        {
            using (var t = TestGauge.Transform(m0, cfg, 5)) Save(t, Path.Combine(root, "t"));
            using (no_grad())
            {
                long d = cfg.NEmbd, dk = cfg.HeadDim;
                foreach (long off in new[] { 0L, 2 * d })
                {
                    var blk = m0.Layers[1].AttnW.narrow(1, off + 2 * dk, dk);
                    blk.add_(randn(blk.shape, ScalarType.Float64, generator: new TorchSharp.torch.Generator(99)) * 1e-3);
                }
            }
            Save(m0, Path.Combine(root, "n"));
        }
        foreach (var other in new[] { "t", "n" })
        {
            using var cb = Gpt2Checkpoint.Open(Path.Combine(root, other));
            var sw2 = Stopwatch.StartNew();
            var res = CanonicalCompare.Compare(ca, cb);
            var second = res.Layers.SelectMany(l => l.Heads).Select(h => h.Distance).OrderDescending().Skip(1).First();
            Console.WriteLine($"{args[1]} {cdt}{(cuntied ? " untied" : "")} vs {(other == "t" ? "random transform" : "1e-3 noise on layer 1 head 2")}: largest {res.Largest:E2} at {res.LargestWhere}; second-largest head {second:E2}; " +
                              $"tolerance {res.Tolerance:E2} ({res.ToleranceBasis}); function {res.FunctionDistance:E2} vs {res.FunctionTolerance:E2}; {(res.Equivalent ? "equivalent" : "not equivalent")}; {sw2.Elapsed.TotalSeconds:F1} s");
        }
    }
    finally
    {
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }
    void Save(TestGauge.Model m, string outDir)
    {
        Directory.CreateDirectory(outDir);
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        for (int l = 0; l < m.Layers.Count; l++)
            foreach (var (sfx, t) in m.Layers[l].Named()) tensors.Add(new(Gpt2Keys.Layer(l, sfx), t.to_type(cdt.ToScalarType())));
        foreach (var (n, t) in m.Globals.Named()) tensors.Add(new(n, t.to_type(cdt.ToScalarType())));
        SafeTensorWriter.WriteAll(Path.Combine(outDir, SafeTensorStore.SingleFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(outDir, "config.json"), (Gpt2Config.Presets[args[1]] with { TieWordEmbeddings = m.Globals.LmHead is null }).ToJsonText());
    }
    return;
}
if (what == "time")
{
    using var tck = Gpt2Checkpoint.Open(args[1]);
    for (int l = 0; l < 3; l++)
    {
        var sw0 = Stopwatch.StartNew();
        using var lw = tck.LoadLayer(l, ScalarType.Float64);
        Console.Error.WriteLine($"load {sw0.Elapsed.TotalMilliseconds:F0} ms");
        sw0.Restart();
        using var kw = CanonicalForm.CanonicalizeLayer(lw, tck.Config, new LayerReport { Layer = l });
        Console.Error.WriteLine($"layer {l}: {sw0.Elapsed.TotalMilliseconds:F0} ms");
    }
    var swg = Stopwatch.StartNew();
    using var gg = tck.LoadGlobals(ScalarType.Float64);
    var (kg0, frame0) = CanonicalForm.CanonicalizeGlobals(gg);
    kg0.Dispose();
    frame0.Dispose();
    Console.Error.WriteLine($"globals {swg.Elapsed.TotalMilliseconds:F0} ms");
    return;
}
int seeds = args.Length > 1 ? int.Parse(args[1]) : 2;
var dtype = args.Length > 2 ? DTypes.ParseUser(args[2]) : DType.F64;
bool untied = args.Contains("untied");
string dir = what;
string? temp = null;
if (Gpt2Config.Presets.TryGetValue(what, out var preset))
{
    temp = Path.Combine(Path.GetTempPath(), $"canon-measure-{what}-{dtype}-{Environment.ProcessId}");
    CheckpointMaker.Make(preset, temp, new MakeCheckpointOptions { Seed = 42, DType = dtype, Untied = untied });
    dir = temp;
}
try
{
    using var ck = Gpt2Checkpoint.Open(dir);
    var c = ck.Config;
    var tokens = Gpt2Tokenizer.Encode(Gpt2Tokenizer.BuiltInText).Take(c.NPositions).Select(t => t % c.VocabSize).ToArray();
    using var m = TestGauge.Load(ck);
    Console.WriteLine($"model {what} ({ck.StorageDType}, {(ck.Tied ? "tied" : "untied")}, L={c.NLayer}, d={c.NEmbd}, h={c.NHead}), {tokens.Length} tokens, {seeds} seeds");
    var recompute = CanonicalPrecision.Float64 with { KeepCanonicalInput = false };
    foreach (var form in new[] { CanonicalFormKind.Full, CanonicalFormKind.Paper })
    {
        var sw = Stopwatch.StartNew();
        var (kl, kg, report) = CanonicalForm.Canonicalize(m.Layers, m.Globals, c, form);
        using var k = new TestGauge.Model(kl, kg);
        double tCanon = sw.Elapsed.TotalSeconds;
        double fn = LogitsError(m, k);
        var (k2l, k2g, _) = CanonicalForm.Canonicalize(k.Layers, k.Globals, c, form, recompute);
        using var k2 = new TestGauge.Model(k2l, k2g);
        double idem = MaxRelDiff(k, k2);
        var (k3l, k3g, keptReport) = CanonicalForm.Canonicalize(k.Layers, k.Globals, c, form);
        using var k3 = new TestGauge.Model(k3l, k3g);
        double kept = MaxRelDiff(k, k3);
        double uniq = 0;
        for (int s = 1; s <= seeds; s++)
        {
            using var t = TestGauge.Transform(m, c, 1000 + s, papersFamiliesOnly: form == CanonicalFormKind.Paper);
            var (ktl, ktg, _) = CanonicalForm.Canonicalize(t.Layers, t.Globals, c, form);
            using var kt = new TestGauge.Model(ktl, ktg);
            uniq = Math.Max(uniq, MaxRelDiff(k, kt));
        }
        var fr = report.Frame;
        Console.WriteLine($"{form.Name(),-5}: canonicalize {tCanon:F1} s in memory; logits error {fn:E2} ({fn / Math.Pow(2, -52):F1} eps); " +
                          $"idempotence {idem:E2} recomputed, {kept:E2} with canonical input kept ({keptReport.KeptLayers} layers kept); uniqueness {uniq:E2}; " +
                          $"near-degenerate {report.NearDegenerate}, near-tied heads {report.NearTiedHeads}, units {report.NearTiedUnits}, signs {report.NearTiedSigns}; unbroken {report.UnbrokenTies}; Householder fallbacks {report.HouseholderFallbacks}; " +
                          $"frame {fr.Kind} (γ_f ties {fr.GammaTies}, β_f zero {fr.BetaZero}, wte rank {fr.EmbeddingRank}, near-degenerate {fr.EmbeddingNearDegenerate})");
    }

    double LogitsError(TestGauge.Model a, TestGauge.Model b)
    {
        using var ya = TestGauge.Logits(a, c, tokens);
        using var yb = TestGauge.Logits(b, c, tokens);
        return (ya - yb).norm().item<double>() / (ya.norm().item<double>() + Math.Pow(2, -52));
    }
}
finally
{
    if (temp is not null) Directory.Delete(temp, recursive: true);
}

static double MaxRelDiff(TestGauge.Model a, TestGauge.Model b)
{
    double worst = 0;
    var pairs = a.Layers.Zip(b.Layers).SelectMany(p => p.First.Named().Zip(p.Second.Named(), (x, y) => (x.Tensor, y.Tensor)))
        .Concat(a.Globals.Named().Zip(b.Globals.Named(), (x, y) => (x.Tensor, y.Tensor)));
    foreach (var (x, y) in pairs)
    {
        using var scope = NewDisposeScope();
        double diff = (x - y).norm().item<double>();
        if (diff == 0) continue;
        worst = Math.Max(worst, diff / Math.Max(x.norm().item<double>(), y.norm().item<double>()));
    }
    return worst;
}
