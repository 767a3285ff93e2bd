using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GaugeTorch.Tests.Fixtures;

/// <summary>
/// The real gaugetorch executable as a child process (the same gaugetorch.dll the build puts beside the tests), for
/// what only a real process shows: signals, exit codes 130/143, peak memory, streamed stdout.
/// </summary>
public static class CliProcess
{
    public const int SIGINT = 2, SIGKILL = 9, SIGTERM = 15;

    public static string Dll => Path.Combine(AppContext.BaseDirectory, "gaugetorch.dll");

    public sealed record Result(int ExitCode, string Stdout, string Stderr, long PeakRssBytes)
    {
        public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int sig);

    public static void Signal(Process p, int sig)
    {
        if (Kill(p.Id, sig) != 0) throw new InvalidOperationException($"kill({p.Id}, {sig}) failed: errno {Marshal.GetLastWin32Error()}");
    }

    /// <summary>A started gaugetorch with stdout and stderr captured asynchronously.</summary>
    public sealed class Running : IDisposable
    {
        public Process Process { get; }
        private readonly System.Text.StringBuilder _out = new(), _err = new();
        private long _peak;

        public Running(IEnumerable<string> args, IReadOnlyDictionary<string, string>? env, string? cwd)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add(Dll);
            foreach (var a in args) psi.ArgumentList.Add(a);
            if (cwd is not null) psi.WorkingDirectory = cwd;
            psi.Environment["GAUGETORCH_NO_DIRECT_IO"] = "1";
            foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
            Process = Process.Start(psi)!;
            Process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_out) _out.AppendLine(e.Data); };
            Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_err) _err.AppendLine(e.Data); };
            Process.BeginOutputReadLine();
            Process.BeginErrorReadLine();
        }

        public string Stdout { get { lock (_out) return _out.ToString(); } }

        /// <summary>Samples VmHWM (the kernel's peak RSS of the process) while it runs.</summary>
        public void SampleRss()
        {
            try
            {
                foreach (var line in File.ReadLines($"/proc/{Process.Id}/status"))
                    if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    {
                        long kb = long.Parse(line["VmHWM:".Length..].Trim().Split(' ', '\t')[0]);
                        _peak = Math.Max(_peak, kb * 1024);
                    }
            }
            catch (IOException) { }
        }

        public Result Wait(TimeSpan timeout, bool sampleRss = false)
        {
            var sw = Stopwatch.StartNew();
            while (!Process.HasExited)
            {
                if (sampleRss) SampleRss();
                if (sw.Elapsed > timeout)
                {
                    Process.Kill(entireProcessTree: true);
                    throw new TimeoutException($"gaugetorch did not finish within {timeout.TotalSeconds} s; stderr: {_err}");
                }
                Thread.Sleep(sampleRss ? 10 : 25);
            }
            Process.WaitForExit(); // drains the redirected streams
            lock (_out) lock (_err) return new Result(Process.ExitCode, _out.ToString(), _err.ToString(), _peak);
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }

    public static Running Start(IEnumerable<string> args, IReadOnlyDictionary<string, string>? env = null, string? cwd = null) => new(args, env, cwd);

    public static Result Run(string[] args, IReadOnlyDictionary<string, string>? env = null, string? cwd = null, int timeoutSeconds = 120, bool sampleRss = false)
    {
        using var p = Start(args, env, cwd);
        return p.Wait(TimeSpan.FromSeconds(timeoutSeconds), sampleRss);
    }

    /// <summary>Polls <paramref name="condition"/> until it holds (true) or the time is up (false).</summary>
    public static bool WaitFor(Func<bool> condition, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (condition()) return true;
            Thread.Sleep(20);
        }
        return condition();
    }
}
