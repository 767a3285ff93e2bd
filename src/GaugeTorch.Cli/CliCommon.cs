using System.CommandLine;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using Spectre.Console;
using TorchSharp;

namespace GaugeTorch.Cli;

/// <summary>Exit codes shared by all commands.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>A check ran and failed (verify-invariance, compare).</summary>
    public const int CheckFailed = 1;
    /// <summary>Bad input or an error: one line on stderr.</summary>
    public const int Error = 2;
    /// <summary>Interrupted by SIGINT (Ctrl-C): temporaries removed (<see cref="SignalCleanup"/>).</summary>
    public const int Interrupted = SignalCleanup.InterruptedExitCode;
    /// <summary>Terminated by SIGTERM: temporaries removed.</summary>
    public const int Terminated = SignalCleanup.TerminatedExitCode;
}

public static class CliCommon
{
    public static Argument<string?> ModelArgument() => new("MODEL")
    {
        Description = "Model directory (config.json + model.safetensors or index), or a .safetensors file. Default: the embedded demo GPT-2.",
        Arity = ArgumentArity.ZeroOrOne,
    };

    // One --dtype vocabulary for every command: float64, float32, float16, bfloat16 (the safetensors names F64, F32,
    // F16, BF16 and fp64/fp32/fp16, double/float/half are accepted too, in any case), plus "same" where a command
    // writes the input's own storage dtype by default. Each command accepts the subset it can use and says which.

    /// <summary>The user-facing name of a dtype (float64, float32, float16, bfloat16).</summary>
    public static string DTypeName(DType t) => t switch
    {
        DType.F64 => "float64",
        DType.F32 => "float32",
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        _ => t.ToString(),
    };

    /// <summary>Parses a --dtype value; null for "same" (when <paramref name="same"/> allows it).</summary>
    public static DType? ParseDType(string value, IReadOnlyList<DType> allowed, bool same = false, string option = "--dtype")
    {
        string choices = string.Join(", ", (same ? ["same"] : Array.Empty<string>()).Concat(allowed.Select(DTypeName)));
        string v = value.Trim();
        if (same && v.Equals("same", StringComparison.OrdinalIgnoreCase)) return null;
        DType d;
        try
        {
            d = DTypes.ParseUser(v);
        }
        catch (ArgumentException)
        {
            throw new ArgumentException($"{option}: '{value}' is not a dtype; use one of {choices}");
        }
        if (!allowed.Contains(d)) throw new ArgumentException($"{option}: {DTypeName(d)} is not possible here; use one of {choices}");
        return d;
    }

    /// <summary>--dtype for commands that compute in float64 or float32.</summary>
    public static Option<string> DTypeOption(string dflt = "float64") => new("--dtype")
    {
        Description = "Compute dtype: float64 or float32 (F64/F32 accepted too).",
        DefaultValueFactory = _ => dflt,
    };

    public static torch.ScalarType ParseComputeDType(string s) => ParseDType(s, [DType.F64, DType.F32])!.Value.ToScalarType();

    public static double Eps(torch.ScalarType t) => t == torch.ScalarType.Float64 ? Math.Pow(2, -52) : Math.Pow(2, -23);

    /// <summary>--allow-nonfinite: the explicit way past <see cref="FiniteWeights"/>.</summary>
    public static Option<bool> AllowNonFiniteOption(string what = "Run") => new(GaugeTorch.Model.FiniteWeights.AllowOption)
    {
        Description = $"{what} even when a weight is NaN or infinite (by default such a checkpoint is refused, naming the file and tensor).",
    };

    /// <summary>Runs a command body: known errors become one line on stderr and exit code 2, never a stack trace.</summary>
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or SafeTensorsException
                                      or Gpt2FormatException or GaugeTorch.Model.ModelFormatException or InvalidOperationException or KeyNotFoundException or FormatException
                                      or System.Text.Json.JsonException or NotSupportedException or OperationCanceledException)
        {
            Console.Error.WriteLine($"gaugetorch: error: {Flatten(e)}");
            return ExitCodes.Error;
        }
    }

    private static string Flatten(Exception e) => e.InnerException is null || e.Message.Contains(e.InnerException.Message) ? e.Message : $"{e.Message} ({e.InnerException.Message})";

    /// <summary>Opens MODEL with a one-line status on stderr.</summary>
    public static Gpt2Checkpoint OpenModel(string? path) => Gpt2Checkpoint.Open(path);

    /// <summary>Opens MODEL as an architecture-neutral checkpoint (its adapter chosen by config.json's model_type).</summary>
    public static GaugeTorch.Model.Checkpoint OpenCheckpoint(string? path) => GaugeTorch.Model.Checkpoint.Open(path);

    /// <summary>Parses --families for this model (the library's message, prefixed with the option).</summary>
    public static IReadOnlyList<GaugeTorch.Symmetry.SymmetryFamily> Families(string spec, GaugeTorch.Model.ModelTraits traits)
    {
        try
        {
            return GaugeTorch.Symmetry.SymmetryCatalog.Parse(spec, traits);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--families: {e.Message}", e);
        }
    }

    /// <summary>
    /// Progress on stderr, so stdout stays clean for tables and JSON: a live display on a terminal, plain rate-limited
    /// lines otherwise (<see cref="CliProgress"/>).
    /// </summary>
    public static CliProgress Progress() => CliProgress.ForStdErr();

    /// <summary>The Spectre live display <see cref="CliProgress"/> uses on a terminal.</summary>
    internal static Spectre.Console.Progress SpectreProgress() =>
        StdErr.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn());

    public static IAnsiConsole StdErr => AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

}
