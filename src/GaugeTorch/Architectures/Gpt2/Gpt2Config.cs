using System.Text.Json;
using System.Text.Json.Nodes;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>The GPT-2 hyper-parameters GaugeTorch reads from a HuggingFace <c>config.json</c>.</summary>
public sealed record Gpt2Config
{
    public int VocabSize { get; init; } = 50257;
    public int NPositions { get; init; } = 1024;
    public int NEmbd { get; init; } = 768;
    public int NLayer { get; init; } = 12;
    public int NHead { get; init; } = 12;
    /// <summary>MLP width F (config's <c>n_inner</c>, 4·d when null).</summary>
    public int NInner { get; init; } = 3072;
    public double LayerNormEpsilon { get; init; } = 1e-5;
    public bool TieWordEmbeddings { get; init; } = true;

    public int HeadDim => NEmbd / NHead;

    public static readonly IReadOnlyDictionary<string, Gpt2Config> Presets = new Dictionary<string, Gpt2Config>(StringComparer.OrdinalIgnoreCase)
    {
        ["gpt2"] = new() { NLayer = 12, NEmbd = 768, NHead = 12, NInner = 3072 },
        ["gpt2-medium"] = new() { NLayer = 24, NEmbd = 1024, NHead = 16, NInner = 4096 },
        ["gpt2-large"] = new() { NLayer = 36, NEmbd = 1280, NHead = 20, NInner = 5120 },
        ["gpt2-xl"] = new() { NLayer = 48, NEmbd = 1600, NHead = 25, NInner = 6400 },
        ["tiny"] = new() { NLayer = 2, NEmbd = 64, NHead = 4, NInner = 256, NPositions = 128 },
    };

    /// <summary>Number of parameters (tied head counted once; an untied head adds V·d).</summary>
    public long ParameterCount(bool tied = true)
    {
        long d = NEmbd, f = NInner;
        long layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d);
        return (long)VocabSize * d + (long)NPositions * d + NLayer * layer + 2 * d + (tied ? 0 : (long)VocabSize * d);
    }

    public void Validate(string source)
    {
        void Fail(string m) => throw new Gpt2FormatException($"{source}: {m}");
        if (VocabSize <= 0) Fail($"vocab_size must be positive (got {VocabSize})");
        if (NPositions <= 0) Fail($"n_positions must be positive (got {NPositions})");
        if (NLayer <= 0) Fail($"n_layer must be positive (got {NLayer})");
        if (NHead <= 0 || NEmbd <= 0) Fail("n_embd and n_head must be positive");
        if (NEmbd % NHead != 0) Fail($"n_embd ({NEmbd}) is not divisible by n_head ({NHead})");
        if (NInner <= 0) Fail($"n_inner must be positive (got {NInner})");
        if (!(LayerNormEpsilon > 0)) Fail($"layer_norm_epsilon must be positive (got {LayerNormEpsilon})");
    }

    public static Gpt2Config Load(string configPath)
    {
        if (!File.Exists(configPath))
            throw new Gpt2FormatException($"{System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(configPath))}: no {System.IO.Path.GetFileName(configPath)} " +
                                          "(a model directory needs the HuggingFace config beside its safetensors weights)");
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(configPath));
        }
        catch (JsonException e)
        {
            throw new Gpt2FormatException($"{configPath}: not valid JSON ({e.Message})");
        }
        if (root is not JsonObject o) throw new Gpt2FormatException($"{configPath}: not a JSON object");
        return FromJson(o, configPath);
    }

    public static Gpt2Config FromJson(JsonObject o, string source)
    {
        string? Str(string k) => o[k] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
        bool? Bool(string k) => o[k] is JsonValue v && v.TryGetValue(out bool b) ? b : null;
        int Int(string k, int dflt)
        {
            if (o[k] is null) return dflt;
            if (o[k] is JsonValue v && v.TryGetValue(out int i)) return i;
            throw new Gpt2FormatException($"{source}: '{k}' is not an integer");
        }
        string modelType = Str("model_type") ?? "gpt2";
        if (modelType != "gpt2") throw new Gpt2FormatException($"{source}: model_type '{modelType}' is not supported (only gpt2)");
        string act = Str("activation_function") ?? "gelu_new";
        if (act != "gelu_new") throw new Gpt2FormatException($"{source}: activation_function '{act}' is not supported (only gelu_new)");
        if (Bool("scale_attn_by_inverse_layer_idx") == true) throw new Gpt2FormatException($"{source}: scale_attn_by_inverse_layer_idx=true is not supported");
        if (Bool("scale_attn_weights") == false) throw new Gpt2FormatException($"{source}: scale_attn_weights=false is not supported");
        if (Bool("add_cross_attention") == true) throw new Gpt2FormatException($"{source}: add_cross_attention=true is not supported");
        // The shapes come from the config alone: a missing one would silently take GPT-2-124M's value and fail later
        // with a page of shape errors (n_positions may be given as n_ctx, as older exports do).
        var missing = new[] { "vocab_size", "n_embd", "n_layer", "n_head" }.Where(k => o[k] is null).ToList();
        if (o["n_positions"] is null && o["n_ctx"] is null) missing.Add("n_positions");
        if (missing.Count > 0)
            throw new Gpt2FormatException($"{source}: {string.Join(", ", missing)} missing (GaugeTorch does not guess a GPT-2 size; HuggingFace GPT-2 configs list all of them)");
        int d = Int("n_embd", 768);
        int? inner = o["n_inner"] is null ? null : Int("n_inner", 4 * d);
        double eps = 1e-5;
        if (o["layer_norm_epsilon"] is JsonValue ev && !ev.TryGetValue(out eps))
            throw new Gpt2FormatException($"{source}: 'layer_norm_epsilon' is not a number");
        var cfg = new Gpt2Config
        {
            VocabSize = Int("vocab_size", 50257),
            NPositions = o["n_positions"] is null ? Int("n_ctx", 1024) : Int("n_positions", 1024),
            NEmbd = d,
            NLayer = Int("n_layer", 12),
            NHead = Int("n_head", 12),
            NInner = inner ?? 4 * d,
            LayerNormEpsilon = eps,
            TieWordEmbeddings = Bool("tie_word_embeddings") ?? true,
        };
        cfg.Validate(source);
        return cfg;
    }

    /// <summary>A HuggingFace-compatible config.json for this configuration.</summary>
    public JsonObject ToJson() => new()
    {
        ["activation_function"] = "gelu_new",
        ["architectures"] = new JsonArray("GPT2LMHeadModel"),
        ["attn_pdrop"] = 0.1,
        ["bos_token_id"] = 50256,
        ["embd_pdrop"] = 0.1,
        ["eos_token_id"] = 50256,
        ["initializer_range"] = 0.02,
        ["layer_norm_epsilon"] = LayerNormEpsilon,
        ["model_type"] = "gpt2",
        ["n_ctx"] = NPositions,
        ["n_embd"] = NEmbd,
        ["n_head"] = NHead,
        ["n_inner"] = NInner == 4 * NEmbd ? null : NInner,
        ["n_layer"] = NLayer,
        ["n_positions"] = NPositions,
        ["resid_pdrop"] = 0.1,
        ["scale_attn_weights"] = true,
        ["tie_word_embeddings"] = TieWordEmbeddings,
        ["vocab_size"] = VocabSize,
    };

    public string ToJsonText() => ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>A GPT-2 checkpoint or configuration that GaugeTorch cannot use; the message names the file and tensors.</summary>
public sealed class Gpt2FormatException(string message) : GaugeTorch.Model.ModelFormatException(message);
