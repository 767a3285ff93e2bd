using System.Text.Json.Nodes;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Llama;

/// <summary>Options for <see cref="LlamaCheckpointMaker"/> (the head is tied as the config's tie_word_embeddings says).</summary>
public sealed record LlamaMakeOptions
{
    public long Seed { get; init; }
    public DType DType { get; init; } = DType.F32;
    /// <summary>1 = a single model.safetensors; more = model-0000k-of-0000n.safetensors plus index.</summary>
    public int Shards { get; init; } = 1;
    /// <summary>Store model.layers.l.self_attn.rotary_emb.inv_freq (F32 [hd/2]) as older HF checkpoints do.</summary>
    public bool InvFreqBuffers { get; init; }
    /// <summary>Tied models: also store lm_head.weight as a byte-equal copy of the embedding.</summary>
    public bool TiedHeadCopy { get; init; }
    /// <summary>Replace a non-empty output directory (whole, after the new checkpoint is complete).</summary>
    public bool Force { get; init; }
}

/// <summary>
/// Writes random Llama / Qwen2 / Mistral checkpoints in the exact HuggingFace layout, with a config.json that HF
/// transformers loads as that model_type. Weights are chosen so that every part of the function is exercised (HF's
/// own init, N(0, 0.02) everywhere with unit norms, leaves attention almost uniform and the MLP almost linear):
/// <list type="bullet">
/// <item>q_proj, k_proj ~ N(0, 2/d): attention scores then have std ≈ 2 (as for GPT-2's CheckpointMaker), so heads
/// attend to different positions and mixing them is not nearly a symmetry;</item>
/// <item>v_proj, gate_proj, up_proj ~ N(0, 1/d): pre-activations of order 1, where silu is far from linear;</item>
/// <item>o_proj ~ N(0, (0.02)²/(H·hd)), down_proj ~ N(0, (0.033)²/F): each block writes about the embedding's scale
/// (0.02) to the residual, so no layer is negligible against the others;</item>
/// <item>RMSNorm gains U(0.5, 1.5); biases, where the config has them, N(0, 0.1) (q/k/v, gate/up) and N(0, 0.01) (o, down);</item>
/// <item>embedding and untied head N(0, 0.02).</item>
/// </list>
/// Each tensor is drawn from its own generator seeded by (seed, name), in fixed row blocks of at most 2²² elements,
/// so the bytes depend only on the seed and the shapes (not on write order or sharding) and memory stays at one block
/// (the 1.2 B-parameter llama-3.2-1b preset writes in well under a GB of RAM). The directory is written by
/// <see cref="NewCheckpointDirectory"/>: assembled in a temporary beside the target and renamed into place, so a failure
/// or a signal leaves no partial checkpoint.
/// </summary>
public static class LlamaCheckpointMaker
{
    private const long BlockElements = 1L << 22;

    public static void Make(LlamaConfig config, string outDir, LlamaMakeOptions o, IProgress<(long Done, long Total)>? progress = null)
    {
        config.Validate("make-checkpoint");
        if (o.Shards < 1) throw new ArgumentException("shards must be at least 1");
        if (!o.DType.IsFloat()) throw new ArgumentException($"storage dtype {o.DType} is not a float type");
        var specs = new List<(TensorSpec Spec, string Source)>();
        foreach (var (name, shape) in LlamaKeys.Parameters(config)) specs.Add((new TensorSpec(name, o.DType, shape), name));
        if (!config.TieWordEmbeddings) specs.Add((new TensorSpec(LlamaKeys.LmHead, o.DType, [config.VocabSize, config.HiddenSize]), LlamaKeys.LmHead));
        else if (o.TiedHeadCopy) specs.Add((new TensorSpec(LlamaKeys.LmHead, o.DType, [config.VocabSize, config.HiddenSize]), LlamaKeys.Embed));
        if (o.InvFreqBuffers)
            for (int l = 0; l < config.NumHiddenLayers; l++)
            {
                string n = LlamaKeys.Layer(l, LlamaKeys.InvFreqSuffix);
                specs.Add((new TensorSpec(n, DType.F32, [config.HeadDim / 2]), n));
            }

        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["generator"] = "gaugetorch make-checkpoint", ["seed"] = o.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        NewCheckpointDirectory.Write(outDir, specs, o.Shards, o.Force, metadata, config.ToJsonText(TorchDTypeName(o.DType)),
            (w, spec, source) => Write(w, spec, source, config, o.Seed), progress);
    }

    /// <summary>HF's torch_dtype spelling of a storage dtype.</summary>
    public static string TorchDTypeName(DType d) => d switch
    {
        DType.F64 => "float64",
        DType.F32 => "float32",
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        _ => throw new ArgumentOutOfRangeException(nameof(d)),
    };

    /// <summary>Streams one tensor in row blocks: draw in the work dtype, convert, write at its offset.</summary>
    private static void Write(SafeTensorWriter w, TensorSpec spec, string source, LlamaConfig c, long seed)
    {
        long offset = w.Claim(spec.Name, spec.DType, spec.Shape);
        if (source.EndsWith(LlamaKeys.InvFreqSuffix, StringComparison.Ordinal))
        {
            using var scope = NewDisposeScope();
            var inv = new RopeSpec(c.Rope.Theta).InverseFrequencies(c.HeadDim).Select(x => (float)x).ToArray();   // HF's float32 buffer
            var t = tensor(inv, ScalarType.Float32).contiguous();
            w.WriteRange(offset, NativeTensorAccess.DataPointer(t), spec.ByteLength);
            return;
        }
        long rows = spec.Shape[0], cols = spec.Shape.Length > 1 ? spec.Shape[1] : 1;
        long blockRows = Math.Max(1, BlockElements / cols);
        var gen = new Generator((ulong)NewCheckpointDirectory.StableHash(seed, source));
        var work = spec.DType == DType.F64 ? ScalarType.Float64 : ScalarType.Float32;
        var (kind, a, b) = Distribution(c, source);
        long rowBytes = cols * spec.DType.Size();
        for (long r0 = 0; r0 < rows; r0 += blockRows)
        {
            using var scope = NewDisposeScope();
            long n = Math.Min(blockRows, rows - r0);
            long[] shape = spec.Shape.Length > 1 ? [n, cols] : [n];
            var t = kind == 'u' ? rand(shape, work, generator: gen) * (b - a) + a : normal(a, b, shape, work, generator: gen);
            var stored = t.to_type(spec.DType.ToScalarType()).contiguous();
            w.WriteRange(offset + r0 * rowBytes, NativeTensorAccess.DataPointer(stored), n * rowBytes);
        }
    }

    /// <summary>('n', mean, std) or ('u', low, high) of a tensor, by its name (see the class comment for why).</summary>
    private static (char Kind, double A, double B) Distribution(LlamaConfig c, string name)
    {
        double d = c.HiddenSize;
        string suffix = name.StartsWith("model.layers.", StringComparison.Ordinal) ? name[(name.IndexOf('.', "model.layers.".Length) + 1)..] : name;
        return suffix switch
        {
            LlamaKeys.Embed or LlamaKeys.LmHead => ('n', 0, 0.02),
            LlamaKeys.Norm or "input_layernorm.weight" or "post_attention_layernorm.weight" => ('u', 0.5, 1.5),
            "self_attn.q_proj.weight" or "self_attn.k_proj.weight" => ('n', 0, Math.Sqrt(2.0 / d)),
            "self_attn.v_proj.weight" or "mlp.gate_proj.weight" or "mlp.up_proj.weight" => ('n', 0, Math.Sqrt(1.0 / d)),
            "self_attn.o_proj.weight" => ('n', 0, 0.02 / Math.Sqrt((double)c.NumAttentionHeads * c.HeadDim)),
            "mlp.down_proj.weight" => ('n', 0, 0.033 / Math.Sqrt(c.IntermediateSize)),
            "self_attn.q_proj.bias" or "self_attn.k_proj.bias" or "self_attn.v_proj.bias" or "mlp.gate_proj.bias" or "mlp.up_proj.bias" => ('n', 0, 0.1),
            "self_attn.o_proj.bias" or "mlp.down_proj.bias" => ('n', 0, 0.01),
            _ => throw new ArgumentException($"no distribution for tensor '{name}'"),
        };
    }


}
