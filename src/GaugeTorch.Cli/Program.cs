// Tables stay readable when stdout is a file or a pipe (Spectre would otherwise assume 80 columns).
if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 200;

// Passive OpenMP waiting and reuse of freed native memory (see NativeRuntimeTuning), before libtorch loads.
GaugeTorch.NativeRuntimeTuning.TuneForStreaming();
if (GaugeTorch.PhaseClock.Enabled) Console.Error.WriteLine($"native tuning (mallopt, OMP_WAIT_POLICY): {(GaugeTorch.NativeRuntimeTuning.Tuned ? "on" : "off")}");

return GaugeTorch.Cli.App.Run(args);
