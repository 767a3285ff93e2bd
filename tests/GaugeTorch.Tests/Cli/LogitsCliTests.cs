using System.Diagnostics;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests.Cli;

/// <summary>
/// <c>gaugetorch logits</c> end to end: run in-process through the same RootCommand the executable builds (and once as
/// a real process), checking the output file's contents, and that every failure gives a non-zero exit code, exactly
/// one line on stderr, and no output file.
/// </summary>
public class LogitsCliTests
{
    /// <summary>A tiny model with GPT-2's full vocabulary, so that --text works.</summary>
    private static string FullVocabModel() => TestCheckpoints.Get("cli-v50257",
        TestCheckpoints.Tiny with { VocabSize = 50257 }, new MakeCheckpointOptions { Seed = 41 });

    private static string TinyModel() => TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });

    internal sealed record CliResult(int ExitCode, string Stdout, string Stderr)
    {
        public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    /// <summary>Runs gaugetorch in-process through the executable's entry (App.Run), console captured.</summary>
    internal static CliResult Run(params string[] args)
    {
        var (code, stdout, stderr) = CliRunner.Run(args);
        return new CliResult(code, stdout, stderr);
    }

    private static double[] ExpectedLogits(string model, int[] tokens, torch.ScalarType dtype)
    {
        using var ck = Gpt2Checkpoint.Open(model);
        using var m = Gpt2Model.Load(ck, dtype);
        using var l = m.Logits(tokens);
        using var d = l.to_type(torch.ScalarType.Float64);
        return d.data<double>().ToArray();
    }

    [Theory]
    [InlineData("float64", DType.F64)]
    [InlineData("float32", DType.F32)]
    public void WritesLogitsAndTokens(string dtype, DType expected)
    {
        string model = TinyModel();
        string outFile = Path.Combine(TestCheckpoints.NewTempDir("cli"), "logits.safetensors");
        var r = Run("logits", model, "--tokens", "5,0,96,17", "--dtype", dtype, "--out", outFile);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var f = SafeTensorFile.Open(outFile);
        Assert.Equal(["logits", "tokens"], f.Entries.Select(e => e.Name).Order());
        Assert.Equal(expected, f["logits"].DType);
        Assert.Equal(new long[] { 4, 97 }, f["logits"].Shape);
        Assert.Equal(DType.I64, f["tokens"].DType);
        Assert.Equal(new long[] { 4 }, f["tokens"].Shape);
        using (var t = f.Load("tokens")) Assert.Equal(new long[] { 5, 0, 96, 17 }, t.data<long>().ToArray());
        using var logits = f.Load("logits", torch.ScalarType.Float64);
        // Same model, same dtype: the CLI's logits are exactly the library's.
        Assert.Equal(ExpectedLogits(model, [5, 0, 96, 17], expected == DType.F64 ? torch.ScalarType.Float64 : torch.ScalarType.Float32), logits.data<double>().ToArray());
    }

    [Fact]
    public void TextIsTokenizedWithGpt2Bpe()
    {
        string outFile = Path.Combine(TestCheckpoints.NewTempDir("cli"), "l.safetensors");
        var r = Run("logits", FullVocabModel(), "--text", "Hello, my dog is cute", "--out", outFile);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var f = SafeTensorFile.Open(outFile);
        using var t = f.Load("tokens");
        Assert.Equal(new long[] { 15496, 11, 616, 3290, 318, 13779 }, t.data<long>().ToArray());
        Assert.Equal(new long[] { 6, 50257 }, f["logits"].Shape);
        Assert.Equal(DType.F64, f["logits"].DType); // float64 is the default
    }

    public static TheoryData<string, string[]> Failures => new()
    {
        { "token outside the vocabulary", ["--tokens", "1,97"] },
        { "token not a number", ["--tokens", "1,x"] },
        { "both --text and --tokens", ["--tokens", "1", "--text", "a"] },
        { "text with tokens beyond a 97-token vocabulary", ["--text", "Hello"] },
        { "unsupported dtype", ["--tokens", "1", "--dtype", "float16"] },
        { "more tokens than positions", ["--tokens", string.Join(",", Enumerable.Repeat("1", 33))] },
    };

    [Theory]
    [MemberData(nameof(Failures))]
    public void FailureGivesOneLineAndNoOutput(string why, string[] extra)
    {
        string dir = TestCheckpoints.NewTempDir("cli-fail");
        string outFile = Path.Combine(dir, "out.safetensors");
        var r = Run(["logits", TinyModel(), .. extra, "--out", outFile]);
        AssertCleanFailure(r, dir, why);
    }

    [Fact]
    public void MissingOrMalformedModelGivesOneLineAndNoOutput()
    {
        string dir = TestCheckpoints.NewTempDir("cli-fail");
        string outFile = Path.Combine(dir, "out.safetensors");
        AssertCleanFailure(Run("logits", Path.Combine(dir, "no-such-model"), "--tokens", "1", "--out", outFile), dir, "missing model");

        string bad = TestCheckpoints.NewTempDir("cli-bad-model");
        foreach (var file in Directory.GetFiles(TinyModel())) File.Copy(file, Path.Combine(bad, Path.GetFileName(file)));
        string weights = Path.Combine(bad, SafeTensorStore.SingleFileName);
        File.WriteAllBytes(weights, File.ReadAllBytes(weights)[..^4]); // truncated
        var r = Run("logits", bad, "--tokens", "1", "--out", outFile);
        AssertCleanFailure(r, dir, "truncated weights");
        Assert.Contains(weights, r.Stderr);
    }

    [Fact]
    public void RefusesToOverwriteTheModel()
    {
        string model = TestCheckpoints.NewTempDir("cli-own");
        foreach (var file in Directory.GetFiles(TinyModel())) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        string weights = Path.Combine(model, SafeTensorStore.SingleFileName);
        var before = File.ReadAllBytes(weights);
        var r = Run("logits", model, "--tokens", "1,2", "--out", weights);
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.StderrLines);
        Assert.Contains("input", r.Stderr);
        Assert.Equal(before, File.ReadAllBytes(weights));
        Assert.Equal(Directory.GetFiles(TinyModel()).Select(Path.GetFileName).Order(), Directory.GetFiles(model).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void MissingRequiredOutIsAnErrorWithoutOutput()
    {
        var r = Run("logits", TinyModel(), "--tokens", "1");
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("gaugetorch: error: ", r.StderrLines[0]);
        Assert.Contains("--out", r.StderrLines[0]);
        Assert.Equal("", r.Stdout);
    }

    private static void AssertCleanFailure(CliResult r, string outDir, string why)
    {
        Assert.True(r.ExitCode == 2, $"{why}: exit code {r.ExitCode}, stderr: {r.Stderr}");
        Assert.True(r.StderrLines.Length == 1, $"{why}: stderr has {r.StderrLines.Length} lines:\n{r.Stderr}");
        Assert.StartsWith("gaugetorch: error: ", r.StderrLines[0]);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
        Assert.Equal("", r.Stdout);
        Assert.Empty(Directory.GetFileSystemEntries(outDir)); // no output file, no temp file
    }

    [Fact]
    public void RealProcessExitCodesAndStreams()
    {
        // The actual executable (Program.cs), as a user runs it.
        string dll = Path.Combine(AppContext.BaseDirectory, "gaugetorch.dll");
        Assert.True(File.Exists(dll), dll);
        string dir = TestCheckpoints.NewTempDir("cli-proc");
        string outFile = Path.Combine(dir, "l.safetensors");

        var ok = RunProcess(dll, "logits", TinyModel(), "--tokens", "3,4", "--dtype", "float32", "--out", outFile);
        Assert.True(ok.ExitCode == 0, ok.Stderr);
        using (var f = SafeTensorFile.Open(outFile)) Assert.Equal(new long[] { 2, 97 }, f["logits"].Shape);
        File.Delete(outFile);

        var bad = RunProcess(dll, "logits", TinyModel(), "--tokens", "3,400", "--out", outFile);
        Assert.Equal(2, bad.ExitCode);
        Assert.Single(bad.StderrLines);
        Assert.Contains("400", bad.Stderr);
        Assert.Empty(Directory.GetFileSystemEntries(dir));
    }

    private static CliResult RunProcess(string dll, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException("gaugetorch did not finish within 120 s");
        }
        return new CliResult(p.ExitCode, so.Result, se.Result);
    }
}
