using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using GaugeTorch.Audit;
using GaugeTorch.Model;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

/// <summary>
/// <c>gaugetorch audit</c>: the checkpoint's redundancy table; <c>--nullity</c> certifies the catalog by Jacobian
/// nullity on a random model of a given shape; <c>--gradient</c> checks that the loss gradient of the checkpoint is
/// orthogonal to every continuous family's tangents. The catalog comes in as <see cref="FamilyRow"/>s
/// (<see cref="CatalogRows"/>: the symmetry catalog's own families); everything else is in GaugeTorch.Audit.
/// </summary>
public static class AuditCommand
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Default nullity shapes: GAUGE.md §2's (L=2, d=12, h=3, F=20, V=13, P=5) and §6.2's (d=8, H=4, G=2, hd=4, L=2, F=12, V=13).</summary>
    private static (int L, int D, int H, int G, int Hd, int F, int V, int P) DefaultShape(string arch) =>
        arch == "gpt2" ? (2, 12, 3, 3, 4, 20, 13, 5) : (2, 8, 4, 2, 4, 12, 13, 5);

    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var json = JsonOutput.Option("the result");
        var nullity = new Option<bool>("--nullity") { Description = "Certify the catalog: Jacobian nullity of a random model of the shape below (no MODEL). Exit 0: nullity = formula; 1: it is not." };
        var gradient = new Option<bool>("--gradient") { Description = "Gradient orthogonality on MODEL: the largest |<grad L, v>| / (|grad L| |v|) per continuous family (float64, streamed). Exit 0: all below 1e-12." };
        var arch = new Option<string?>("--arch") { Description = "--nullity: gpt2 (default), llama, qwen2 (q/k/v biases) or mistral." };
        var layers = new Option<int?>("--layers") { Description = "--nullity: L (default 2)." };
        var embd = new Option<int?>("--embd") { Description = "--nullity: d (default 12 for gpt2, 8 for the LLaMA family)." };
        var heads = new Option<int?>("--heads") { Description = "--nullity: query heads H (default 3 for gpt2, 4 for the LLaMA family)." };
        var kvHeads = new Option<int?>("--kv-heads") { Description = "--nullity, LLaMA family: KV heads G (default 2; G = H is MHA, 1 is MQA)." };
        var headDim = new Option<int?>("--head-dim") { Description = "--nullity, LLaMA family: head_dim hd, H·hd may differ from d (default 4)." };
        var inner = new Option<int?>("--inner") { Description = "--nullity: MLP width F (default 20 for gpt2, 12 for the LLaMA family)." };
        var vocab = new Option<int?>("--vocab") { Description = "--nullity: V (default 13)." };
        var positions = new Option<int?>("--positions") { Description = "--nullity: P, the sequence length (and GPT-2's position table) (default 5)." };
        var untied = new Option<bool>("--untied") { Description = "--nullity: an untied head." };
        var sequences = new Option<int>("--sequences") { Description = "--nullity: random token sequences (default 0: enough for 2× the parameter count of outputs)." };
        var text = new TextInput();
        var maxTokens = new Option<int?>("--max-tokens") { Description = "--gradient: truncate to this many tokens (default: the model's context)." };
        var tangents = new Option<int?>("--tangents") { Description = "--gradient: random tangents per family (default 3)." };
        var seed = new Option<long>("--seed") { Description = "Seed of the random model (--nullity) or tangents (--gradient).", DefaultValueFactory = _ => 0 };
        var cmd = new Command("audit",
            "The redundancy table of MODEL's gauge group: per family its dimension (formula and number), the total beside the papers' counts, the parameter count and percentage.\n" +
            "--nullity certifies the catalog on a random model by Jacobian nullity; --gradient checks gradient orthogonality on MODEL. Exit 0: ok; 1: a check failed; 2: error.")
        {
            model, json, nullity, gradient, arch, layers, embd, heads, kvHeads, headDim, inner, vocab, positions, untied, sequences,
            maxTokens, tangents, seed,
        };
        foreach (var o in text.Options) cmd.Options.Add(o);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            bool doNullity = r.GetValue(nullity), doGradient = r.GetValue(gradient);
            if (doNullity && doGradient) throw new ArgumentException("give --nullity or --gradient, not both");
            string? jsonPath = r.GetValue(json);
            OutputPaths.File("--json", jsonPath, null, stdoutAllowed: true);
            // Options of one mode given to another would be silently ignored: refuse them by name.
            var shapeOptions = new (string Name, bool Given)[]
            {
                ("--arch", r.GetValue(arch) is not null), ("--layers", r.GetValue(layers) is not null), ("--embd", r.GetValue(embd) is not null),
                ("--heads", r.GetValue(heads) is not null), ("--kv-heads", r.GetValue(kvHeads) is not null), ("--head-dim", r.GetValue(headDim) is not null),
                ("--inner", r.GetValue(inner) is not null), ("--vocab", r.GetValue(vocab) is not null), ("--positions", r.GetValue(positions) is not null),
                ("--untied", r.GetValue(untied)), ("--sequences", r.GetValue(sequences) != 0),
            };
            var gradientOptions = new (string Name, bool Given)[]
            {
                ("--text", r.GetValue(text.Text) is not null), ("--text-file", r.GetValue(text.TextFile) is not null), ("--tokens", r.GetValue(text.Tokens) is not null),
                ("--max-tokens", r.GetValue(maxTokens) is not null), ("--tangents", r.GetValue(tangents) is not null),
            };
            if (!doNullity && shapeOptions.FirstOrDefault(o => o.Given) is { Name: not null } so)
                throw new ArgumentException($"{so.Name} applies to --nullity only");
            if (!doGradient && gradientOptions.FirstOrDefault(o => o.Given) is { Name: not null } go)
                throw new ArgumentException($"{go.Name} applies to --gradient only");
            if (doNullity)
            {
                if (r.GetValue(model) is string m) throw new ArgumentException($"--nullity builds a random model of the given shape; MODEL ('{m}') is not used");
                string a = (r.GetValue(arch) ?? "gpt2").Trim().ToLowerInvariant();
                var def = a is "gpt2" or "llama" or "qwen2" or "mistral" ? DefaultShape(a) : throw new ArgumentException($"--arch: '{a}' is not gpt2, llama, qwen2 or mistral");
                int? g = r.GetValue(kvHeads), hd = r.GetValue(headDim);
                var traits = RandomModel.Traits(a, r.GetValue(layers) ?? def.L, r.GetValue(embd) ?? def.D, r.GetValue(heads) ?? def.H,
                    a == "gpt2" ? g : g ?? def.G, a == "gpt2" ? hd : hd ?? def.Hd, r.GetValue(inner) ?? def.F, r.GetValue(vocab) ?? def.V,
                    r.GetValue(positions) ?? def.P, r.GetValue(untied));
                if (r.GetValue(sequences) < 0) throw new ArgumentException("--sequences must not be negative");
                return Nullity(traits, CatalogRows.For(traits), new NullityOptions { Sequences = r.GetValue(sequences), Seed = r.GetValue(seed) }, jsonPath);
            }
            using var ck = Checkpoint.Open(r.GetValue(model));
            if (doGradient)
            {
                int k = r.GetValue(tangents) ?? 3;
                if (k < 1) throw new ArgumentException("--tangents must be at least 1");
                var ids = text.Resolve(r, ck.Traits.Vocab).Ids;
                if (r.GetValue(maxTokens) is < 2) throw new ArgumentException("--max-tokens must be at least 2");
                int cap = Math.Min(r.GetValue(maxTokens) ?? int.MaxValue, ck.Traits.MaxPositions);
                if (ids.Length > cap) ids = ids[..cap];
                if (ids.Length < 2) throw new ArgumentException($"--gradient needs at least 2 tokens (the text gives {ids.Length})");
                return Gradient(ck, CatalogRows.For(ck.Traits), ids, k, r.GetValue(seed), jsonPath);
            }
            return Table(ck, CatalogRows.For(ck.Traits), jsonPath);
        }));
        return cmd;
    }

    private static JsonObject TraitsJson(ModelTraits t) => new()
    {
        ["architecture"] = t.Architecture, ["layers"] = t.Layers, ["hidden"] = t.Hidden, ["heads"] = t.QueryHeads, ["kv_heads"] = t.KvHeads,
        ["head_dim"] = t.HeadDim, ["inner"] = t.Inner, ["vocab"] = t.Vocab, ["positions"] = t.MaxPositions, ["tied"] = t.Tied,
        ["norm"] = t.Norm.ToString(), ["qkv_bias"] = t.QkvBias,
    };

    private static void WriteJson(string? path, JsonObject o, IEnumerable<string>? inputs = null)
    {
        if (path is not null) JsonOutput.Write(path, o, inputs);
    }

    /// <summary>Tables go to stdout unless the JSON does.</summary>
    private static void Show(Spectre.Console.Rendering.IRenderable r, string? jsonPath)
    {
        if (!OutputPaths.IsStdout(jsonPath)) AnsiConsole.Write(r);
    }

    private static void Say(string markup, string? jsonPath)
    {
        if (!OutputPaths.IsStdout(jsonPath)) AnsiConsole.MarkupLine(markup);
    }

    private static int Table(Checkpoint ck, IEnumerable<FamilyRow> catalog, string? jsonPath)
    {
        var table = RedundancyTable.For(ck.Traits, catalog);
        var t = new Table().Title($"gauge redundancy of {Markup.Escape(ck.Directory)} — {Markup.Escape(ck.Traits.Describe())}");
        t.AddColumn("family").AddColumn("no.").AddColumn("dimension formula").AddColumn(new TableColumn("dimension").RightAligned());
        foreach (var row in table.Rows)
            t.AddRow(Markup.Escape(row.Name), Markup.Escape(row.Number), Markup.Escape(row.Formula), row.Continuous ? row.Dimension.ToString("N0") : "[grey]discrete[/]");
        t.AddRow("[bold]total (continuous)[/]", "", "", $"[bold]{table.Total:N0}[/]");
        Show(t, jsonPath);
        var c = new Table().Title("beside the literature").AddColumn("count").AddColumn("formula").AddColumn(new TableColumn("value").RightAligned())
            .AddColumn(new TableColumn("% of parameters").RightAligned()).AddColumn("note");
        c.AddRow("[bold]this catalog[/]", "Σ families above", $"[bold]{table.Total:N0}[/]", $"[bold]{table.Percent:0.000} %[/]", "");
        foreach (var rc in table.References)
            c.AddRow(Markup.Escape(rc.Name), Markup.Escape(rc.Formula), rc.Value.ToString("N0"), $"{100.0 * rc.Value / table.Parameters:0.000} %", Markup.Escape(rc.Note));
        c.AddRow("parameters", "", table.Parameters.ToString("N0"), "100 %", ck.Tied ? "tied head counted once" : "untied head included");
        Show(c, jsonPath);
        WriteJson(jsonPath, new JsonObject
        {
            ["model"] = ck.Directory,
            ["traits"] = TraitsJson(ck.Traits),
            ["families"] = new JsonArray(table.Rows.Select(x => (JsonNode)new JsonObject
            {
                ["name"] = x.Name, ["gauge_md"] = x.Number, ["formula"] = x.Formula, ["dimension"] = x.Dimension, ["continuous"] = x.Continuous,
            }).ToArray()),
            ["total"] = table.Total,
            ["parameters"] = table.Parameters,
            ["percent"] = table.Percent,
            ["references"] = new JsonArray(table.References.Select(x => (JsonNode)new JsonObject
            {
                ["name"] = x.Name, ["formula"] = x.Formula, ["value"] = x.Value, ["percent"] = 100.0 * x.Value / table.Parameters, ["note"] = x.Note,
            }).ToArray()),
        }, ck.InputFiles);
        return ExitCodes.Ok;
    }

    private static int Nullity(ModelTraits traits, IEnumerable<FamilyRow> catalog, NullityOptions options, string? jsonPath)
    {
        var table = RedundancyTable.For(traits, catalog);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        NullityResult? res = null;
        CliCommon.Progress().Start(ctx =>
            {
                var task = ctx.AddTask($"Jacobian rows, {traits.Describe()}", maxValue: 1.0);
                res = JacobianNullity.Run(traits, catalog, options, new Progress<(long Done, long Total)>(p => task.Value = (double)p.Done / Math.Max(1, p.Total)));
                task.Value = 1.0;
            });
        double seconds = sw.Elapsed.TotalSeconds;
        var n = res!;
        string formulaText = string.Join(" + ", table.Rows.Where(x => x.Continuous).Select(x => $"{x.Formula} [{x.Name}]"));
        var t = new Table().Title($"Jacobian nullity — {Markup.Escape(traits.Describe())}").AddColumn("quantity").AddColumn(new TableColumn("value").RightAligned());
        t.AddRow("parameters p", n.Parameters.ToString("N0"));
        t.AddRow("outputs m (sequences × positions × (V − 1))", $"{n.Outputs:N0} ({n.Sequences} × {n.SequenceLength} × {traits.Vocab - 1})");
        t.AddRow("rank (σ > max(m, p)·ε·σ_max)", n.Rank.ToString("N0"));
        t.AddRow("[bold]nullity[/]", $"[bold]{n.Nullity:N0}[/]");
        t.AddRow("[bold]catalog formula[/]", $"[bold]{n.Formula:N0}[/]");
        t.AddRow("gap σ_rank / σ_rank+1", n.Gap.ToString("0.00e+00"));
        t.AddRow("smallest counted σ / σ_max", n.SmallestKept.ToString("0.00e+00"));
        t.AddRow("largest dropped σ / σ_max", n.LargestDropped.ToString("0.00e+00"));
        t.AddRow("threshold max(m, p)·ε", n.RelativeTolerance.ToString("0.00e+00"));
        t.AddRow("weakly broken (counted, σ/σ_max ≤ 1e-4)", n.WeakKept.Length == 0 ? "none" : Markup.Escape(string.Join(", ", n.WeakKept.Select(x => x.ToString("0.0e+00")))));
        t.AddRow("time", $"{seconds:0.0} s (Jacobian {n.JacobianSeconds:0.0} s, SVD {n.SvdSeconds:0.0} s)");
        Show(t, jsonPath);
        Say($"formula: {Markup.Escape(formulaText)}", jsonPath);
        if (!n.Clear)
            Say($"[yellow]the singular-value gap {n.Gap:0.0e+00} is below {JacobianNullity.MinimumGap:0e+0}: the rank decision is not clear, so nothing is certified[/]", jsonPath);
        Say(n.Certified ? $"[green]CERTIFIED[/]: nullity {n.Nullity:N0} = catalog formula {n.Formula:N0}"
            : $"[red]NOT CERTIFIED[/]: nullity {n.Nullity:N0}, catalog formula {n.Formula:N0}", jsonPath);
        WriteJson(jsonPath, new JsonObject
        {
            ["nullity"] = n.Nullity, ["formula"] = n.Formula, ["params"] = n.Parameters, ["rank"] = n.Rank,
            ["gap"] = double.IsFinite(n.Gap) ? n.Gap : null,   // ∞ when nothing is dropped (JSON has no infinity)
            ["certified"] = n.Certified, ["formula_text"] = formulaText, ["shape"] = TraitsJson(traits), ["outputs"] = n.Outputs,
            ["sequences"] = n.Sequences, ["sequence_length"] = n.SequenceLength, ["relative_tolerance"] = n.RelativeTolerance,
            ["smallest_kept"] = n.SmallestKept, ["largest_dropped"] = n.LargestDropped, ["smallest_dropped"] = n.SmallestDropped,
            ["weak_kept"] = new JsonArray(n.WeakKept.Select(x => (JsonNode)x).ToArray()),
            ["families"] = new JsonArray(table.Rows.Select(x => (JsonNode)new JsonObject { ["name"] = x.Name, ["formula"] = x.Formula, ["dimension"] = x.Dimension }).ToArray()),
            ["estimated_bytes"] = n.EstimatedBytes, ["seed"] = options.Seed,
            ["timing"] = new JsonObject { ["total_s"] = seconds, ["jacobian_s"] = n.JacobianSeconds, ["svd_s"] = n.SvdSeconds },
        });
        return n.Certified ? ExitCodes.Ok : ExitCodes.CheckFailed;
    }

    private static int Gradient(Checkpoint ck, IEnumerable<FamilyRow> catalog, int[] ids, int perFamily, long seed, string? jsonPath)
    {
        var traits = ck.Traits;
        var rows = catalog.Where(f => f.Holds(traits) && f.IsContinuous(traits)).ToList();
        var withTangents = rows.Where(f => f.Tangent is not null).ToList();
        var without = rows.Where(f => f.Tangent is null).Select(f => f.Name).ToList();
        if (withTangents.Count == 0) throw new NotSupportedException($"no continuous family of {traits.Describe()} has a tangent sampler");
        var families = withTangents.Select((f, i) => new TangentFamily(f.Name,
            Enumerable.Range(0, perFamily).Select(k => f.Tangent!(traits, seed * 1_000_003 + i * 1009 + k)).ToList())).ToList();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        GradientResult? res = null;
        var source = new CheckpointSource(ck);
        CliCommon.Progress().Start(ctx =>
            {
                var task = ctx.AddTask($"float64 gradient, {traits.Layers} layers", maxValue: 1.0);
                res = GradientOrthogonality.Run(source, ids, families, progress: new Progress<(int Done, int Total)>(p => task.Value = (double)p.Done / p.Total));
                task.Value = 1.0;
            });
        double seconds = sw.Elapsed.TotalSeconds;
        var g = res!;
        bool passed = g.Families.All(f => f.Max <= GradientOrthogonality.Bound);
        var t = new Table().Title($"gradient orthogonality — {Markup.Escape(ck.Directory)}, float64, {g.Tokens} tokens, loss {g.Loss:0.0000}, |grad L| = {g.GradientNorm:0.000e+00}")
            .AddColumn("family").AddColumn(new TableColumn("tangents").RightAligned()).AddColumn(new TableColumn("max |<grad L, v>| / (|grad L| |v|)").RightAligned())
            .AddColumn(new TableColumn("/ ε").RightAligned()).AddColumn("bound").AddColumn("result");
        double eps = Math.Pow(2, -52);
        foreach (var f in g.Families)
            t.AddRow(Markup.Escape(f.Name), f.Cosines.Count.ToString(), f.Max.ToString("0.00e+00"), (f.Max / eps).ToString("0.00e+00"),
                $"≤ {GradientOrthogonality.Bound:0e+0}", f.Max <= GradientOrthogonality.Bound ? "[green]pass[/]" : "[red]FAIL[/]");
        Show(t, jsonPath);
        if (without.Count > 0) Say($"[yellow]no tangent sampler yet for: {Markup.Escape(string.Join(", ", without))}[/]", jsonPath);
        Say($"{(passed ? "[green]PASSED[/]" : "[red]FAILED[/]")}: {g.Families.Count(f => f.Max <= GradientOrthogonality.Bound)}/{g.Families.Count} families; " +
                               $"{seconds:0.0} s (forward {g.ForwardSeconds:0.0} s, backward {g.BackwardSeconds:0.0} s, tangents {g.TangentSeconds:0.0} s)", jsonPath);
        WriteJson(jsonPath, new JsonObject
        {
            ["model"] = ck.Directory, ["traits"] = TraitsJson(traits), ["tokens"] = g.Tokens, ["loss"] = g.Loss, ["gradient_norm"] = g.GradientNorm,
            ["bound"] = GradientOrthogonality.Bound, ["seed"] = seed, ["tangents_per_family"] = perFamily,
            ["families"] = new JsonArray(g.Families.Select(f => (JsonNode)new JsonObject
            {
                ["name"] = f.Name, ["max_cosine"] = f.Max, ["passed"] = f.Max <= GradientOrthogonality.Bound,
                ["cosines"] = new JsonArray(f.Cosines.Select(x => (JsonNode)x).ToArray()),
                ["tangent_norms"] = new JsonArray(f.TangentNorms.Select(x => (JsonNode)x).ToArray()),
            }).ToArray()),
            ["families_without_tangents"] = new JsonArray(without.Select(x => (JsonNode)x).ToArray()),
            ["passed"] = passed,
            ["timing"] = new JsonObject { ["total_s"] = seconds, ["forward_s"] = g.ForwardSeconds, ["backward_s"] = g.BackwardSeconds, ["tangents_s"] = g.TangentSeconds },
        }, ck.InputFiles);
        return passed ? ExitCodes.Ok : ExitCodes.CheckFailed;
    }
}
