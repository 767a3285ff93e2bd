using System.Diagnostics;

namespace GaugeTorch;

/// <summary>
/// Cumulative wall time per named phase, for profiling the streaming pipelines. Off unless the environment variable
/// GAUGETORCH_PROFILE is set; then <see cref="Report"/> lists the phases (also used by the benchmarks).
/// </summary>
public static class PhaseClock
{
    public static readonly bool Enabled = Environment.GetEnvironmentVariable("GAUGETORCH_PROFILE") is { Length: > 0 };
    private static readonly Dictionary<string, (double Seconds, long Count)> Totals = new(StringComparer.Ordinal);
    private static readonly object Gate = new();
    [ThreadStatic] private static long _last;

    /// <summary>Starts timing on this thread (the time since the last mark is dropped).</summary>
    public static void Start() { if (Enabled) _last = Stopwatch.GetTimestamp(); }

    /// <summary>Adds the time since the last mark on this thread to <paramref name="phase"/>.</summary>
    public static void Mark(string phase)
    {
        if (!Enabled) return;
        long now = Stopwatch.GetTimestamp();
        double s = (now - _last) / (double)Stopwatch.Frequency;
        _last = now;
        lock (Gate)
        {
            Totals.TryGetValue(phase, out var t);
            Totals[phase] = (t.Seconds + s, t.Count + 1);
        }
    }

    public static string Report()
    {
        lock (Gate)
            return string.Join("\n", Totals.OrderByDescending(kv => kv.Value.Seconds).Select(kv => $"{kv.Key,-40} {kv.Value.Seconds,9:F3} s  ×{kv.Value.Count}"));
    }
}
