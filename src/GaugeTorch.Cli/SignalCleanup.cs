using System.Runtime.InteropServices;

namespace GaugeTorch.Cli;

/// <summary>
/// SIGINT (Ctrl-C) and SIGTERM for every command: the registered temporaries (<see cref="TempFiles"/>) are deleted,
/// one line says what happened, and the process exits with 130 (SIGINT) or 143 (SIGTERM), the shell's 128 + signal.
/// Before this, canonicalize-checkpoint, transform and make-checkpoint left hidden partial files (181 MB for transform
/// of the gpt2 preset) that no later run removed. The writers cannot be unwound from a signal handler, so the handler
/// deletes their files and ends the process at once (_exit); <see cref="TempFiles.Commit"/> and the handler share one lock, so an output is
/// either complete or absent. Installed by Program (the real executable) only: in-process runs (tests) keep the host's
/// signal handling.
/// </summary>
public static class SignalCleanup
{
    private static PosixSignalRegistration? _int, _term;
    private static int _fired;

    /// <summary>Exit code after SIGINT (128 + 2).</summary>
    public const int InterruptedExitCode = 130;
    /// <summary>Exit code after SIGTERM (128 + 15).</summary>
    public const int TerminatedExitCode = 143;

    /// <summary>What a command deliberately keeps when interrupted (download: its resumable partial files), or null.</summary>
    public static Func<string?>? KeptNote { get; set; }

    public static void Install()
    {
        _int ??= PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle);
        if (!OperatingSystem.IsWindows()) _term ??= PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle);
    }

    private static void Handle(PosixSignalContext ctx)
    {
        ctx.Cancel = true; // we exit ourselves, after the cleanup
        if (Interlocked.Exchange(ref _fired, 1) == 1) return;
        bool sigint = ctx.Signal == PosixSignal.SIGINT;
        var removed = TempFiles.Interrupt();
        string what = removed.Count switch
        {
            0 => "nothing partial is left",
            1 => $"removed the temporary {removed[0]}, nothing partial is left",
            _ => $"removed {removed.Count} temporaries ({string.Join(", ", removed.Take(3))}{(removed.Count > 3 ? ", ..." : "")}), nothing partial is left",
        };
        string? kept = null;
        try
        {
            kept = KeptNote?.Invoke();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        try
        {
            if (!Console.IsErrorRedirected) Console.Error.Write("\u001b[?25h\n"); // a progress display may have hidden the cursor
            Console.Error.WriteLine($"gaugetorch: interrupted by {(sigint ? "SIGINT" : "SIGTERM")}; {what}{(kept is null ? "" : "; " + kept)}");
            Console.Error.Flush();
        }
        catch (IOException) { }
        int code = sigint ? InterruptedExitCode : TerminatedExitCode;
        // _exit, not Environment.Exit: exit() runs libtorch's static destructors while the main thread is still inside
        // libtorch, which then failed with "INTERNAL ASSERT FAILED ... schema_.has_value()" and an unhandled-exception
        // dump after our message (measured: make-checkpoint --preset gpt2 interrupted at 1.5 s and 2 s).
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) ExitNow(code);
        Environment.Exit(code);
    }

    [DllImport("libc", EntryPoint = "_exit")]
    private static extern void ExitNow(int status);
}
