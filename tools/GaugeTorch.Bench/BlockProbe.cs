using System.Diagnostics;
using System.Text.Json;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.Symmetry;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// verify-invariance's per-layer float64 work, in isolation (issue 12, item 1). For the middle layer of MODEL: the
/// time to sample and apply one element of each family (and of all families together), against the forward of the
/// transformed block on T tokens; and the block forward's matmul flop rate against plain matmuls of the same shapes
/// ([T,d]·[d,d] ×4 for Q, K, V, O; [T,d]·[d,F]; [T,F]·[F,d]), interleaved rep by rep so that load hits both alike.
/// </summary>
static class BlockProbe
{
    public static int Run(string path, int tokens, int reps)
    {
        using var _ = no_grad();
        using var ck = Checkpoint.Open(path);
        var t = ck.Traits;
        var stream = new LayerStream(ck);
        int layer = t.Layers / 2;
        using var read = stream.Read(layer, ScalarType.Float64);
        // The evaluator's compute layout: Q, K, V as [d, n, hd] (a permuted copy), so the forward reads them in place.
        using var stored = read.MapNamed((role, w) => role is "q" or "k" or "v" ? w.permute(1, 0, 2).contiguous().permute(1, 0, 2) : w.alias());
        using var x = randn([tokens, t.Hidden], ScalarType.Float64, generator: new Generator(7));
        var rope = GaugeTorch.Model.Forward.RopeTables(t, 0, tokens);
        long d = t.Hidden, f = stored.Up.shape[1], qd = (long)t.QueryHeads * t.HeadDim, kd = (long)t.KvHeads * t.HeadDim;
        double blockFlop = 2.0 * tokens * (d * qd + 2 * d * kd + qd * d + (stored.Gate is null ? 2 : 3) * d * f);

        // Plain matmuls of the block's shapes, contiguous operands.
        var shapes = new List<(long M, long K, long N)> { (tokens, d, qd), (tokens, d, kd), (tokens, d, kd), (tokens, qd, d), (tokens, d, f), (tokens, f, d) };
        if (stored.Gate is not null) shapes.Add((tokens, d, f));
        var ops = shapes.Select(s => (A: randn([s.M, s.K], ScalarType.Float64), B: randn([s.K, s.N], ScalarType.Float64))).ToList();
        double matmulFlop = shapes.Sum(s => 2.0 * s.M * s.K * s.N);

        var fwd = new List<double>();
        var mm = new List<double>();
        void Block() { using var y = GaugeTorch.Model.Forward.Block(x, stored, t, rope); }
        void Matmuls() { foreach (var (a, b) in ops) matmul(a, b).Dispose(); }
        Block(); Matmuls(); // warm-up
        for (int r = 0; r < reps; r++)
        {
            fwd.Add(Seconds(Block));
            mm.Add(Seconds(Matmuls));
        }

        var families = SymmetryCatalog.For(t);
        var rows = new List<object>();
        var groups = families.Select(fam => (Name: fam.Name, Fams: (IReadOnlyList<SymmetryFamily>)[fam])).Append(("all-together", families))
                             .Concat(SymmetryCatalog.ControlsFor(t).Select(c => (Name: c.Name, Fams: (IReadOnlyList<SymmetryFamily>)[c])));
        int streamNo = 0;
        foreach (var (name, fams) in groups)
        {
            var sample = new List<double>();
            var apply = new List<double>();
            var forward = new List<double>();
            for (int r = 0; r <= reps; r++)
            {
                using var scope = NewDisposeScope();
                using var g = new GroupElement(fams, 1, streamNo++, t);
                var sw = Stopwatch.StartNew();
                var tr = g.SampleLayer(layer, stored);
                double s1 = sw.Elapsed.TotalSeconds;
                double s2, s3;
                if (tr.ActivationMaps(t) is { } maps)
                {
                    // As the evaluator runs a dense control: the stored layer with maps (timed within the forward here).
                    s2 = s1;
                    using (var y = GaugeTorch.Model.Forward.Block(x, stored, t, rope, maps)) { }
                    s3 = sw.Elapsed.TotalSeconds;
                }
                else
                {
                    var (w, _) = tr.ApplyTracked(stored, t);
                    s2 = sw.Elapsed.TotalSeconds;
                    using (var y = GaugeTorch.Model.Forward.Block(x, w, t, rope)) { }
                    s3 = sw.Elapsed.TotalSeconds;
                }
                if (r == 0) continue; // warm-up
                sample.Add(s1); apply.Add(s2 - s1); forward.Add(s3 - s2);
            }
            rows.Add(new { group = name, sample_ms = 1000 * Median(sample), apply_ms = 1000 * Median(apply), forward_ms = 1000 * Median(forward),
                           gauge_over_forward = (Median(sample) + Median(apply)) / Median(forward) });
        }
        if (GaugeTorch.PhaseClock.Enabled) Console.Error.WriteLine(GaugeTorch.PhaseClock.Report());
        foreach (var (a, b) in ops) { a.Dispose(); b.Dispose(); }
        if (rope is { } rr) { rr.Cos.Dispose(); rr.Sin.Dispose(); }
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            mode = "block", model = path, layer, tokens, reps, threads = get_num_threads(),
            block_forward_ms = 1000 * Median(fwd), block_gflops = blockFlop / Median(fwd) / 1e9,
            plain_matmuls_ms = 1000 * Median(mm), plain_matmul_gflops = matmulFlop / Median(mm) / 1e9,
            forward_over_matmul_rate = (blockFlop / Median(fwd)) / (matmulFlop / Median(mm)),
            groups = rows,
        }, new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }

    private static double Seconds(Action a)
    {
        var sw = Stopwatch.StartNew();
        a();
        return sw.Elapsed.TotalSeconds;
    }

    private static double Median(List<double> v)
    {
        var s = v.Order().ToList();
        return s[s.Count / 2];
    }
}

/// <summary>Ways to gather the columns of a contiguous float64 [rows, cols] matrix (mlp-perm's up projection), timed single-threaded.</summary>
static class GatherProbe
{
    public static int Run(long rows, long cols, int reps)
    {
        using var _ = no_grad();
        torch.set_num_threads(1);
        var m = randn([rows, cols], ScalarType.Float64);
        var idx = randperm(cols, dtype: ScalarType.Int64);
        var ways = new (string Name, Func<Tensor> F)[]
        {
            ("index_select(1)", () => m.index_select(1, idx)),
            ("index [:, idx]", () => m[TensorIndex.Colon, TensorIndex.Tensor(idx)]),
            ("t.index_select(0).t.contiguous", () => m.t().contiguous().index_select(0, idx).t().contiguous()),
            ("gather(1, expanded)", () => m.gather(1, idx.unsqueeze(0).expand(rows, cols))),
            ("rows index_select(0) on [cols,rows] copy", () => m.index_select(0, idx.remainder(rows))),
            ("clone", () => m.clone()),
        };
        foreach (var (name, f) in ways)
        {
            var ts = new List<double>();
            using (f()) { }                 // warm-up
            for (int r = 0; r < reps; r++) { var sw = Stopwatch.StartNew(); using var y = f(); ts.Add(sw.Elapsed.TotalMilliseconds); }
            ts.Sort();
            Console.WriteLine($"{name,-45} {ts[ts.Count / 2],8:F1} ms");
        }
        using var a = m.index_select(1, idx);
        using var b = m[TensorIndex.Colon, TensorIndex.Tensor(idx)];
        using var c = m.gather(1, idx.unsqueeze(0).expand(rows, cols));
        Console.WriteLine($"equal: {a.equal(b).item<bool>()} {a.equal(c).item<bool>()}");
        return 0;
    }
}
