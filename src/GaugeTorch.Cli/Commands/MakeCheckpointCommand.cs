using System.CommandLine;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Cli.Commands;

public static class MakeCheckpointCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "gpt2, gpt2-medium, gpt2-large, gpt2-xl (exact shapes) or tiny.", DefaultValueFactory = _ => "tiny" };
        var output = new Option<string>("--out") { Description = "Output directory (config.json + safetensors).", Required = true };
        var seed = new Option<long>("--seed") { Description = "Random seed; the same seed gives the same bytes.", DefaultValueFactory = _ => 0 };
        var dtype = new Option<string>("--dtype") { Description = "Storage dtype: F32, F16, BF16 or F64.", DefaultValueFactory = _ => "F32" };
        var layers = new Option<int?>("--layers") { Description = "Override n_layer." };
        var embd = new Option<int?>("--embd") { Description = "Override n_embd." };
        var heads = new Option<int?>("--heads") { Description = "Override n_head." };
        var inner = new Option<int?>("--inner") { Description = "Override the MLP width n_inner (default 4·n_embd)." };
        var vocab = new Option<int?>("--vocab") { Description = "Override vocab_size." };
        var positions = new Option<int?>("--positions") { Description = "Override n_positions." };
        var shards = new Option<int>("--shards") { Description = "Number of safetensors shards (an index is written when > 1).", DefaultValueFactory = _ => 1 };
        var prefix = new Option<bool>("--prefix") { Description = "Store keys with the 'transformer.' prefix." };
        var buffers = new Option<bool>("--buffers") { Description = "Store the attn.bias / attn.masked_bias mask buffers." };
        var untied = new Option<bool>("--untied") { Description = "Store an lm_head.weight different from wte." };
        var cmd = new Command("make-checkpoint", "Write a random GPT-2 checkpoint in the exact HuggingFace layout (for tests and benchmarks).")
        {
            preset, output, seed, dtype, layers, embd, heads, inner, vocab, positions, shards, prefix, buffers, untied,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string p = r.GetValue(preset)!;
            if (!Gpt2Config.Presets.TryGetValue(p, out var cfg)) throw new ArgumentException($"--preset: unknown preset '{p}' (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny)");
            int? e = r.GetValue(embd);
            cfg = cfg with
            {
                NLayer = r.GetValue(layers) ?? cfg.NLayer,
                NEmbd = e ?? cfg.NEmbd,
                NHead = r.GetValue(heads) ?? cfg.NHead,
                NInner = r.GetValue(inner) ?? (e is int ee ? 4 * ee : cfg.NInner),
                VocabSize = r.GetValue(vocab) ?? cfg.VocabSize,
                NPositions = r.GetValue(positions) ?? cfg.NPositions,
            };
            var opts = new MakeCheckpointOptions
            {
                Seed = r.GetValue(seed), DType = DTypes.ParseUser(r.GetValue(dtype)!), Shards = r.GetValue(shards),
                Prefix = r.GetValue(prefix), MaskBuffers = r.GetValue(buffers), Untied = r.GetValue(untied),
            };
            string dir = r.GetValue(output)!;
            long bytes = cfg.ParameterCount(!opts.Untied) * opts.DType.Size();
            if (bytes > 200_000_000 && !Console.IsErrorRedirected)
            {
                CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask($"writing {p}", maxValue: 1.0);
                    CheckpointMaker.Make(cfg, dir, opts, new Progress<(long Done, long Total)>(x => task.Value = (double)x.Done / x.Total));
                    task.Value = 1.0;
                });
            }
            else CheckpointMaker.Make(cfg, dir, opts);
            Console.Error.WriteLine($"wrote {dir}: {cfg.NLayer} layers, d={cfg.NEmbd}, h={cfg.NHead}, F={cfg.NInner}, V={cfg.VocabSize}, {cfg.ParameterCount(!opts.Untied):N0} parameters, {opts.DType}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
