using System.Diagnostics;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Cli;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Cli;

/// <summary>
/// Progress when stderr is not a terminal (issue 12, item 4): plain lines with what, how far, elapsed and an estimate,
/// at most one per interval however often the work reports, and nothing at all for work shorter than one interval.
/// </summary>
public class CliProgressTests
{
    [Fact]
    public void PlainLinesAreRateLimitedAndSayHowFarElapsedAndEstimate()
    {
        var w = new StringWriter();
        var interval = TimeSpan.FromMilliseconds(100);
        var p = new CliProgress(w, interval);
        Assert.True(p.Plain);
        int updates = 0;
        var sw = Stopwatch.StartNew();
        p.Start(ctx =>
        {
            var task = ctx.AddTask("copying layers", maxValue: 40);
            for (int i = 1; i <= 40; i++)
            {
                Thread.Sleep(25); // ~1 s of work, 40 reports: far more reports than lines allowed
                task.Value = i;
                updates++;
            }
        });
        double seconds = sw.Elapsed.TotalSeconds;
        string[] lines = w.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(40, updates);
        Assert.True(lines.Length >= 3, $"too few lines ({lines.Length}):\n{w}");
        // At most one line per interval plus the closing line (the timer's slack allows a little more than the ideal count).
        Assert.True(lines.Length <= seconds / interval.TotalSeconds + 2, $"{lines.Length} lines in {seconds:F2} s:\n{w}");
        var progressLines = lines[..^1];
        Assert.All(progressLines, l => Assert.StartsWith("copying layers: ", l));
        Assert.All(progressLines, l => Assert.Matches(@"\d+ of 40 \(\d+%\), \d+ s elapsed", l));
        Assert.Contains(progressLines, l => l.Contains("left"));
        Assert.StartsWith("copying layers: done in ", lines[^1]);
    }

    [Fact]
    public void ShortWorkPrintsNothing()
    {
        var w = new StringWriter();
        new CliProgress(w, TimeSpan.FromSeconds(30)).Start(ctx =>
        {
            var t = ctx.AddTask("quick", maxValue: 1.0);
            t.Value = 1.0;
        });
        Assert.Equal("", w.ToString());
    }

    [Fact]
    public void IndeterminateTaskGivesElapsedLines()
    {
        var w = new StringWriter();
        new CliProgress(w, TimeSpan.FromMilliseconds(50)).Start(ctx =>
        {
            ctx.AddTask("prefill").IsIndeterminate = true;
            Thread.Sleep(400);
        });
        string[] lines = w.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length >= 2, w.ToString());
        Assert.Matches(@"^prefill: \d+ s elapsed$", lines[0]);
    }

    /// <summary>The real executable with stderr redirected: verify-invariance prints progress lines into the log.</summary>
    [Fact]
    public async Task VerifyInvarianceWithRedirectedStderrPrintsProgressLines()
    {
        string model = TestCheckpoints.Get("cli-tiny", options: new MakeCheckpointOptions { Seed = 42 });
        string dll = Path.Combine(AppContext.BaseDirectory, "gaugetorch.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.Environment["GAUGETORCH_PROGRESS_SECONDS"] = "0.01";
        foreach (var a in new[] { dll, "verify-invariance", model, "--tokens", "1,2,3,4,5", "--transforms", "1" }) psi.ArgumentList.Add(a);
        using var proc = Process.Start(psi)!;
        var so = proc.StandardOutput.ReadToEndAsync();
        var se = proc.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await proc.WaitForExitAsync(cts.Token);
        string stdout = await so, stderr = await se;
        Assert.Equal(0, proc.ExitCode);
        Assert.Contains("PASS", stdout.ToUpperInvariant());
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(lines, l => l.Contains("transformed copies") && l.Contains("elapsed"));
        Assert.Contains(lines, l => l.Contains("transformed copies") && l.Contains("done in"));
    }
}
