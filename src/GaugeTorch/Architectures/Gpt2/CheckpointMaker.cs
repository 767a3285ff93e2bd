using System.Text.Json.Nodes;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>Options for <see cref="CheckpointMaker"/>.</summary>
public sealed record MakeCheckpointOptions
{
    public long Seed { get; init; } = 0;
    public DType DType { get; init; } = DType.F32;
    /// <summary>1 = a single model.safetensors; more = model-0000k-of-0000n.safetensors plus index.</summary>
    public int Shards { get; init; } = 1;
    /// <summary>Store keys as transformer.h.0... (as older HF exports do).</summary>
    public bool Prefix { get; init; }
    /// <summary>Store the causal-mask buffers attn.bias / attn.masked_bias.</summary>
    public bool MaskBuffers { get; init; }
    /// <summary>Store an lm_head.weight different from wte (an untied head).</summary>
    public bool Untied { get; init; }
    /// <summary>Replace a non-empty output directory (otherwise it is refused).</summary>
    public bool Force { get; init; }
}

/// <summary>
/// Writes random GPT-2 checkpoints in the exact HuggingFace layout. Weights follow GPT-2's initialization
/// (N(0, 0.02), residual projections scaled by 1/√(2L); query/key blocks N(0, 2/d) so attention is not uniform) with non-zero biases and non-unit LayerNorm
/// parameters, so every gauge family acts non-trivially. Each tensor is drawn from its own generator seeded
/// by (seed, name), so output is deterministic and independent of write order; tensors are streamed to disk.
/// The directory is assembled in a registered temporary beside the target (<see cref="TempFiles"/>) and renamed into
/// place, so an error or a signal leaves nothing, and a non-empty target is refused unless
/// <see cref="MakeCheckpointOptions.Force"/> replaces it whole (never a mix of old and new files, such as a stale index
/// beside a new single file).
/// </summary>
public static class CheckpointMaker
{
    public static void Make(Gpt2Config config, string outDir, MakeCheckpointOptions o, IProgress<(long Done, long Total)>? progress = null)
    {
        config.Validate("make-checkpoint");
        if (o.Shards < 1) throw new ArgumentException("--shards must be at least 1");
        config = config with { TieWordEmbeddings = !o.Untied };
        string prefix = o.Prefix ? Gpt2Keys.Prefix : "";
        var specs = new List<(TensorSpec Spec, string Canonical)>();
        foreach (var (name, shape) in Gpt2Keys.Parameters(config)) specs.Add((new TensorSpec(prefix + name, o.DType, shape), name));
        if (o.Untied) specs.Add((new TensorSpec(Gpt2Keys.LmHead, o.DType, [config.VocabSize, config.NEmbd]), Gpt2Keys.LmHead));
        if (o.MaskBuffers)
            for (int l = 0; l < config.NLayer; l++)
                foreach (var b in Gpt2Keys.BufferSuffixes)
                    specs.Add((new TensorSpec(prefix + Gpt2Keys.Layer(l, b), DType.F32, Gpt2Keys.BufferShape(config, b)), Gpt2Keys.Layer(l, b)));

        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["generator"] = "gaugetorch make-checkpoint", ["seed"] = o.Seed.ToString() };
        NewCheckpointDirectory.Write(outDir, specs, o.Shards, o.Force, metadata, config.ToJsonText(), (w, spec, source) =>
        {
            using var scope = NewDisposeScope();
            w.Write(spec.Name, Generate(config, source, o.Seed, o.DType));
        }, progress);
    }

    /// <summary>Draws one tensor. Deterministic in (seed, name).</summary>
    public static Tensor Generate(Gpt2Config c, string name, long seed, DType dtype)
    {
        var gen = new Generator((ulong)NewCheckpointDirectory.StableHash(seed, name));
        var work = dtype == DType.F64 ? ScalarType.Float64 : ScalarType.Float32;
        string suffix = name.StartsWith("h.", StringComparison.Ordinal) ? name[(name.IndexOf('.', 2) + 1)..] : name;
        long[] shape = name switch
        {
            Gpt2Keys.Wte or Gpt2Keys.LmHead => [c.VocabSize, c.NEmbd],
            Gpt2Keys.Wpe => [c.NPositions, c.NEmbd],
            Gpt2Keys.LnFWeight or Gpt2Keys.LnFBias => [c.NEmbd],
            _ when suffix == "attn.bias" => Gpt2Keys.BufferShape(c, suffix),
            _ when suffix == "attn.masked_bias" => [],
            _ => Gpt2Keys.LayerShape(c, suffix),
        };
        double residualScale = 0.02 / Math.Sqrt(2.0 * c.NLayer);
        Tensor t = suffix switch
        {
            "attn.bias" => ones(shape, ScalarType.Float32).tril(),
            "attn.masked_bias" => tensor(-1e4f),
            Gpt2Keys.Wpe => normal(0, 0.01, shape, work, generator: gen),
            "ln_1.weight" or "ln_2.weight" or Gpt2Keys.LnFWeight => rand(shape, work, generator: gen) + 0.5,   // U(0.5, 1.5)
            "ln_1.bias" or "ln_2.bias" or Gpt2Keys.LnFBias => normal(0, 0.05, shape, work, generator: gen),
            "attn.c_proj.weight" or "mlp.c_proj.weight" => normal(0, residualScale, shape, work, generator: gen),
            "attn.c_attn.bias" or "attn.c_proj.bias" or "mlp.c_fc.bias" or "mlp.c_proj.bias" => normal(0, 0.02, shape, work, generator: gen),
            _ => normal(0, 0.02, shape, work, generator: gen),
        };
        if (suffix == "attn.c_attn.weight")
        {
            // Query and key blocks get std √(2/d) so that attention scores have std ≈ 2 and heads attend to
            // different positions, as in trained GPT-2. With 0.02 every head attends almost uniformly, and then
            // mixing value blocks across heads (an invalid transformation) is nearly a symmetry.
            double qk = Math.Sqrt(2.0 / c.NEmbd) / 0.02;
            t.narrow(1, 0, 2L * c.NEmbd).mul_(qk);
        }
        if (suffix is "attn.bias" or "attn.masked_bias") return t;
        return t.to_type(dtype.ToScalarType());
    }

}
