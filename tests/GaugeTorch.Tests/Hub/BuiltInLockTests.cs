using System.CommandLine;
using GaugeTorch.Cli.Commands;
using GaugeTorch.Hub;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Hub;

/// <summary>
/// Issue 11, item 9: download pins from any working directory. Before the fix it read ./models.lock.json, so from
/// anywhere but the repository root it silently fetched 'main' (the first test then downloads 'main' and exits 0).
/// </summary>
public class BuiltInLockTests
{
    private const string PinnedGpt2 = "607a30d783dfa663caf39e06633721c8d4cfcd7e";

    private static (int Code, string Out, string Err) Cli(FakeHub hub, string cwd, params string[] args)
    {
        var root = new RootCommand { DownloadCommand.Create(() => hub.Options()) };
        var (oldOut, oldErr, oldCwd) = (Console.Out, Console.Error, Environment.CurrentDirectory);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o);
        Console.SetError(e);
        Spectre.Console.AnsiConsole.Console = CliRunner.ConsoleFor(o);
        Environment.CurrentDirectory = cwd;
        try
        {
            var run = Task.Run(() => root.Parse(args).Invoke());
            Assert.True(run.Wait(TimeSpan.FromSeconds(30)), "CLI did not finish in time");
            return (run.Result, o.ToString(), e.ToString());
        }
        finally
        {
            Environment.CurrentDirectory = oldCwd;
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Fact]
    public void FromAnotherDirectoryTheBuiltInLockPinsTheRevisionAndSaysSo()
    {
        // A hub that serves openai-community/gpt2 at 'main' (and another commit), not at the pinned one.
        using var hub = new FakeHub { Repo = "openai-community/gpt2" };
        hub.AddFolder(TestCheckpoints.Get("lock-hub", options: new GaugeTorch.Architectures.Gpt2.MakeCheckpointOptions { Seed = 5 }));
        string cwd = TestCheckpoints.NewTempDir("lock-cwd"); // no models.lock.json here
        var (code, _, err) = Cli(hub, cwd, "download", "gpt2", "--dir", Path.Combine(cwd, "models"));
        Assert.Contains($"lock: built-in {ModelLock.DefaultFileName}", err);
        Assert.Contains($"openai-community/gpt2 at {PinnedGpt2} (pinned by the lock)", err);
        // It asked the hub for the pinned commit, never for main, and failed because this hub lacks it.
        var revisions = hub.Api.Requests.Select(r => r.Path).Where(p => p.StartsWith("/api/models/", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(revisions);
        Assert.All(revisions, p => Assert.EndsWith("/revision/" + PinnedGpt2, p));
        Assert.Equal(2, code);
        Assert.False(Directory.Exists(Path.Combine(cwd, "models", "gpt2")));
    }

    [Fact]
    public void LockOverrideAndUpdateNeedAFile()
    {
        using var hub = new FakeHub();
        string cwd = TestCheckpoints.NewTempDir("lock-update");
        var (code, _, err) = Cli(hub, cwd, "download", hub.Repo, "--update-lock");
        Assert.Equal(2, code);
        Assert.Contains("--update-lock needs --lock FILE", err);
    }

    [Fact]
    public void TheBuiltInLockIsTheRepositorysLock()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, ModelLock.DefaultFileName))) dir = Path.GetDirectoryName(dir);
        Assert.NotNull(dir);
        Assert.Equal(File.ReadAllText(Path.Combine(dir!, ModelLock.DefaultFileName)), ModelLock.BuiltInText());
        var lk = ModelLock.BuiltIn();
        Assert.True(lk.IsBuiltIn);
        Assert.Equal(PinnedGpt2, lk.Find("gpt2")!.Revision);
        Assert.Throws<InvalidOperationException>(lk.Save);
    }
}
