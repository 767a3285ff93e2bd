using System.CommandLine;
using System.Text.RegularExpressions;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Reliability;

/// <summary>Issue 11, item 11: one consistent command line.</summary>
public class CliConsistencyTests
{
    private static string Tiny() => TestCheckpoints.Get("consistency-tiny", options: new MakeCheckpointOptions { Seed = 111 });
    private static string FullVocab() => TestCheckpoints.Get("consistency-v50257", TestCheckpoints.Tiny with { VocabSize = 50257 }, new MakeCheckpointOptions { Seed = 112 });

    private static IReadOnlyList<Command> Commands() => GaugeTorch.Cli.App.Build().Subcommands.ToList();

    private static Option? Find(Command c, string name) => c.Options.FirstOrDefault(o => o.Name == name || o.Aliases.Contains(name));

    [Fact]
    public void JsonTakesAFileOnEveryCommandThatHasIt()
    {
        // Old: compare and inspect took a bare --json flag, the others a FILE.
        var withJson = Commands().Where(c => Find(c, "--json") is not null).Select(c => c.Name).Order().ToList();
        Assert.Equal(["align", "audit", "canonicalize-checkpoint", "compare", "inspect", "interpolate", "verify-invariance"], withJson);
        foreach (var c in Commands().Where(c => Find(c, "--json") is not null))
        {
            var o = Find(c, "--json")!;
            Assert.Equal(typeof(string), Nullable.GetUnderlyingType(o.ValueType) ?? o.ValueType);
            Assert.Contains("\"-\"", o.Description);
        }
    }

    [Fact]
    public void EveryTextReadingCommandTakesTextTextFileAndTokens()
    {
        // Old: logits had no --text-file, generate only --prompt, canonicalize-checkpoint none of them.
        foreach (var name in new[] { "verify-invariance", "logits", "generate", "canonicalize-checkpoint", "interpolate" })
        {
            var c = Commands().Single(x => x.Name == name);
            foreach (var opt in new[] { "--text", "--text-file", "--tokens" }) Assert.True(Find(c, opt) is not null, $"{name} lacks {opt}");
        }
        Assert.Contains("--prompt", Find(Commands().Single(x => x.Name == "generate"), "--text")!.Aliases);
    }

    [Fact]
    public void TheTextOptionsWorkTheSameWayEverywhere()
    {
        string dir = TestCheckpoints.NewTempDir("consistency-text");
        string file = Path.Combine(dir, "t.txt");
        File.WriteAllText(file, "Hello, my dog is cute");
        int[] expected = [15496, 11, 616, 3290, 318, 13779];
        foreach (var args in new[] { new[] { "--text-file", file }, ["--text", "Hello, my dog is cute"], ["--tokens", string.Join(",", expected)] })
        {
            string outFile = Path.Combine(dir, $"l{Guid.NewGuid():N}.safetensors");
            var r = CliRunner.Run(["logits", FullVocab(), .. args, "--out", outFile]);
            Assert.True(r.Code == 0, r.Err);
            using var f = SafeTensorFile.Open(outFile);
            using var t = f.Load("tokens");
            Assert.Equal(expected.Select(i => (long)i), t.data<long>().ToArray());
            var g = CliRunner.Run(["generate", FullVocab(), .. args, "--max-new-tokens", "2"]);
            Assert.True(g.Code == 0, g.Err);
            Assert.StartsWith("Hello, my dog is cute", g.Out);
        }
        var both = CliRunner.Run("generate", FullVocab(), "--prompt", "a", "--tokens", "1");
        Assert.Equal(2, both.Code);
        Assert.Contains("give one of --prompt, --text-file and --tokens, not --prompt and --tokens", both.Err);
    }

    [Fact]
    public void OneDTypeVocabulary()
    {
        // Old: float32 for compute, F32 for make-checkpoint, 'same|float64' only for canonicalize, transform's ParseUser.
        string root = TestCheckpoints.NewTempDir("consistency-dtype");
        foreach (var spelling in new[] { "float32", "F32", "fp32" })
        {
            Assert.Equal(0, CliRunner.Run("make-checkpoint", "--out", Path.Combine(root, "m" + spelling), "--dtype", spelling).Code);
            Assert.Equal(0, CliRunner.Run("logits", Tiny(), "--tokens", "1", "--dtype", spelling, "--out", Path.Combine(root, $"l{spelling}.safetensors")).Code);
            Assert.Equal(0, CliRunner.Run("transform", Tiny(), "--out", Path.Combine(root, "t" + spelling), "--dtype", spelling).Code);
        }
        Assert.Equal(0, CliRunner.Run("canonicalize-checkpoint", Tiny(), "--out", Path.Combine(root, "c64"), "--dtype", "F64", "--check-tokens", "0").Code);
        Assert.Equal(0, CliRunner.Run("transform", Tiny(), "--out", Path.Combine(root, "tsame"), "--dtype", "same").Code);
        // A dtype a command cannot use is named with the choices it can.
        var bad = CliRunner.Run("logits", Tiny(), "--tokens", "1", "--dtype", "bfloat16", "--out", Path.Combine(root, "x.safetensors"));
        Assert.Equal(2, bad.Code);
        Assert.Contains("--dtype: bfloat16 is not possible here; use one of float64, float32", bad.Err);
        var unknown = CliRunner.Run("make-checkpoint", "--out", Path.Combine(root, "u"), "--dtype", "int8");
        Assert.Contains("--dtype: 'int8' is not a dtype; use one of float32, float16, bfloat16, float64", unknown.Err);
    }

    [Fact]
    public void HelpCitesTheRepositoryDocsAndGivesEveryToleranceItsUnit()
    {
        foreach (var c in Commands())
        {
            var (code, stdout, _) = CliRunner.Run(c.Name, "--help");
            Assert.Equal(0, code);
            Assert.DoesNotContain("GAUGE.md", stdout);
            foreach (var o in c.Options) Assert.DoesNotContain("GAUGE.md", o.Description ?? "");
            if (Find(c, "--tolerance") is { } tol)
                Assert.True(Regex.IsMatch(tol.Description!, @"in units of ε|not in ε|ratio"), $"{c.Name} --tolerance: {tol.Description}");
        }
        Assert.Contains("docs/canonical-form.md", Find(Commands().Single(c => c.Name == "canonicalize-checkpoint"), "--form")!.Description);
    }

    [Fact]
    public void VerifyInvarianceTableFitsEightyColumnsWithoutSplittingNumbers()
    {
        // The in-process console is 80 columns wide (Spectre's default without a terminal). Old: Spectre wrapped the
        // cells, splitting 1.23e-16 into "1.23e-" and "16" on two lines.
        var (code, stdout, err) = CliRunner.Run("verify-invariance", Tiny(), "--transforms", "2", "--tokens", "1,2,3,4,5", "--dtype", "float32");
        Assert.True(code == 0, err);
        var lines = Regex.Replace(stdout, @"\x1b\[[0-9;]*m", "").Split('\n').Select(l => l.TrimEnd('\r')).ToList(); // colours are not columns
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"{l.Length} columns: {l}"));
        // One line per group, with its name, a whole number in e-notation and the verdict.
        foreach (var group in new[] { "qk", "head-perm", "embedding-offset", "all-together", "cross-head-mixing", "global-orthogonal", "mismatched-qk" })
        {
            var row = lines.Where(l => Regex.IsMatch(l, $@"^│ (invalid:)?{Regex.Escape(group)}\s+│")).ToList();
            Assert.True(row.Count == 1, $"{group}: {row.Count} lines\n{stdout}");
            Assert.Matches(@"\d\.\d\de[+-]\d\d", row[0]);
            Assert.Matches("pass|FAIL", row[0]);
        }
    }
}
