using System.Diagnostics;
using System.Text.RegularExpressions;

namespace GaugeTorch;

/// <summary>
/// Every temporary file or directory GaugeTorch writes before renaming it into place. Three jobs:
/// <list type="number">
/// <item>Names carry the owner: <c>.TARGET.gaugetorch-PID-RANDOM.KIND</c> beside the target, so a later run can tell its
/// own leftovers from anything else and whether the process that made them still runs.</item>
/// <item>A registry of the live temporaries of this process, which <see cref="Interrupt"/> deletes when the CLI gets
/// SIGINT or SIGTERM (a signal handler cannot unwind the threads that are writing, so it removes their files).</item>
/// <item>A sweep, the first time a directory gets a temporary: leftovers of processes that are gone (killed with
/// SIGKILL, a power cut) are removed and reported through <see cref="Notice"/>.</item>
/// </list>
/// Renames into place go through <see cref="Commit"/>, under the same lock as <see cref="Interrupt"/>: a signal either
/// comes before the rename (the temporary is deleted, nothing appears) or after it (the output is complete), never
/// in the middle of a directory being deleted while it is moved.
/// </summary>
public static class TempFiles
{
    public const string Marker = "gaugetorch";

    private static readonly object Gate = new();
    private static readonly HashSet<string> Live = new(StringComparer.Ordinal);
    private static readonly HashSet<string> Swept = new(StringComparer.Ordinal);
    private static bool _interrupted;

    /// <summary>Receives one line per stale temporary removed (default: stderr).</summary>
    public static Action<string> Notice { get; set; } = line => Console.Error.WriteLine($"gaugetorch: {line}");

    // .NAME.gaugetorch-PID-HEX8.KIND (KIND: tmp, partial, old)
    private static readonly Regex Pattern = new(@"^\..+\.gaugetorch-(\d+)-[0-9a-f]{8}\.(tmp|partial|old)$", RegexOptions.CultureInvariant);

    // The names before PIDs were recorded: .NAME.HEX8.tmp, .NAME.HEX8.partial, .NAME.tmp-HEX8. Their owner cannot be
    // told, so they are reported, never removed.
    private static readonly Regex Legacy = new(@"^\..+\.([0-9a-f]{8}\.(tmp|partial)|tmp-[0-9a-f]{8})$", RegexOptions.CultureInvariant);

    /// <summary>True once <see cref="Interrupt"/> has run: no new temporaries, no more renames.</summary>
    public static bool Interrupted { get { lock (Gate) return _interrupted; } }

    /// <summary>A fresh, registered temporary path beside <paramref name="target"/> (nothing is created).</summary>
    public static string NewPath(string target, string kind = "tmp")
    {
        string full = Path.GetFullPath(target).TrimEnd('/');
        string dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{full}: directory {dir} does not exist");
        SweepStale(dir);
        string path = Path.Combine(dir, $".{Path.GetFileName(full)}.{Marker}-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}.{kind}");
        Register(path);
        return path;
    }

    /// <summary>Creates a registered temporary directory beside <paramref name="target"/>.</summary>
    public static string CreateDirectory(string target, string kind = "partial")
    {
        string path = NewPath(target, kind);
        try
        {
            Directory.CreateDirectory(path);
        }
        catch
        {
            Release(path);
            throw;
        }
        TestHooks.Pause();
        return path;
    }

    /// <summary>Adds a path to the registry (refused once interrupted).</summary>
    public static void Register(string path)
    {
        lock (Gate)
        {
            if (_interrupted) throw new OperationCanceledException("interrupted");
            Live.Add(path);
        }
    }

    /// <summary>Removes a path from the registry (after it was renamed or deleted).</summary>
    public static void Release(string path)
    {
        lock (Gate) Live.Remove(path);
    }

    /// <summary>Renames a registered temporary (file or directory) to <paramref name="final"/> and releases it.</summary>
    public static void Commit(string temp, string final, bool overwrite = false)
    {
        lock (Gate)
        {
            if (_interrupted) throw new OperationCanceledException("interrupted");
            if (Directory.Exists(temp)) Directory.Move(temp, final);
            else File.Move(temp, final, overwrite);
            Live.Remove(temp);
        }
    }

    /// <summary>
    /// Puts a complete temporary directory in the place of <paramref name="final"/>, which may be an existing directory
    /// (an explicit replace, e.g. make-checkpoint --force): both renames happen under the lock, so a signal never
    /// leaves the target missing; the old tree is deleted afterwards.
    /// </summary>
    public static void CommitReplacing(string temp, string final)
    {
        string? old = null;
        lock (Gate)
        {
            if (_interrupted) throw new OperationCanceledException("interrupted");
            if (Directory.Exists(final))
            {
                old = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(final).TrimEnd('/'))!,
                    $".{Path.GetFileName(final.TrimEnd('/'))}.{Marker}-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}.old");
                Directory.Move(final, old);
                Live.Add(old);
            }
            Directory.Move(temp, final);
            Live.Remove(temp);
        }
        if (old is not null) Delete(old);
    }

    /// <summary>Deletes a temporary (file or directory tree), ignoring one that is already gone, and releases it.</summary>
    public static void Delete(string path)
    {
        try
        {
            DeleteTree(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        Release(path);
    }

    /// <summary>
    /// For a signal: stops new temporaries and renames, deletes every registered one and returns the paths removed
    /// (outermost only).
    /// Writers still running keep writing into unlinked files until the process exits.
    /// </summary>
    public static IReadOnlyList<string> Interrupt()
    {
        lock (Gate)
        {
            _interrupted = true;
            var removed = new List<string>();
            // Deepest first, so files inside a registered directory go before it.
            foreach (var p in Live.OrderByDescending(p => p.Length).ToList())
            {
                bool existed = File.Exists(p) || Directory.Exists(p);
                for (int attempt = 0; attempt < 5; attempt++)
                {
                    try
                    {
                        DeleteTree(p);
                        break;
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                    {
                        // A writer thread created a file inside the directory while it was being deleted: once more.
                        Thread.Sleep(10);
                    }
                }
                if (existed && !File.Exists(p) && !Directory.Exists(p)) removed.Add(p);
            }
            Live.Clear();
            // Report the outermost paths only (a writer's file inside a temporary directory goes with it).
            return removed.Where(p => !removed.Any(q => p.StartsWith(q + "/", StringComparison.Ordinal))).ToList();
        }
    }

    /// <summary>The registered temporaries (for tests).</summary>
    public static IReadOnlyList<string> Registered() { lock (Gate) return Live.ToList(); }

    /// <summary>
    /// Removes this tool's temporaries in <paramref name="dir"/> whose process is gone, once per directory and process.
    /// A PID that runs again is not proof of ownership: a process that started after the temporary was last written
    /// cannot own it either.
    /// </summary>
    public static IReadOnlyList<string> SweepStale(string dir)
    {
        string full = Path.GetFullPath(dir).TrimEnd('/');
        lock (Gate)
            if (!Swept.Add(full)) return [];
        var removed = new List<string>();
        IEnumerable<string> candidates;
        try
        {
            candidates = Directory.EnumerateFileSystemEntries(full, ".*").ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return removed;
        }
        foreach (var p in candidates)
        {
            string name = Path.GetFileName(p);
            var m = Pattern.Match(name);
            if (!m.Success)
            {
                if (Legacy.IsMatch(name))
                    Notice($"found {p}, which looks like a temporary of an older gaugetorch (no owner recorded): remove it if no gaugetorch run is writing here");
                continue;
            }
            if (!int.TryParse(m.Groups[1].Value, out int pid)) continue;
            if (pid == Environment.ProcessId || OwnerMayBeAlive(pid, p)) continue;
            try
            {
                DeleteTree(p);
                removed.Add(p);
                Notice($"removed stale temporary {p} (left by process {pid}, which is no longer running)");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Notice($"found stale temporary {p} (left by process {pid}, which is no longer running) but could not remove it: {e.Message}");
            }
        }
        return removed;
    }

    private static bool OwnerMayBeAlive(int pid, string path)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            if (p.HasExited) return false;
            DateTime lastWrite = Directory.Exists(path) ? Directory.GetLastWriteTimeUtc(path) : File.GetLastWriteTimeUtc(path);
            // Started (with 1 s of slack for timestamp granularity) after the temporary's last change: a reused PID.
            return p.StartTime.ToUniversalTime() <= lastWrite.AddSeconds(1);
        }
        catch (ArgumentException)
        {
            return false; // no such process
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or NotSupportedException)
        {
            return true; // cannot tell: leave it
        }
    }

    private static void DeleteTree(string p)
    {
        if (Directory.Exists(p)) Directory.Delete(p, recursive: true);
        else if (File.Exists(p)) File.Delete(p);
    }
}

/// <summary>
/// Test-only pauses, off unless GAUGETORCH_TEST_PAUSE_MS is set: every temporary output waits that long once it
/// exists, so the signal tests can interrupt a tiny model's write at a known moment.
/// </summary>
public static class TestHooks
{
    private static readonly int PauseMs =
        int.TryParse(Environment.GetEnvironmentVariable("GAUGETORCH_TEST_PAUSE_MS"), out int ms) && ms > 0 ? ms : 0;

    public static void Pause()
    {
        if (PauseMs > 0) Thread.Sleep(PauseMs);
    }
}
