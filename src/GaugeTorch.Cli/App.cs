using System.CommandLine;
using GaugeTorch.Cli.Commands;

namespace GaugeTorch.Cli;

/// <summary>The gaugetorch command line: used by Program and, in-process, by the tests.</summary>
public static class App
{
    public static RootCommand Build()
    {
        var root = new RootCommand("gaugetorch: check, canonicalize and export the gauge symmetries of GPT-2 checkpoints (HuggingFace safetensors).\n" +
                                   "Every command that takes MODEL uses the embedded demo GPT-2 when none is given.\n" +
                                   "Exit codes: 0 success, 1 a check failed (verify-invariance, compare), 2 bad input or error.");
        foreach (var c in CommandCatalog.All()) root.Subcommands.Add(c);
        return root;
    }

    /// <summary>Parses and runs. Usage errors exit with 2 (1 is reserved for failed checks).</summary>
    public static int Run(string[] args, TextWriter? output = null, TextWriter? error = null)
    {
        var parsed = Build().Parse(args);
        var err = error ?? Console.Error;
        if (parsed.Errors.Count > 0)
        {
            foreach (var e in parsed.Errors) err.WriteLine($"gaugetorch: error: {Readable(e.Message)}");
            err.WriteLine("Run 'gaugetorch --help' or 'gaugetorch COMMAND --help' for usage.");
            return ExitCodes.Error;
        }
        var config = new InvocationConfiguration();
        // Our own signal handling (SignalCleanup), not System.CommandLine's cancellation: it would only cancel a
        // token that the synchronous writers never look at.
        config.ProcessTerminationTimeout = null;
        if (output is not null) config.Output = output;
        if (error is not null) config.Error = error;
        return parsed.Invoke(config);
    }

    private static readonly System.Text.RegularExpressions.Regex CannotParse =
        new(@"^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']+)' as expected type '(?<type>[^']+)'\.$");

    /// <summary>
    /// A parse error in words: "--tolerance: 'abc' is not a number" instead of System.CommandLine's
    /// "... as expected type 'System.Nullable`1[System.Double]'", for every numeric option at once.
    /// </summary>
    public static string Readable(string message)
    {
        var m = CannotParse.Match(message);
        if (!m.Success) return message;
        string type = m.Groups["type"].Value;
        string kind = type.Contains("Double") || type.Contains("Single") ? "a number"
            : type.Contains("Int") ? "an integer"
            : type.Contains("Boolean") ? "true or false"
            : "valid";
        return $"{m.Groups["option"].Value}: '{m.Groups["value"].Value}' is not {kind}";
    }
}
