using System.CommandLine;
using GaugeTorch.Pipeline;
using GaugeTorch.Symmetry;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Cli.Commands;

public static class TransformCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelArgument();
        var output = new Option<string>("--out") { Description = "Output directory (HuggingFace layout; must not exist or be empty).", Required = true };
        var seed = new Option<long>("--seed") { Description = "Seed of the random group element; the same seed gives the same bytes.", DefaultValueFactory = _ => 0 };
        var families = new Option<string>("--families") { Description = "all (every family that holds for the model), paper, or a comma list of: " + string.Join(", ", SymmetryCatalog.Names), DefaultValueFactory = _ => "all" };
        var dtype = new Option<string?>("--dtype") { Description = "Output dtype: float64 (F64). Default: the input's storage dtype." };
        var rotation = new Option<bool>("--residual-rotation") { Description = "Also fold every LayerNorm, untie the head and rotate the residual stream by an orthogonal Q with Q1 = 1 (van Nierop)." };
        var cmd = new Command("transform", "Write the checkpoint transformed by a random gauge element (same tensor names and shapes; the function is unchanged).")
        {
            model, output, seed, families, dtype, rotation,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            DType? outType = r.GetValue(dtype) is string s ? DTypes.ParseUser(s) : null;
            using var ck = CliCommon.OpenCheckpoint(r.GetValue(model));
            var fams = CliCommon.Families(r.GetValue(families)!, ck.Traits);
            var opts = new TransformOptions { Seed = r.GetValue(seed), Families = fams, OutputDType = outType, ResidualRotation = r.GetValue(rotation) };
            string dir = r.GetValue(output)!;
            if (Console.IsErrorRedirected || ck.Store.TotalBytes < 100_000_000)
                CheckpointTransformer.Write(ck, dir, opts);
            else
                CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask("transforming", maxValue: ck.Traits.Layers + 1);
                    CheckpointTransformer.Write(ck, dir, opts, new Progress<(int Done, int Total)>(p => task.Value = p.Done));
                });
            Console.Error.WriteLine($"wrote {dir}: families {string.Join(",", fams.Select(f => f.Name))}, seed {opts.Seed}, {(outType ?? ck.StorageDType)}{(opts.ResidualRotation ? ", residual rotation (untied head)" : "")}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
