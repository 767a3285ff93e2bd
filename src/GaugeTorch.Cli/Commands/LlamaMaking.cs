using GaugeTorch.Architectures.Llama;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Cli.Commands;

/// <summary>make-checkpoint for --arch llama, qwen2 and mistral: preset, overrides, then <see cref="LlamaCheckpointMaker"/>.</summary>
public static class LlamaMaking
{
    private static readonly string[] Archs = ["gpt2", "llama", "qwen2", "mistral"];

    /// <summary>The architecture from --arch and --preset (a preset of fixed architecture implies it; contradictions are errors).</summary>
    public static string ResolveArch(string? arch, string? preset)
    {
        if (arch is not null && !Archs.Contains(arch)) throw new ArgumentException($"--arch: '{arch}' is not gpt2, llama, qwen2 or mistral");
        if (preset is null) return arch ?? "gpt2";
        string? implied;
        if (Gpt2Config.Presets.ContainsKey(preset)) implied = "gpt2";
        else if (LlamaConfig.Presets.TryGetValue(preset, out var lc)) implied = preset.Equals("tiny-llama", StringComparison.OrdinalIgnoreCase) ? null : lc.ModelType;
        else
            throw new ArgumentException($"--preset: unknown preset '{preset}' (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny; qwen2-0.5b, llama-3.2-1b, tiny-llama)");
        if (implied is null)
        {
            if (arch == "gpt2") throw new ArgumentException("--preset tiny-llama needs --arch llama, qwen2 or mistral");
            return arch ?? "llama";
        }
        if (arch is not null && arch != implied) throw new ArgumentException($"--preset {preset} is a {implied} model, not --arch {arch}");
        return implied;
    }

    public static int Run(string arch, string? preset, string dir, bool force, long seed, DType dtype, int? layers, int? embd, int? heads, int? inner,
        int? vocab, int? positions, int shards, bool prefix, bool buffers, bool? tied, int? kvHeads, int? headDim, string? ropeScaling)
    {
        if (prefix) throw new ArgumentException("--prefix applies to --arch gpt2 only (LLaMA-family keys always start with model.)");
        var cfg = LlamaConfig.Presets[preset ?? "tiny-llama"] with { ModelType = arch };
        int d = embd ?? cfg.HiddenSize, h = heads ?? cfg.NumAttentionHeads;
        int hd = headDim ?? (embd is not null || heads is not null ? (h > 0 && d % h == 0 ? d / h : throw new ArgumentException($"--embd {d} is not divisible by --heads {h}; give --head-dim")) : cfg.HeadDim);
        var rope = ropeScaling switch
        {
            null => cfg.Rope,
            "default" or "none" => new RopeSpec(cfg.Rope.Theta),
            "linear" => new RopeSpec(cfg.Rope.Theta, "linear", Factor: 2),
            "llama3" => LlamaConfig.Llama3Scaling(cfg.Rope.Theta),
            _ => throw new ArgumentException($"--rope-scaling: '{ropeScaling}' is not default, linear or llama3"),
        };
        cfg = cfg with
        {
            NumHiddenLayers = layers ?? cfg.NumHiddenLayers,
            HiddenSize = d,
            NumAttentionHeads = h,
            NumKeyValueHeads = kvHeads ?? Math.Min(cfg.NumKeyValueHeads, h),
            HeadDim = hd,
            IntermediateSize = inner ?? cfg.IntermediateSize,
            VocabSize = vocab ?? cfg.VocabSize,
            MaxPositionEmbeddings = positions ?? cfg.MaxPositionEmbeddings,
            Rope = rope,
            TieWordEmbeddings = tied ?? cfg.TieWordEmbeddings,
        };
        var opts = new LlamaMakeOptions { Seed = seed, DType = dtype, Shards = shards, InvFreqBuffers = buffers, Force = force };
        long bytes = cfg.ParameterCount(cfg.TieWordEmbeddings) * opts.DType.Size();
        if (bytes > 200_000_000)
        {
            CliCommon.Progress().Start(ctx =>
            {
                var task = ctx.AddTask($"writing {preset ?? arch}", maxValue: 1.0);
                LlamaCheckpointMaker.Make(cfg, dir, opts, new Progress<(long Done, long Total)>(x => task.Value = (double)x.Done / x.Total));
                task.Value = 1.0;
            });
        }
        else LlamaCheckpointMaker.Make(cfg, dir, opts);
        Console.Error.WriteLine($"wrote {dir}: {cfg.ModelType} {cfg.NumHiddenLayers} layers, d={cfg.HiddenSize}, H={cfg.NumAttentionHeads}, G={cfg.NumKeyValueHeads}, " +
                                $"hd={cfg.HeadDim}, F={cfg.IntermediateSize}, V={cfg.VocabSize}, {(cfg.TieWordEmbeddings ? "tied" : "untied")}, " +
                                $"{cfg.ParameterCount(cfg.TieWordEmbeddings):N0} parameters, " +
                                $"{CliCommon.DTypeName(opts.DType)}{(opts.Shards > 1 ? $", {opts.Shards} shards" : "")}");
        return ExitCodes.Ok;
    }
}
