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
        var output = new Option<string>("--out") { Description = "Output directory (HuggingFace layout; must not exist or be empty; its parent must exist).", Required = true };
        var seed = new Option<long>("--seed") { Description = "Seed of the random group element; the same input and seed give the same bytes, in any directory.", DefaultValueFactory = _ => 0 };
        var families = new Option<string>("--families") { Description = "all (every family that holds for the model), paper, or a comma list of: " + string.Join(", ", SymmetryCatalog.Names), DefaultValueFactory = _ => "all" };
        var dtype = new Option<string>("--dtype") { Description = "Output dtype: same (the input's storage dtype), float64, float32, float16 or bfloat16.", DefaultValueFactory = _ => "same" };
        var rotation = new Option<bool>("--residual-rotation") { Description = "Also fold every LayerNorm, untie the head and rotate the residual stream by an orthogonal Q with Q1 = 1 (van Nierop)." };
        var allowNonFinite = CliCommon.AllowNonFiniteOption("Transform");
        var cmd = new Command("transform", "Write the checkpoint transformed by a random gauge element (same tensor names and shapes; the function is unchanged).")
        {
            model, output, seed, families, dtype, rotation, allowNonFinite,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            DType? outType = CliCommon.ParseDType(r.GetValue(dtype)!, [DType.F64, DType.F32, DType.F16, DType.BF16], same: true);
            using var ck = CliCommon.OpenCheckpoint(r.GetValue(model));
            var fams = CliCommon.Families(r.GetValue(families)!, ck.Traits);
            string dir = r.GetValue(output)!;
            OutputPaths.Directory("--out", dir, ck.Directory, ck.InputFiles);
            var opts = new TransformOptions
            {
                Seed = r.GetValue(seed), Families = fams, OutputDType = outType, ResidualRotation = r.GetValue(rotation), AllowNonFinite = r.GetValue(allowNonFinite),
            };
            if (ck.Store.TotalBytes < 100_000_000)
                CheckpointTransformer.Write(ck, dir, opts);
            else
                CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask("transforming", maxValue: ck.Traits.Layers + 1);
                    CheckpointTransformer.Write(ck, dir, opts, new Progress<(int Done, int Total)>(p => task.Value = p.Done));
                });
            Console.Error.WriteLine($"wrote {dir}: families {string.Join(",", fams.Select(f => f.Name))}, seed {opts.Seed}, {CliCommon.DTypeName(outType ?? ck.StorageDType)}{(opts.ResidualRotation ? ", residual rotation (untied head)" : "")}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
