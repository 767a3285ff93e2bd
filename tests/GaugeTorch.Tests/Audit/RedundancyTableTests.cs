using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Audit;
using GaugeTorch.Model;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Audit;

/// <summary>
/// The redundancy table against GAUGE.md's tables (§2, §2b, §6.2): per-family names, totals, parameter counts and
/// the literature's counts, for the four GPT-2 sizes and the four LLaMA-family shapes; and <c>gaugetorch audit</c>
/// on checkpoints.
/// </summary>
public class RedundancyTableTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static ModelTraits Gpt2(string preset, bool tied = true) => new Gpt2Adapter(Gpt2Config.Presets[preset]).Traits with { Tied = tied };

    /// <summary>HuggingFace shapes of the LLaMA-family models in GAUGE.md §6.2's table.</summary>
    internal static ModelTraits Llama(string name) => name switch
    {
        "Qwen2-0.5B" => LlamaTraits("qwen2", 24, 896, 14, 2, 64, 4864, 151936, tied: true, bias: true),
        "Llama-3.2-1B" => LlamaTraits("llama", 16, 2048, 32, 8, 64, 8192, 128256, tied: true, bias: false),
        "Llama-2-7B" => LlamaTraits("llama", 32, 4096, 32, 32, 128, 11008, 32000, tied: false, bias: false),
        "Mistral-7B" => LlamaTraits("mistral", 32, 4096, 32, 8, 128, 14336, 32000, tied: false, bias: false),
        _ => throw new ArgumentException(name),
    };

    private static ModelTraits LlamaTraits(string arch, int l, int d, int h, int g, int hd, int f, int v, bool tied, bool bias) => new()
    {
        Architecture = arch, Layers = l, Hidden = d, QueryHeads = h, KvHeads = g, HeadDim = hd, Inner = f, Vocab = v, MaxPositions = 4096,
        Norm = NormKind.RmsNorm, NormEps = 1e-6, Positions = PositionKind.Rotary, Rope = new RopeSpec(10000), Mlp = MlpKind.SwiGlu,
        QkvBias = bias, OutBias = false, MlpBias = false, Tied = tied,
    };

    [Theory]
    [InlineData("gpt2", true, 124_439_808L, 1_347_352L, 1_179_648L, 1_473_409L)]
    [InlineData("gpt2-medium", true, 354_823_168L, 3_590_192L, 3_145_728L, 3_145_728L + 1023L * 1022 / 2)]
    [InlineData("gpt2-large", true, 774_030_080L, 6_730_056L, 5_898_240L, 5_898_240L + 1279L * 1278 / 2)]
    [InlineData("gpt2-xl", true, 1_557_611_200L, 11_215_520L, 9_830_400L, 11_108_001L)]
    [InlineData("gpt2", false, 124_439_808L + 50257L * 768, 1_693_673L, 1_179_648L, 1_473_409L)]
    public void Gpt2TotalsMatchGaugeMd(string preset, bool tied, long parameters, long total, long gmax, long vanNierop)
    {
        var t = RedundancyTable.For(Gpt2(preset, tied), ProvisionalCatalog.Rows);
        Assert.Equal(total, t.Total);
        Assert.Equal(parameters, t.Parameters);
        Assert.Equal(Gpt2Config.Presets[preset].ParameterCount(tied), t.Parameters);
        Assert.Equal(gmax, t.References.Single(r => r.Name == "G_max").Value);
        Assert.Equal(vanNierop, t.References.Single(r => r.Name == "van Nierop").Value);
        if (preset == "gpt2" && tied) Assert.Equal("1.083", t.Percent.ToString("0.000"));
        if (preset == "gpt2-xl") Assert.Equal("0.720", t.Percent.ToString("0.000"));
    }

    [Theory]
    [InlineData("Qwen2-0.5B", 494_032_768L, 199_680L, 359_424L)]
    [InlineData("Llama-3.2-1B", 1_235_814_400L, 532_480L, 729_088L)]
    [InlineData("Llama-2-7B", 6_738_415_616L, 16_908_288L, 25_917_440L)]
    [InlineData("Mistral-7B", 7_241_732_096L, 4_227_072L, 13_342_720L)]
    public void LlamaFamilyTotalsMatchGaugeMd(string name, long parameters, long gShare, long total)
    {
        var t = RedundancyTable.For(Llama(name), ProvisionalCatalog.Rows);
        output.WriteLine($"{name} ({t.Traits.Describe()}): " + string.Join(", ", t.Rows.Select(r => $"{r.Name} {(r.Continuous ? r.Dimension.ToString("N0") : "discrete")}")) +
                         $"; total {t.Total:N0} = {t.Percent:0.000} % of {t.Parameters:N0}; G_share,RoPE {t.References.Single().Value:N0} = {100.0 * t.References.Single().Value / t.Parameters:0.000} %");
        Assert.Equal(total, t.Total);
        Assert.Equal(parameters, t.Parameters);
        Assert.Equal(gShare, t.References.Single().Value);
        Assert.Equal("G_share,RoPE", t.References.Single().Name);
    }

    [Fact]
    public void FamilyNamesAreExactlyTheIssuesPerArchitectureAndHead()
    {
        string[] gpt2 = ["qk", "vo", "head-perm", "mlp-perm", "key-bias", "value-bias", "ln-gain", "ln-bias", "reader-mean", "writer-mean", "embedding-offset", "residual-perm"];
        string[] gpt2Untied = ["token-mean", "final-gain", "unembed-offset", "final-bias", "residual-rotation"];
        string[] llama = ["qk-rope", "vo", "head-perm", "group-perm", "mlp-perm", "mlp-scale", "norm-gain"];
        Assert.Equal(gpt2, Names(Gpt2("gpt2")));
        Assert.Equal(gpt2.Concat(gpt2Untied), Names(Gpt2("gpt2", tied: false)));
        Assert.Equal(llama.Append("residual-signed-perm"), Names(Llama("Qwen2-0.5B")));
        Assert.Equal(llama.Concat(["final-gain", "unembed-offset", "residual-rotation"]), Names(Llama("Mistral-7B")));
        // The discrete families add no dimension; every continuous one has a tangent sampler.
        foreach (var t in new[] { Gpt2("gpt2"), Gpt2("gpt2", false), Llama("Qwen2-0.5B"), Llama("Llama-2-7B") })
            foreach (var f in ProvisionalCatalog.For(t))
                Assert.Equal(f.Formula.StartsWith("0 (discrete", StringComparison.Ordinal), f.Dimension(t) == 0);
        Assert.All(ProvisionalCatalog.Rows.Where(f => f.Dimension(Gpt2("gpt2", false)) > 0 || f.Dimension(Llama("Llama-2-7B")) > 0), f => Assert.NotNull(f.Tangent));
    }

    /// <summary>The audit's rows from the symmetry catalog give GAUGE.md's table as the stand-in list does: names, numbers, totals.</summary>
    [Fact]
    public void CatalogRowsGiveTheSameTables()
    {
        var shapes = new[] { "gpt2", "gpt2-xl" }.SelectMany(p => new[] { Gpt2(p), Gpt2(p, false) })
            .Concat(new[] { "Qwen2-0.5B", "Llama-3.2-1B", "Llama-2-7B", "Mistral-7B" }.Select(Llama));
        foreach (var t in shapes)
        {
            var a = RedundancyTable.For(t, ProvisionalCatalog.Rows);
            var b = RedundancyTable.For(t, CatalogRows.For(t));
            Assert.Equal(a.Total, b.Total);
            Assert.Equal(a.Parameters, b.Parameters);
            Assert.Equal(a.Rows.Select(r => (r.Name, r.Dimension, r.Continuous)), b.Rows.Select(r => (r.Name, r.Dimension, r.Continuous)));
            Assert.Equal(a.Rows.Select(r => r.Formula), b.Rows.Select(r => r.Formula));
            Assert.All(b.Rows, r => Assert.StartsWith("§", r.Number));
            Assert.All(CatalogRows.For(t).Where(r => r.IsContinuous(t)), r => Assert.NotNull(r.Tangent));
        }
    }

    private static string[] Names(ModelTraits t) => RedundancyTable.For(t, ProvisionalCatalog.Rows).Rows.Select(r => r.Name).ToArray();

    [Fact]
    public void ParameterCountEqualsTheStoredTensors()
    {
        foreach (bool untied in new[] { false, true })
        {
            using var ck = Checkpoint.Open(TestCheckpoints.Get(untied ? "audit-untied" : "audit-tied", options: new MakeCheckpointOptions { Seed = 3, Untied = untied }));
            long stored = ck.Store.Entries.Sum(e => e.Shape.Aggregate(1L, (a, b) => a * b));
            Assert.Equal(stored, RedundancyTable.ParameterCount(ck.Traits));
        }
        // A LLaMA-family model built as views: the count from traits equals the views' numel (biases, gate, GQA, hd ≠ d/H).
        foreach (var t in new[] { RandomModel.Traits("qwen2", 2, 6, 3, 1, 4, 10, 9, 4, true), RandomModel.Traits("llama", 1, 8, 4, 2, 2, 12, 11, 4, false) })
        {
            using var m = RandomModel.Build(t, 1);
            Assert.Equal(m.Layers.Sum(l => l.Named().Sum(x => x.Tensor.numel())) + m.Globals.Named().Sum(x => x.Tensor.numel()), RedundancyTable.ParameterCount(t));
        }
    }

    [Fact]
    public void CliPrintsTheTableAndWritesJson()
    {
        string model = TestCheckpoints.Get("audit-untied", options: new MakeCheckpointOptions { Seed = 3, Untied = true });
        string json = Path.Combine(TestCheckpoints.NewTempDir("audit"), "table.json");
        var (code, stdout, stderr) = CliRunner.Run("audit", model, "--json", json);
        Assert.True(code == 0, stderr);
        Assert.Contains("residual-rotation", stdout);
        Assert.Contains("van Nierop", stdout);
        var o = JsonNode.Parse(File.ReadAllText(json))!.AsObject();
        var t = TestCheckpoints.Tiny;   // L=2, d=32, h=4 (d_k=8), F=64, V=97, P=32, untied
        long d = t.NEmbd, f = t.NInner, hk = t.NHead * t.HeadDim;
        long expected = t.NLayer * (hk * 8 * 2 + hk * 2 + 8 * d + 2 * f + 2) + t.NPositions + d + (t.VocabSize - 1) + 3 * d + (d - 1) * (d - 2) / 2;
        Assert.Equal(expected, (long)o["total"]!);
        Assert.Equal(t.ParameterCount(tied: false), (long)o["parameters"]!);
        Assert.Equal(17, o["families"]!.AsArray().Count);
        Assert.Equal("(d−1)(d−2)/2", (string)o["families"]!.AsArray().Single(x => (string)x!["name"]! == "residual-rotation")!["formula"]!);
    }

    [Fact]
    public void BadInputExitsTwoWithOneLine()
    {
        var (code, _, err) = CliRunner.Run("audit", "/nonexistent/model");
        Assert.Equal(2, code);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("/nonexistent/model", err);
        (code, _, err) = CliRunner.Run("audit", "--nullity", "--gradient");
        Assert.Equal(2, code);
        Assert.Contains("not both", err);
        (code, _, err) = CliRunner.Run("audit", "--nullity", "--arch", "bert");
        Assert.Equal(2, code);
        Assert.Contains("--arch", err);
        (code, _, err) = CliRunner.Run("audit", "--nullity", "--embd", "10", "--heads", "3");
        Assert.Equal(2, code);
        Assert.Contains("not divisible", err);
        (code, _, err) = CliRunner.Run("audit", "--nullity", "--arch", "llama", "--heads", "4", "--kv-heads", "3");
        Assert.Equal(2, code);
        Assert.Contains("kv-heads", err);
        // Options of another mode are refused, not ignored.
        (code, _, err) = CliRunner.Run("audit", "--layers", "3");
        Assert.Equal(2, code);
        Assert.Contains("--layers applies to --nullity only", err);
        (code, _, err) = CliRunner.Run("audit", "--nullity", "--tokens", "1,2");
        Assert.Equal(2, code);
        Assert.Contains("--tokens applies to --gradient only", err);
    }
}
