using System.Diagnostics;
using System.Text.Json;
using GaugeTorch.Evaluation;
using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using static TorchSharp.torch;

/// <summary>
/// verify-invariance's gauge work group by group, through the evaluator itself (issue 12 item 5): for each group of
/// the default run (every family alone, all together, every control) one <see cref="InvarianceEvaluator.Run"/> with
/// PER elements of that group only, on T random tokens (seed 1), float64, with the CLI's native settings; its gauge
/// and forward seconds (the forward of the reference included) and the per-case, per-layer gauge time.
/// </summary>
static class GaugeGroups
{
    public static int Run(string path, int tokens, int perGroup)
    {
        GaugeTorch.NativeRuntimeTuning.TuneForStreaming();   // as the CLI, before libtorch loads (nothing has touched it yet)
        using var ck = Checkpoint.Open(path);
        var t = ck.Traits;
        var rng = new Random(1);
        var ids = Enumerable.Range(0, tokens).Select(_ => rng.Next(t.Vocab)).ToArray();
        var families = SymmetryCatalog.For(t);
        var groups = families.Select(f => (f.Name, (IReadOnlyList<SymmetryFamily>)[f])).Append(("all-together", families))
                             .Concat(SymmetryCatalog.ControlsFor(t).Select(c => (c.Name, (IReadOnlyList<SymmetryFamily>)[c])));
        var rows = new List<object>();
        int stream = 0;
        foreach (var (name, fams) in groups)
        {
            var cases = Enumerable.Range(0, perGroup).Select(_ => new InvarianceCase(name, fams.All(f => f.Valid), false, new GroupElement(fams, 0, stream++, t))).ToList();
            var sw = Stopwatch.StartNew();
            var r = InvarianceEvaluator.Run(ck, ids, ScalarType.Float64, cases);
            rows.Add(new
            {
                group = name, wall_s = sw.Elapsed.TotalSeconds, gauge_s = r.GaugeSeconds, forward_s = r.ForwardSeconds,
                gauge_ms_per_case_layer = 1000 * r.GaugeSeconds / perGroup / t.Layers,
                max_error = r.Cases.Max(c => c.RelativeError),
            });
            Console.Error.WriteLine($"{name}: gauge {r.GaugeSeconds:F2} s, forwards {r.ForwardSeconds:F2} s");
        }
        Console.WriteLine(JsonSerializer.Serialize(new { mode = "gauge-groups", model = path, tokens, per_group = perGroup, layers = t.Layers, groups = rows },
            new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }
}
