using System.Diagnostics;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Reliability;

/// <summary>
/// Issue 11, item 8: every output path is checked before the work, the error names the option, and no parent
/// directory is created. Before the fix canonicalize-checkpoint wrote the whole checkpoint and then failed on a
/// read-only --json directory (leaving the checkpoint), verify-invariance printed PASSED and then exited 2, and
/// --plot /nonexistent/x.svg created /nonexistent.
/// </summary>
public class OutputPathTests
{
    private static string Model() => TestCheckpoints.Get("outpaths", options: new MakeCheckpointOptions { Seed = 91 });

    /// <summary>A directory nobody can create files in (chmod 555; for root, which ignores modes, chattr +i), or /sys.</summary>
    private sealed class ReadOnlyDir : IDisposable
    {
        public string Path { get; }
        private readonly bool _immutable;

        public ReadOnlyDir()
        {
            string dir = System.IO.Path.Combine(TestCheckpoints.NewTempDir("readonly"), "ro");
            Directory.CreateDirectory(dir);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
            if (!Writable(dir)) { Path = dir; return; }
            if (Run("chattr", "+i", dir) && !Writable(dir)) { Path = dir; _immutable = true; return; }
            Path = "/sys"; // creating files there fails even for root
        }

        private static bool Writable(string dir)
        {
            string probe = System.IO.Path.Combine(dir, "probe");
            try
            {
                File.WriteAllText(probe, "");
                File.Delete(probe);
                return true;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
        }

        private static bool Run(string exe, params string[] args)
        {
            try
            {
                using var p = Process.Start(new ProcessStartInfo(exe, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
                p.WaitForExit();
                return p.ExitCode == 0;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                return false;
            }
        }

        public void Dispose()
        {
            if (_immutable) Run("chattr", "-i", Path);
        }
    }

    [Fact]
    public void ReadOnlyJsonDirectoryFailsBeforeAnyWork()
    {
        using var ro = new ReadOnlyDir();
        string json = Path.Combine(ro.Path, "report.json");
        string parent = TestCheckpoints.NewTempDir("outpaths-canon");

        var c = CliRunner.Run("canonicalize-checkpoint", Model(), "--out", Path.Combine(parent, "canon"), "--json", json);
        Assert.Equal(2, c.Code);
        Assert.StartsWith("gaugetorch: error: --json: ", c.Err);
        Assert.Contains(ro.Path, c.Err);
        Assert.Empty(Directory.EnumerateFileSystemEntries(parent)); // the checkpoint was not written
        Assert.Equal("", c.Out);

        var v = CliRunner.Run("verify-invariance", Model(), "--transforms", "1", "--tokens", "1,2,3", "--json", json);
        Assert.Equal(2, v.Code);
        Assert.StartsWith("gaugetorch: error: --json: ", v.Err);
        Assert.Equal("", v.Out); // no table, no PASSED before the failure

        var p = CliRunner.Run("verify-invariance", Model(), "--transforms", "1", "--tokens", "1,2,3", "--plot", Path.Combine(ro.Path, "p.svg"));
        Assert.Equal(2, p.Code);
        Assert.StartsWith("gaugetorch: error: --plot: ", p.Err);
    }

    [Fact]
    public void MissingParentDirectoriesAreNamedNotCreated()
    {
        string root = TestCheckpoints.NewTempDir("outpaths-missing");
        string missing = Path.Combine(root, "nonexistent");
        var cases = new (string Option, string[] Args)[]
        {
            ("--plot", ["verify-invariance", Model(), "--transforms", "1", "--tokens", "1,2", "--plot", Path.Combine(missing, "x.svg")]),
            ("--json", ["verify-invariance", Model(), "--transforms", "1", "--tokens", "1,2", "--json", Path.Combine(missing, "x.json")]),
            ("--json", ["canonicalize-checkpoint", Model(), "--out", Path.Combine(root, "c"), "--json", Path.Combine(missing, "x.json")]),
            ("--json", ["compare", Model(), Model(), "--json", Path.Combine(missing, "x.json")]),
            ("--json", ["inspect", Model(), "--json", Path.Combine(missing, "x.json")]),
            ("--out", ["transform", Model(), "--out", Path.Combine(missing, "t")]),
            ("--out", ["canonicalize-checkpoint", Model(), "--out", Path.Combine(missing, "c")]),
            ("--out", ["make-checkpoint", "--out", Path.Combine(missing, "m")]),
            ("--out", ["logits", Model(), "--tokens", "1", "--out", Path.Combine(missing, "l.safetensors")]),
        };
        foreach (var (option, args) in cases)
        {
            var r = CliRunner.Run(args);
            Assert.True(r.Code == 2, $"{args[0]} {option}: exit {r.Code}: {r.Err}");
            Assert.StartsWith($"gaugetorch: error: {option}: directory {missing} does not exist", r.Err);
            Assert.False(Directory.Exists(missing), $"{args[0]} {option} created {missing}");
            Assert.Empty(Directory.EnumerateFileSystemEntries(root));
        }
    }

    [Fact]
    public void AnExistingDirectoryAsAnOutputFileIsNamedAsSuch()
    {
        string dir = TestCheckpoints.NewTempDir("outpaths-isdir");
        var r = CliRunner.Run("logits", Model(), "--tokens", "1,2", "--out", dir);
        Assert.Equal(2, r.Code);
        Assert.Equal($"gaugetorch: error: --out: {dir} is a directory (give a file name)", r.Err.Trim());
        var f = CliRunner.Run("transform", Model(), "--out", Path.Combine(Model(), "config.json"));
        Assert.Equal(2, f.Code);
        Assert.Contains("--out: ", f.Err);
        Assert.Contains("is a file", f.Err);
    }
}
