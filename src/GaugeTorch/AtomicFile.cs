namespace GaugeTorch;

/// <summary>
/// Small files written atomically: a registered temporary beside the target (<see cref="TempFiles"/>), then a rename.
/// The target's directory must exist: outputs never create missing parents on their own.
/// </summary>
public static class AtomicFile
{
    public static void WriteAllText(string path, string text, IEnumerable<string>? protectedPaths = null) =>
        WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(text), protectedPaths);

    public static void WriteAllBytes(string path, byte[] bytes, IEnumerable<string>? protectedPaths = null)
    {
        string full = Path.GetFullPath(path);
        OutputGuard.RefuseToOverwrite(full, protectedPaths);
        string tmp = TempFiles.NewPath(full);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                TestHooks.Pause();
                fs.Write(bytes);
                fs.Flush(flushToDisk: true);
            }
            TempFiles.Commit(tmp, full, overwrite: true);
        }
        catch
        {
            TempFiles.Delete(tmp);
            throw;
        }
    }

    /// <summary>Copies a file atomically.</summary>
    public static void Copy(string source, string destination, IEnumerable<string>? protectedPaths = null)
    {
        string full = Path.GetFullPath(destination);
        OutputGuard.RefuseToOverwrite(full, protectedPaths);
        OutputGuard.RefuseToOverwrite(full, [source]);
        string tmp = TempFiles.NewPath(full);
        try
        {
            File.Copy(source, tmp);
            TempFiles.Commit(tmp, full, overwrite: true);
        }
        catch
        {
            TempFiles.Delete(tmp);
            throw;
        }
    }
}
