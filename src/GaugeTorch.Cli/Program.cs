// Tables stay readable when stdout is a file or a pipe (Spectre would otherwise assume 80 columns).
if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 200;

// Reuse freed native memory instead of mmap/munmap per tensor (see NativeMemory).
GaugeTorch.NativeRuntimeTuning.TuneForStreaming();
if (GaugeTorch.PhaseClock.Enabled) Console.Error.WriteLine($"mallopt tuned: {GaugeTorch.NativeRuntimeTuning.Tuned}");

return GaugeTorch.Cli.App.Run(args);
