using System.CommandLine;

namespace GaugeTorch.Cli.Commands;

/// <summary>Every subcommand of <c>gaugetorch</c>, in the order --help lists them.</summary>
public static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return VerifyInvarianceCommand.Create();
        yield return CanonicalizeCheckpointCommand.Create();
        yield return CompareCommand.Create();
        yield return TransformCommand.Create();
        yield return AuditCommand.Create();
        yield return DownloadCommand.Create();
        yield return InspectCommand.Create();
        yield return LogitsCommand.Create();
        yield return GenerateCommand.Create();
        yield return MakeCheckpointCommand.Create();
        yield return AlignCommand.Create();
        yield return MergeCommand.Create();
        yield return InterpolateCommand.Create();
    }
}
