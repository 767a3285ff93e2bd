using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace GaugeTorch.Cli;

/// <summary>
/// Progress on long work, the one mechanism every long command uses (<see cref="CliCommon.Progress"/>). On a terminal it
/// is a Spectre live display on stderr (bar, percentage, elapsed, remaining). When stderr is not a terminal (logs, CI,
/// <c>2&gt;file</c>) it prints plain lines instead, at most one per task every <see cref="Interval"/> (5 s by default,
/// <c>GAUGETORCH_PROGRESS_SECONDS</c> to change it): what, how far, elapsed, estimate. Work that ends before the first
/// interval prints nothing, so short commands keep a quiet stderr.
/// </summary>
public sealed class CliProgress
{
    private readonly TextWriter? _lines;
    private readonly TimeSpan _interval;

    /// <summary>The line interval in non-terminal mode.</summary>
    public static TimeSpan Interval
    {
        get
        {
            string? s = Environment.GetEnvironmentVariable("GAUGETORCH_PROGRESS_SECONDS");
            return s is not null && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v > 0
                ? TimeSpan.FromSeconds(v) : TimeSpan.FromSeconds(5);
        }
    }

    /// <summary>Spectre live display on a terminal; plain rate-limited lines on stderr otherwise.</summary>
    public static CliProgress ForStdErr() => Console.IsErrorRedirected ? new CliProgress(Console.Error, Interval) : new CliProgress(null, Interval);

    /// <summary>Plain lines to <paramref name="lines"/> (null: Spectre on stderr), at most one per task per <paramref name="interval"/>.</summary>
    public CliProgress(TextWriter? lines, TimeSpan interval)
    {
        _lines = lines;
        _interval = interval;
    }

    /// <summary>Whether this prints plain lines (stderr not a terminal).</summary>
    public bool Plain => _lines is not null;

    /// <summary>Runs <paramref name="body"/> with a context to add tasks to; the display ends when it returns.</summary>
    public void Start(Action<CliProgressContext> body)
    {
        if (_lines is null)
        {
            CliCommon.SpectreProgress().Start(ctx => body(new CliProgressContext(ctx, null)));
            return;
        }
        var context = new CliProgressContext(null, _lines);
        // A thread of its own, not a pool timer: a busy or starved thread pool must not silence the log.
        using var stop = new ManualResetEventSlim(false);
        var ticker = new Thread(() =>
        {
            while (!stop.Wait(_interval)) context.Tick(_interval);
        }) { IsBackground = true, Name = "gaugetorch progress" };
        ticker.Start();
        try
        {
            body(context);
        }
        finally
        {
            stop.Set();
            ticker.Join();
            context.Finish();
        }
    }
}

/// <summary>The tasks of one <see cref="CliProgress.Start"/>.</summary>
public sealed class CliProgressContext
{
    private readonly ProgressContext? _spectre;
    private readonly TextWriter? _lines;
    private readonly List<CliProgressTask> _tasks = [];
    private readonly object _gate = new();

    internal CliProgressContext(ProgressContext? spectre, TextWriter? lines)
    {
        _spectre = spectre;
        _lines = lines;
    }

    public CliProgressTask AddTask(string description, double maxValue = 100)
    {
        var t = new CliProgressTask(description, maxValue, _spectre?.AddTask(description, maxValue: maxValue));
        lock (_gate) _tasks.Add(t);
        return t;
    }

    internal void Tick(TimeSpan interval)
    {
        CliProgressTask[] tasks;
        lock (_gate) tasks = [.. _tasks];
        foreach (var t in tasks)
            if (t.LineDue(interval) is string line)
                lock (_gate) _lines!.WriteLine(line);
    }

    internal void Finish()
    {
        CliProgressTask[] tasks;
        lock (_gate) tasks = [.. _tasks];
        foreach (var t in tasks)
            if (t.FinalLine() is string line)
                lock (_gate) _lines!.WriteLine(line);
        _lines?.Flush();
    }
}

/// <summary>One task: set <see cref="Value"/> (thread-safe) as work advances.</summary>
public sealed class CliProgressTask
{
    private readonly ProgressTask? _spectre;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly object _gate = new();
    private double _value, _max;
    private bool _indeterminate, _stopped, _printed;
    private TimeSpan _lastLine = TimeSpan.Zero;
    private double _lastValue = double.NaN;

    internal CliProgressTask(string description, double maxValue, ProgressTask? spectre)
    {
        Description = description;
        _max = maxValue;
        _spectre = spectre;
    }

    public string Description { get; }

    public double Value
    {
        get { lock (_gate) return _value; }
        set
        {
            lock (_gate) _value = Math.Min(value, _max);
            if (_spectre is not null) _spectre.Value = value;
        }
    }

    public double MaxValue
    {
        get { lock (_gate) return _max; }
        set
        {
            lock (_gate) _max = value;
            if (_spectre is not null) _spectre.MaxValue = value;
        }
    }

    /// <summary>No known end (the line then gives only the elapsed time).</summary>
    public bool IsIndeterminate
    {
        get { lock (_gate) return _indeterminate; }
        set
        {
            lock (_gate) _indeterminate = value;
            if (_spectre is not null) _spectre.IsIndeterminate = value;
        }
    }

    public void StopTask()
    {
        lock (_gate) _stopped = true;
        _spectre?.StopTask();
    }

    /// <summary>A line when at least <paramref name="interval"/> passed since the last one; after six quiet intervals a line even without advance.</summary>
    internal string? LineDue(TimeSpan interval)
    {
        lock (_gate)
        {
            if (_stopped) return null;
            var now = _clock.Elapsed;
            if (now - _lastLine < interval * 0.9) return null;
            if (!_indeterminate && _value == _lastValue && now - _lastLine < interval * 6) return null;
            _lastLine = now;
            _lastValue = _value;
            _printed = true;
            return Format(now, done: false);
        }
    }

    /// <summary>The closing line, only when a progress line was printed before (short work stays quiet).</summary>
    internal string? FinalLine()
    {
        lock (_gate)
        {
            if (!_printed) return null;
            _printed = false;
            return Format(_clock.Elapsed, done: true);
        }
    }

    private string Format(TimeSpan elapsed, bool done)
    {
        if (done) return $"{Description}: done in {Duration(elapsed)}";
        if (_indeterminate || !(_max > 0)) return $"{Description}: {Duration(elapsed)} elapsed";
        double f = Math.Clamp(_value / _max, 0, 1);
        string far = _max == 1.0
            ? $"{100 * f:F0}%"
            : $"{_value.ToString("0.##", CultureInfo.InvariantCulture)} of {_max.ToString("0.##", CultureInfo.InvariantCulture)} ({100 * f:F0}%)";
        string eta = f > 0 ? $", about {Duration(elapsed * ((1 - f) / f))} left" : ", estimate after the first step";
        return $"{Description}: {far}, {Duration(elapsed)} elapsed{eta}";
    }

    internal static string Duration(TimeSpan t) =>
        t.TotalSeconds < 60 ? $"{t.TotalSeconds:F0} s"
        : t.TotalMinutes < 60 ? $"{(int)t.TotalMinutes} min {t.Seconds:D2} s"
        : $"{(int)t.TotalHours} h {t.Minutes:D2} min";
}
