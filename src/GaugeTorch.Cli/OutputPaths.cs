namespace GaugeTorch.Cli;

/// <summary>
/// Checks every output path of a command before any work starts (issue 11: canonicalize-checkpoint used to write a
/// whole checkpoint and only then fail on a read-only --json directory, and verify-invariance printed PASSED before
/// exiting 2). Each error names the option. Missing parent directories are an error, never created on the side
/// (--plot /nonexistent/x.svg used to create /nonexistent). Writability is probed by creating and deleting a
/// temporary in the directory, which also answers for read-only mounts, ACLs and immutable directories, and sweeps
/// stale temporaries of dead runs there (<see cref="TempFiles.SweepStale"/>).
/// </summary>
public static class OutputPaths
{
    /// <summary>The path that means standard output, for --json.</summary>
    public const string Stdout = "-";

    public static bool IsStdout(string? path) => path == Stdout;

    /// <summary>An output file (--json, --plot, logits --out); null means not requested.</summary>
    public static void File(string option, string? path, IEnumerable<string>? inputs = null, bool stdoutAllowed = false)
    {
        if (path is null) return;
        if (IsStdout(path))
        {
            if (stdoutAllowed) return;
            throw new ArgumentException($"{option}: '-' (standard output) is not possible here; give a file name");
        }
        if (path.Trim().Length == 0) throw new ArgumentException($"{option}: empty path");
        string full = Path.GetFullPath(path);
        if (System.IO.Directory.Exists(full)) throw new IOException($"{option}: {full} is a directory (give a file name)");
        try
        {
            OutputGuard.RefuseToOverwrite(full, inputs);
        }
        catch (IOException e)
        {
            throw new IOException($"{option}: {e.Message}");
        }
        Writable(option, full);
    }

    /// <summary>
    /// An output directory (--out of transform, canonicalize-checkpoint, make-checkpoint): not a file, not the input's
    /// directory, empty or absent (or, with <paramref name="force"/>, a directory to be replaced), parent writable.
    /// </summary>
    public static void Directory(string option, string path, string? inputDirectory = null, IEnumerable<string>? inputs = null,
                                 bool force = false, string notEmptyHint = "remove it or choose another directory")
    {
        if (path.Trim().Length == 0) throw new ArgumentException($"{option}: empty path");
        string full = Path.GetFullPath(path);
        if (full.Length > 1) full = full.TrimEnd('/');
        if (System.IO.File.Exists(full)) throw new IOException($"{option}: {full} exists and is a file (give a directory)");
        try
        {
            if (inputDirectory is not null) OutputGuard.RefuseInputDirectory(full, inputDirectory);
        }
        catch (IOException e)
        {
            throw new IOException($"{option}: {e.Message}");
        }
        foreach (var input in inputs ?? [])
            if (Path.GetFullPath(input).StartsWith(full + "/", StringComparison.Ordinal))
                throw new IOException($"{option}: {full} contains the input file {input}");
        if (System.IO.Directory.Exists(full) && System.IO.Directory.EnumerateFileSystemEntries(full).Any() && !force)
            throw new IOException($"{option}: {full} exists and is not empty ({notEmptyHint})");
        Writable(option, full);
    }

    /// <summary>The directory that will hold <paramref name="full"/> exists and takes new files.</summary>
    private static void Writable(string option, string full)
    {
        string parent = Path.GetDirectoryName(full) ?? "/";
        if (System.IO.File.Exists(parent)) throw new IOException($"{option}: {parent} is a file, not a directory");
        if (!System.IO.Directory.Exists(parent))
            throw new IOException($"{option}: directory {parent} does not exist (create it first; gaugetorch does not create parent directories)");
        string probe = TempFiles.NewPath(full);
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{option}: cannot write in {parent} ({e.Message})");
        }
        finally
        {
            TempFiles.Delete(probe);
        }
    }
}
