using System.CommandLine;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Cli.Commands;

public static class MakeCheckpointCommand
{
    public static Command Create()
    {
        var arch = new Option<string?>("--arch") { Description = "gpt2, llama, qwen2 or mistral (default: the preset's, else gpt2)." };
        var preset = new Option<string?>("--preset") { Description = "gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny (GPT-2); qwen2-0.5b, llama-3.2-1b (exact shapes), tiny-llama (llama, qwen2, mistral). Default: tiny or tiny-llama." };
        var output = new Option<string>("--out") { Description = "Output directory (config.json + safetensors); must not exist or be empty unless --force; its parent must exist.", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace a non-empty --out directory (the whole directory, after the new checkpoint is complete)." };
        var seed = new Option<long>("--seed") { Description = "Random seed; the same seed gives the same bytes.", DefaultValueFactory = _ => 0 };
        var dtype = new Option<string>("--dtype") { Description = "Storage dtype: float32, float16, bfloat16 or float64 (F32, F16, BF16, F64 accepted too).", DefaultValueFactory = _ => "float32" };
        var layers = new Option<int?>("--layers") { Description = "Override n_layer." };
        var embd = new Option<int?>("--embd") { Description = "Override n_embd." };
        var heads = new Option<int?>("--heads") { Description = "Override n_head." };
        var inner = new Option<int?>("--inner") { Description = "Override the MLP width n_inner (default 4·n_embd)." };
        var vocab = new Option<int?>("--vocab") { Description = "Override vocab_size." };
        var positions = new Option<int?>("--positions") { Description = "Override n_positions." };
        var shards = new Option<int>("--shards") { Description = "Number of safetensors shards, exactly (an index is written when > 1; at most one per tensor).", DefaultValueFactory = _ => 1 };
        var prefix = new Option<bool>("--prefix") { Description = "Store keys with the 'transformer.' prefix." };
        var buffers = new Option<bool>("--buffers") { Description = "Store the buffers HF ignores: GPT-2's attn.bias / attn.masked_bias masks, the LLaMA family's rotary_emb.inv_freq." };
        var untied = new Option<bool>("--untied") { Description = "Store an lm_head.weight different from the embedding." };
        var tied = new Option<bool>("--tied") { Description = "Tie the head to the embedding (GPT-2's default; llama family: tie_word_embeddings=true)." };
        var kvHeads = new Option<int?>("--kv-heads") { Description = "llama family: num_key_value_heads (G; = heads for MHA, 1 for MQA)." };
        var headDim = new Option<int?>("--head-dim") { Description = "llama family: head_dim (default hidden/heads when --embd or --heads is given, else the preset's)." };
        var ropeScaling = new Option<string?>("--rope-scaling") { Description = "llama family: default, linear (factor 2) or llama3 (factor 32, low 1, high 4, original 8192, as Llama 3.2)." };
        var cmd = new Command("make-checkpoint", "Write a random GPT-2, Llama, Qwen2 or Mistral checkpoint in the exact HuggingFace layout (for tests and benchmarks).")
        {
            arch, preset, output, force, seed, dtype, layers, embd, heads, inner, vocab, positions, shards, prefix, buffers, untied, tied, kvHeads, headDim, ropeScaling,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            if (r.GetValue(tied) && r.GetValue(untied)) throw new ArgumentException("give --tied or --untied, not both");
            string a = LlamaMaking.ResolveArch(r.GetValue(arch), r.GetValue(preset));
            var storage = CliCommon.ParseDType(r.GetValue(dtype)!, [DType.F32, DType.F16, DType.BF16, DType.F64])!.Value;
            if (r.GetValue(shards) < 1) throw new ArgumentException($"--shards: {r.GetValue(shards)} is less than 1");
            string dir = r.GetValue(output)!;
            OutputPaths.Directory("--out", dir, force: r.GetValue(force), notEmptyHint: "choose another directory, or --force to replace it");
            if (a != "gpt2")
                return LlamaMaking.Run(a, r.GetValue(preset), dir, r.GetValue(force), r.GetValue(seed), storage, r.GetValue(layers), r.GetValue(embd),
                    r.GetValue(heads), r.GetValue(inner), r.GetValue(vocab), r.GetValue(positions), r.GetValue(shards), r.GetValue(prefix), r.GetValue(buffers),
                    r.GetValue(tied) ? true : r.GetValue(untied) ? false : null, r.GetValue(kvHeads), r.GetValue(headDim), r.GetValue(ropeScaling));
            foreach (var (name, given) in new[] { ("--kv-heads", r.GetValue(kvHeads) is not null), ("--head-dim", r.GetValue(headDim) is not null), ("--rope-scaling", r.GetValue(ropeScaling) is not null) })
                if (given) throw new ArgumentException($"{name} applies to --arch llama, qwen2 or mistral, not gpt2");
            string p = r.GetValue(preset) ?? "tiny";
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
                Seed = r.GetValue(seed), DType = storage, Shards = r.GetValue(shards),
                Prefix = r.GetValue(prefix), MaskBuffers = r.GetValue(buffers), Untied = r.GetValue(untied), Force = r.GetValue(force),
            };
            long bytes = cfg.ParameterCount(!opts.Untied) * opts.DType.Size();
            if (bytes > 200_000_000)
            {
                CliCommon.Progress().Start(ctx =>
                {
                    var task = ctx.AddTask($"writing {p}", maxValue: 1.0);
                    CheckpointMaker.Make(cfg, dir, opts, new Progress<(long Done, long Total)>(x => task.Value = (double)x.Done / x.Total));
                    task.Value = 1.0;
                });
            }
            else CheckpointMaker.Make(cfg, dir, opts);
            Console.Error.WriteLine($"wrote {dir}: {cfg.NLayer} layers, d={cfg.NEmbd}, h={cfg.NHead}, F={cfg.NInner}, V={cfg.VocabSize}, {cfg.ParameterCount(!opts.Untied):N0} parameters, " +
                                    $"{CliCommon.DTypeName(opts.DType)}{(opts.Shards > 1 ? $", {opts.Shards} shards" : "")}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
