using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Reliability;

/// <summary>
/// Issue 11, item 4: SIGINT and SIGTERM during a write. The real executable runs as a child process with
/// GAUGETORCH_TEST_PAUSE_MS, which makes every temporary output wait once it exists, so the signal lands mid-write
/// on a tiny model. Before the fix the runtime's default handling killed the process and left
/// .OUT.*.partial/, .OUT.tmp-*/ and .model.safetensors.*.tmp behind, with no message; a later run never removed them.
/// </summary>
public class SignalTests
{
    private static readonly Dictionary<string, string> Pause = new() { ["GAUGETORCH_TEST_PAUSE_MS"] = "20000" };
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    private static string Model() => TestCheckpoints.Get("signal-tiny", options: new MakeCheckpointOptions { Seed = 81 });

    /// <summary>Starts a writing command, waits for its temporary to appear in <paramref name="parent"/>, signals it.</summary>
    private static CliProcess.Result Interrupt(string[] args, string parent, int signal)
    {
        using var p = CliProcess.Start(args, Pause);
        bool started = CliProcess.WaitFor(() => Directory.EnumerateFileSystemEntries(parent, ".*gaugetorch-*").Any() || p.Process.HasExited, Limit);
        Assert.True(started && !p.Process.HasExited, $"no temporary appeared in {parent}; stderr so far: {(p.Process.HasExited ? p.Wait(Limit).Stderr : "")}");
        CliProcess.Signal(p.Process, signal);
        return p.Wait(Limit);
    }

    public static TheoryData<string, int> Commands => new()
    {
        { "transform", CliProcess.SIGINT },
        { "canonicalize-checkpoint", CliProcess.SIGTERM },
        { "make-checkpoint", CliProcess.SIGINT },
        { "logits", CliProcess.SIGTERM },
        { "verify-invariance", CliProcess.SIGINT },
    };

    [Theory]
    [MemberData(nameof(Commands))]
    public void SignalRemovesTheTemporariesSaysSoAndExits130Or143(string command, int signal)
    {
        string parent = TestCheckpoints.NewTempDir("signal-" + command);
        string target = Path.Combine(parent, "out");
        string[] args = command switch
        {
            "transform" => ["transform", Model(), "--out", target],
            "canonicalize-checkpoint" => ["canonicalize-checkpoint", Model(), "--out", target, "--check-tokens", "0"],
            "make-checkpoint" => ["make-checkpoint", "--out", target],
            "logits" => ["logits", Model(), "--tokens", "1,2,3", "--out", target + ".safetensors"],
            _ => ["verify-invariance", Model(), "--tokens", "1,2,3", "--transforms", "1", "--families", "qk", "--no-controls", "--json", target + ".json"],
        };
        var r = Interrupt(args, parent, signal);
        string name = signal == CliProcess.SIGINT ? "SIGINT" : "SIGTERM";
        Assert.True(r.ExitCode == (signal == CliProcess.SIGINT ? 130 : 143), $"exit {r.ExitCode}, stderr: {r.Stderr}");
        Assert.Contains($"interrupted by {name}", r.Stderr);
        Assert.Contains("removed", r.Stderr);
        Assert.Empty(Directory.EnumerateFileSystemEntries(parent)); // no temporary and no output
    }

    [Fact]
    public void ALaterRunRemovesTheTemporariesOfAKilledRun()
    {
        // SIGKILL cannot be handled: the temporary stays. The next write into the same directory removes it, because the
        // PID in its name is no longer running, and says so.
        string parent = TestCheckpoints.NewTempDir("signal-kill");
        string target = Path.Combine(parent, "out");
        var r = Interrupt(["transform", Model(), "--out", target], parent, CliProcess.SIGKILL);
        Assert.NotEqual(0, r.ExitCode);
        var left = Directory.GetFileSystemEntries(parent);
        Assert.Single(left);
        Assert.Contains(".gaugetorch-", left[0]);

        var (code, _, err) = CliRunner.Run("transform", Model(), "--out", Path.Combine(parent, "again"));
        Assert.True(code == 0, err);
        Assert.Contains($"removed stale temporary {left[0]}", err);
        Assert.Equal(["again"], Directory.GetFileSystemEntries(parent).Select(Path.GetFileName));
    }

    [Fact]
    public void TemporariesOfTheOldNamingAreReportedNotRemoved()
    {
        // Left by the code before this change (.OUT.tmp-*, .OUT.*.partial, .model.safetensors.*.tmp): no PID, so no
        // way to know whether a run still owns them.
        string parent = TestCheckpoints.NewTempDir("signal-legacy");
        string[] old = [Path.Combine(parent, ".c.tmp-1a2b3c4d"), Path.Combine(parent, ".t.5e6f7a8b.partial")];
        foreach (var d in old) Directory.CreateDirectory(d);
        File.WriteAllText(Path.Combine(parent, ".model.safetensors.9c0d1e2f.tmp"), "");
        var (code, _, err) = CliRunner.Run("make-checkpoint", "--out", Path.Combine(parent, "m"));
        Assert.True(code == 0, err);
        foreach (var d in old)
        {
            Assert.True(Directory.Exists(d));
            Assert.Contains($"found {d}, which looks like a temporary of an older gaugetorch", err);
        }
        Assert.Contains(".model.safetensors.9c0d1e2f.tmp, which looks like", err);
    }

    [Fact]
    public void ATemporaryOfARunningProcessIsLeftAloneUnlessItsPidWasReused()
    {
        using var sleeper = System.Diagnostics.Process.Start("sleep", "30");
        try
        {
            string parent = TestCheckpoints.NewTempDir("signal-live");
            // Made after the sleeper started: it may be the sleeper's, so it stays.
            string live = Path.Combine(parent, $".x.gaugetorch-{sleeper.Id}-0123abcd.partial");
            Directory.CreateDirectory(live);
            // Last written a day before the sleeper started: that PID belonged to another, dead process.
            string reused = Path.Combine(parent, $".y.gaugetorch-{sleeper.Id}-4567cdef.tmp");
            File.WriteAllText(reused, "");
            File.SetLastWriteTimeUtc(reused, DateTime.UtcNow.AddDays(-1));
            var (code, _, err) = CliRunner.Run("make-checkpoint", "--out", Path.Combine(parent, "m"));
            Assert.True(code == 0, err);
            Assert.True(Directory.Exists(live), "the live process's temporary was removed");
            Assert.False(File.Exists(reused), "the reused PID's temporary was kept");
            Assert.Contains($"removed stale temporary {reused}", err);
        }
        finally
        {
            sleeper.Kill();
        }
    }
}
