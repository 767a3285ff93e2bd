// Tables stay readable when stdout is a file or a pipe (Spectre would otherwise assume 80 columns); COLUMNS, when
// set, is the width to fit (tables abbreviate or drop columns rather than wrap numbers, see TableFit).
if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 200;
if (int.TryParse(Environment.GetEnvironmentVariable("COLUMNS"), out int columns) && columns >= 20) Spectre.Console.AnsiConsole.Profile.Width = columns;

// SIGINT/SIGTERM: delete this run's temporaries, say so, exit 130/143 (SignalCleanup).
GaugeTorch.Cli.SignalCleanup.Install();

// Passive OpenMP waiting and reuse of freed native memory (see NativeRuntimeTuning), before libtorch loads.
GaugeTorch.NativeRuntimeTuning.TuneForStreaming();
if (GaugeTorch.PhaseClock.Enabled) Console.Error.WriteLine($"native tuning (mallopt, OMP_WAIT_POLICY): {(GaugeTorch.NativeRuntimeTuning.Tuned ? "on" : "off")}");

return GaugeTorch.Cli.App.Run(args);
