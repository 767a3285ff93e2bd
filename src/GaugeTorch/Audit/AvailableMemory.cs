using System.Globalization;

namespace GaugeTorch.Audit;

/// <summary>How much memory this process may still allocate: the smaller of the kernel's MemAvailable and the
/// cgroup's limit less its usage (a container's limit is what kills a process, not the host's free memory).</summary>
public static class AvailableMemory
{
    public static long Bytes()
    {
        long best = long.MaxValue;
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                {
                    var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    best = Math.Min(best, long.Parse(parts[1], CultureInfo.InvariantCulture) * 1024);
                }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        long? max = ReadCgroup("/sys/fs/cgroup/memory.max"), cur = ReadCgroup("/sys/fs/cgroup/memory.current");
        if (max is long m && cur is long c) best = Math.Min(best, Math.Max(0, m - c));
        if (best == long.MaxValue) best = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return best;
    }

    private static long? ReadCgroup(string path)
    {
        try
        {
            if (!File.Exists(path)) return null;
            string s = File.ReadAllText(path).Trim();
            return long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out long v) ? v : null;   // "max" = no limit
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>"12.3 GiB".</summary>
    public static string Format(double bytes) => bytes >= 1 << 30
        ? $"{bytes / (1 << 30):0.0} GiB"
        : $"{bytes / (1 << 20):0.0} MiB";
}
