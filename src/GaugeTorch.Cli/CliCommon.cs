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
}

public static class CliCommon
{
    public static Argument<string?> ModelArgument() => new("MODEL")
    {
        Description = "Model directory (config.json + model.safetensors or index), or a .safetensors file. Default: the embedded demo GPT-2.",
        Arity = ArgumentArity.ZeroOrOne,
    };

    public static Option<string> DTypeOption(string dflt = "float64") => new("--dtype")
    {
        Description = "Compute dtype: float64 or float32.",
        DefaultValueFactory = _ => dflt,
    };

    public static torch.ScalarType ParseComputeDType(string s) => s.Trim().ToLowerInvariant() switch
    {
        "float64" or "f64" or "double" => torch.ScalarType.Float64,
        "float32" or "f32" or "float" => torch.ScalarType.Float32,
        _ => throw new ArgumentException($"--dtype: '{s}' is not float64 or float32"),
    };

    public static double Eps(torch.ScalarType t) => t == torch.ScalarType.Float64 ? Math.Pow(2, -52) : Math.Pow(2, -23);

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

    /// <summary>Loads the full model, with a progress bar when stderr is a terminal and the load is large.</summary>
    public static Gpt2Model LoadModel(Gpt2Checkpoint ck, torch.ScalarType dtype)
    {
        long bytes = ck.Store.TotalBytes;
        if (bytes < 200_000_000 || Console.IsErrorRedirected) return Gpt2Model.Load(ck, dtype, ComputeDevice.Default);
        Gpt2Model? model = null;
        Progress().Start(ctx =>
        {
            var task = ctx.AddTask($"loading {Path.GetFileName(ck.Directory)}", maxValue: 1.0);
            model = Gpt2Model.Load(ck, dtype, ComputeDevice.Default, progress: new Progress<(long Done, long Total)>(p => task.Value = (double)p.Done / Math.Max(1, p.Total)));
            task.Value = 1.0;
        });
        return model!;
    }

    /// <summary>A Spectre progress display writing to stderr, so stdout stays clean for tables and JSON.</summary>
    public static Spectre.Console.Progress Progress() =>
        StdErr.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn());

    public static IAnsiConsole StdErr => AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    public static int[] Tokens(string? text, string? tokenList, int vocab)
    {
        if (text is not null && tokenList is not null) throw new ArgumentException("give --text or --tokens, not both");
        if (tokenList is not null) return Gpt2Tokenizer.ParseTokenList(tokenList, vocab);
        var ids = Gpt2Tokenizer.Encode(text ?? Gpt2Tokenizer.BuiltInText);
        if (ids.Length == 0) throw new ArgumentException("--text: the text encodes to no tokens");
        foreach (int id in ids)
            if (id >= vocab) throw new ArgumentException($"--text: token {id} is outside this model's vocabulary of {vocab}");
        return ids;
    }
}
