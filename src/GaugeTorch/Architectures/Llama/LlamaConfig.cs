using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GaugeTorch.Model;

namespace GaugeTorch.Architectures.Llama;

/// <summary>
/// The hyper-parameters of a HuggingFace Llama, Qwen2 or Mistral <c>config.json</c> (<c>LlamaForCausalLM</c>,
/// <c>Qwen2ForCausalLM</c>, <c>MistralForCausalLM</c>). The three share one layout (RMSNorm, rotary positions,
/// grouped-query attention, SwiGLU) and differ only in which projections carry biases and in their defaults. Each
/// property names its HF key. Reading is strict: a missing size is an error (never a silent default), and every
/// feature that would change the function in a way GaugeTorch does not compute fails loudly, naming the file.
/// <para>
/// Decisions (documented in README):
/// • Sliding-window attention (Mistral <c>sliding_window</c>; Qwen2 with <c>use_sliding_window</c>) equals plain causal
///   attention for sequences no longer than the window, so such configs load and <see cref="ContextLength"/> is capped
///   at the window: longer inputs are refused rather than computed differently from HF.
/// • <c>rope_scaling</c> types other than default, linear and llama3 (dynamic, yarn, longrope, …) are errors.
/// • <c>pretraining_tp</c> only splits HF's matmuls into slices (same function) and is ignored.
/// </para>
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>The model_type values this config reads.</summary>
    public static readonly IReadOnlyList<string> ModelTypes = ["llama", "qwen2", "mistral"];

    /// <summary><c>model_type</c>: llama, qwen2 or mistral.</summary>
    public string ModelType { get; init; } = "llama";
    /// <summary><c>hidden_size</c> (d). Required.</summary>
    public int HiddenSize { get; init; }
    /// <summary><c>intermediate_size</c> (F, the SwiGLU width). Required.</summary>
    public int IntermediateSize { get; init; }
    /// <summary><c>num_hidden_layers</c> (L). Required.</summary>
    public int NumHiddenLayers { get; init; }
    /// <summary><c>num_attention_heads</c> (H). Required.</summary>
    public int NumAttentionHeads { get; init; }
    /// <summary><c>num_key_value_heads</c> (G; absent or null: G = H, multi-head). G = 1 is multi-query.</summary>
    public int NumKeyValueHeads { get; init; }
    /// <summary><c>head_dim</c> (hd; absent or null: d/H). H·hd need not equal d.</summary>
    public int HeadDim { get; init; }
    /// <summary><c>vocab_size</c> (V). Required.</summary>
    public int VocabSize { get; init; }
    /// <summary><c>max_position_embeddings</c> (absent: HF's default for the model_type: 2048, 32768, 131072).</summary>
    public int MaxPositionEmbeddings { get; init; }
    /// <summary><c>rms_norm_eps</c>. Required: its HF default differs between families and it sets the numbers.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>The rotary frequencies: <c>rope_theta</c> (top level or inside <c>rope_parameters</c>, default 10000) and
    /// <c>rope_scaling</c> (or <c>rope_parameters</c>) with its <c>rope_type</c> (alias <c>type</c>).</summary>
    public RopeSpec Rope { get; init; } = new(10000);
    /// <summary><c>attention_bias</c>: Llama's q, k, v and o projections carry biases (Qwen2 and Mistral: not read).</summary>
    public bool AttentionBias { get; init; }
    /// <summary><c>mlp_bias</c>: Llama's gate, up and down projections carry biases (Qwen2 and Mistral: not read).</summary>
    public bool MlpBiasFlag { get; init; }
    /// <summary><c>tie_word_embeddings</c> (absent: false, as HF's three config classes default).</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>The sliding attention window that is in effect (Mistral <c>sliding_window</c>; Qwen2 <c>sliding_window</c>
    /// when <c>use_sliding_window</c> and some layer index ≥ <c>max_window_layers</c>), or null.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary><c>bos_token_id</c>, <c>eos_token_id</c> (written into configs GaugeTorch makes; not used by the math).</summary>
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }

    /// <summary>q, k, v biases: always for Qwen2, with <c>attention_bias</c> for Llama, never for Mistral.</summary>
    public bool QkvBias => ModelType == "qwen2" || (ModelType == "llama" && AttentionBias);
    /// <summary>o_proj bias: Llama with <c>attention_bias</c> only.</summary>
    public bool OutBias => ModelType == "llama" && AttentionBias;
    /// <summary>MLP biases: Llama with <c>mlp_bias</c> only.</summary>
    public bool MlpBias => ModelType == "llama" && MlpBiasFlag;

    /// <summary>The longest sequence computed exactly as HF does: max_position_embeddings, capped by an active sliding window.</summary>
    public int ContextLength => SlidingWindow is int w ? Math.Min(w, MaxPositionEmbeddings) : MaxPositionEmbeddings;

    /// <summary>The HF class name in <c>architectures</c>.</summary>
    public string ArchitectureClass => ModelType switch
    {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => throw new ArgumentOutOfRangeException(nameof(ModelType)),
    };

    /// <summary>HF's max_position_embeddings default per model_type.</summary>
    public static int DefaultMaxPositions(string modelType) => modelType switch
    {
        "qwen2" => 32768,
        "mistral" => 4096 * 32,
        _ => 2048,
    };

    /// <summary>Exact-shape presets (random weights, real shapes) and a tiny model for tests.</summary>
    public static readonly IReadOnlyDictionary<string, LlamaConfig> Presets = new Dictionary<string, LlamaConfig>(StringComparer.OrdinalIgnoreCase)
    {
        // Qwen/Qwen2-0.5B: 494,032,768 parameters (GAUGE.md §6.2).
        ["qwen2-0.5b"] = new()
        {
            ModelType = "qwen2", HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24, NumAttentionHeads = 14,
            NumKeyValueHeads = 2, HeadDim = 64, VocabSize = 151936, MaxPositionEmbeddings = 131072, RmsNormEps = 1e-6,
            Rope = new RopeSpec(1_000_000), TieWordEmbeddings = true, BosTokenId = 151643, EosTokenId = 151643,
        },
        // meta-llama/Llama-3.2-1B: 1,235,814,400 parameters (GAUGE.md §6.2).
        ["llama-3.2-1b"] = new()
        {
            ModelType = "llama", HiddenSize = 2048, IntermediateSize = 8192, NumHiddenLayers = 16, NumAttentionHeads = 32,
            NumKeyValueHeads = 8, HeadDim = 64, VocabSize = 128256, MaxPositionEmbeddings = 131072, RmsNormEps = 1e-5,
            Rope = Llama3Scaling(500_000), TieWordEmbeddings = true, BosTokenId = 128000, EosTokenId = 128001,
        },
        // Tests: GQA (G = 2), L = 2, d = 64, hd = 16, untied (HF's default).
        ["tiny-llama"] = new()
        {
            ModelType = "llama", HiddenSize = 64, IntermediateSize = 160, NumHiddenLayers = 2, NumAttentionHeads = 4,
            NumKeyValueHeads = 2, HeadDim = 16, VocabSize = 128, MaxPositionEmbeddings = 256, RmsNormEps = 1e-6,
            Rope = new RopeSpec(10000), TieWordEmbeddings = false, BosTokenId = 1, EosTokenId = 2,
        },
    };

    /// <summary>Llama 3.2's rope_scaling: llama3, factor 32, low 1, high 4, original 8192.</summary>
    public static RopeSpec Llama3Scaling(double theta) => new(theta, "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192);

    /// <summary>Number of parameters (a tied head counted once; an untied head adds V·d).</summary>
    public long ParameterCount(bool tied) =>
        LlamaKeys.Parameters(this).Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b)) + (tied ? 0 : (long)VocabSize * HiddenSize);

    /// <summary>Checks sizes and head counts; <paramref name="source"/> names the config in errors.</summary>
    public void Validate(string source)
    {
        void Fail(string m) => throw new ModelFormatException($"{source}: {m}");
        if (!ModelTypes.Contains(ModelType)) Fail($"model_type '{ModelType}' is not llama, qwen2 or mistral");
        if (HiddenSize <= 0) Fail($"hidden_size must be positive (got {HiddenSize})");
        if (IntermediateSize <= 0) Fail($"intermediate_size must be positive (got {IntermediateSize})");
        if (NumHiddenLayers <= 0) Fail($"num_hidden_layers must be positive (got {NumHiddenLayers})");
        if (NumAttentionHeads <= 0) Fail($"num_attention_heads must be positive (got {NumAttentionHeads})");
        if (NumKeyValueHeads <= 0) Fail($"num_key_value_heads must be positive (got {NumKeyValueHeads})");
        if (NumKeyValueHeads > NumAttentionHeads || NumAttentionHeads % NumKeyValueHeads != 0)
            Fail($"num_attention_heads ({NumAttentionHeads}) is not a multiple of num_key_value_heads ({NumKeyValueHeads})");
        if (HeadDim <= 0) Fail($"head_dim must be positive (got {HeadDim})");
        if (HeadDim % 2 != 0) Fail($"head_dim ({HeadDim}) must be even: rotary embeddings rotate pairs (j, j + head_dim/2)");
        if (VocabSize <= 0) Fail($"vocab_size must be positive (got {VocabSize})");
        if (MaxPositionEmbeddings <= 0) Fail($"max_position_embeddings must be positive (got {MaxPositionEmbeddings})");
        if (!(RmsNormEps > 0)) Fail($"rms_norm_eps must be positive (got {RmsNormEps})");
        if (!(Rope.Theta > 0)) Fail($"rope_theta must be positive (got {Rope.Theta})");
        if (SlidingWindow is <= 0) Fail($"sliding_window must be positive (got {SlidingWindow})");
        switch (Rope.Scaling)
        {
            case "default":
                break;
            case "linear":
                if (!(Rope.Factor > 0)) Fail($"rope_scaling factor must be positive (got {Rope.Factor})");
                break;
            case "llama3":
                if (!(Rope.Factor > 0)) Fail($"rope_scaling factor must be positive (got {Rope.Factor})");
                if (!(Rope.LowFreqFactor > 0) || !(Rope.HighFreqFactor > Rope.LowFreqFactor))
                    Fail($"rope_scaling needs 0 < low_freq_factor < high_freq_factor (got {Rope.LowFreqFactor}, {Rope.HighFreqFactor})");
                if (Rope.OriginalMaxPositions <= 0) Fail($"rope_scaling original_max_position_embeddings must be positive (got {Rope.OriginalMaxPositions})");
                break;
            default:
                Fail($"rope_scaling type '{Rope.Scaling}' is not supported (supported: {string.Join(", ", RopeSpec.SupportedScalings)})");
                break;
        }
    }

    /// <summary>Reads and validates a config.json object; <paramref name="source"/> (the file) is named in every error.</summary>
    public static LlamaConfig FromJson(JsonObject o, string source)
    {
        ModelFormatException Err(string m) => new($"{source}: {m}");
        string type = o["model_type"] is JsonValue tv && tv.TryGetValue(out string? ts) ? ts : throw Err("model_type missing");
        if (!ModelTypes.Contains(type)) throw Err($"model_type '{type}' is not llama, qwen2 or mistral");

        bool Present(JsonObject obj, string k) => obj[k] is not null;   // absent and JSON null both mean "not given"
        int Int(JsonObject obj, string k, string where)
        {
            if (obj[k] is JsonValue v && v.GetValueKind() == JsonValueKind.Number
                && int.TryParse(v.ToJsonString(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int i)) return i;
            throw Err($"{where} is not an integer ({obj[k]?.ToJsonString()})");
        }
        double Num(JsonObject obj, string k, string where)
        {
            if (obj[k] is JsonValue v && v.GetValueKind() == JsonValueKind.Number
                && double.TryParse(v.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture, out double x)) return x;
            throw Err($"{where} is not a number ({obj[k]?.ToJsonString()})");
        }
        bool Bool(string k, bool dflt)
        {
            if (!Present(o, k)) return dflt;
            if (o[k] is JsonValue v && v.TryGetValue(out bool b)) return b;
            throw Err($"{k} is not true or false ({o[k]?.ToJsonString()})");
        }
        int Required(string k) => Present(o, k) ? Int(o, k, k) : throw Err($"{k} missing");
        int? Optional(string k) => Present(o, k) ? Int(o, k, k) : null;

        int d = Required("hidden_size");
        int f = Required("intermediate_size");
        int layers = Required("num_hidden_layers");
        int heads = Required("num_attention_heads");
        int vocab = Required("vocab_size");
        if (!Present(o, "rms_norm_eps")) throw Err("rms_norm_eps missing");
        double eps = Num(o, "rms_norm_eps", "rms_norm_eps");
        int kv = Optional("num_key_value_heads") ?? heads;
        int? hd = Optional("head_dim");
        if (hd is null && heads > 0 && d % heads != 0)
            throw Err($"hidden_size ({d}) is not divisible by num_attention_heads ({heads}) and head_dim is not given");
        int headDim = hd ?? (heads > 0 ? d / heads : 0);

        string act = o["hidden_act"] is JsonValue av && av.TryGetValue(out string? a) ? a : "silu";
        if (act != "silu") throw Err($"hidden_act '{act}' is not supported (only silu: SwiGLU)");
        if (Present(o, "partial_rotary_factor") && Num(o, "partial_rotary_factor", "partial_rotary_factor") != 1.0)
            throw Err("partial_rotary_factor other than 1 is not supported");

        bool attnBias = Bool("attention_bias", false), mlpBias = Bool("mlp_bias", false);
        if (type != "llama")
        {
            // HF's Qwen2 and Mistral classes hard-code their biases and ignore these keys; a true value would
            // silently drop stored biases there, so it is an error here.
            if (attnBias) throw Err($"attention_bias=true is not read by HF's {type} (its attention biases are fixed); remove it");
            if (mlpBias) throw Err($"mlp_bias=true is not read by HF's {type} (its MLP has no biases); remove it");
        }

        var rope = ReadRope(o, source, Err, Num, Int);

        int? window = null;
        if (type == "mistral" && Present(o, "sliding_window")) window = Int(o, "sliding_window", "sliding_window");
        if (type == "qwen2" && Bool("use_sliding_window", false) && Present(o, "sliding_window"))
        {
            int maxWindowLayers = Optional("max_window_layers") ?? 28;
            if (maxWindowLayers < layers) window = Int(o, "sliding_window", "sliding_window");
        }

        var cfg = new LlamaConfig
        {
            ModelType = type, HiddenSize = d, IntermediateSize = f, NumHiddenLayers = layers, NumAttentionHeads = heads,
            NumKeyValueHeads = kv, HeadDim = headDim, VocabSize = vocab,
            MaxPositionEmbeddings = Optional("max_position_embeddings") ?? DefaultMaxPositions(type),
            RmsNormEps = eps, Rope = rope, AttentionBias = attnBias, MlpBiasFlag = mlpBias,
            TieWordEmbeddings = Bool("tie_word_embeddings", false), SlidingWindow = window,
            BosTokenId = o["bos_token_id"] is JsonValue bv && bv.GetValueKind() == JsonValueKind.Number ? Int(o, "bos_token_id", "bos_token_id") : null,
            EosTokenId = o["eos_token_id"] is JsonValue ev && ev.GetValueKind() == JsonValueKind.Number ? Int(o, "eos_token_id", "eos_token_id") : null,
        };
        cfg.Validate(source);
        return cfg;
    }

    /// <summary>
    /// rope_theta and rope_scaling as transformers 4.x writes them (top-level <c>rope_theta</c>, <c>rope_scaling</c>
    /// with <c>rope_type</c> or the older <c>type</c>) or as 5.x does (<c>rope_parameters</c> holding both).
    /// </summary>
    private static RopeSpec ReadRope(JsonObject o, string source, Func<string, ModelFormatException> err,
        Func<JsonObject, string, string, double> num, Func<JsonObject, string, string, int> integer)
    {
        var parameters = o["rope_parameters"];
        if (parameters is not null and not JsonObject) throw err("rope_parameters is not a JSON object");
        var rp = parameters as JsonObject;
        if (rp is not null && rp.Count > 0 && rp.All(kv => kv.Value is JsonObject))
            throw err("rope_parameters per layer type is not supported (one set of rotary parameters expected)");
        var scalingNode = o["rope_scaling"];
        if (scalingNode is not null and not JsonObject) throw err("rope_scaling is not a JSON object or null");

        double? top = o["rope_theta"] is not null ? num(o, "rope_theta", "rope_theta") : null;
        double? inner = rp?["rope_theta"] is not null ? num(rp, "rope_theta", "rope_parameters.rope_theta") : null;
        if (top is double a && inner is double b && a != b)
            throw err($"rope_theta ({a.ToString("R", CultureInfo.InvariantCulture)}) and rope_parameters.rope_theta ({b.ToString("R", CultureInfo.InvariantCulture)}) disagree");
        double theta = inner ?? top ?? 10000.0;

        // rope_scaling wins when both are given (4.x files converted by 5.x keep both, with equal contents).
        var s = scalingNode as JsonObject ?? rp;
        string where = scalingNode is JsonObject ? "rope_scaling" : "rope_parameters";
        if (s is null) return new RopeSpec(theta);
        string? type = s["rope_type"] is JsonValue rt && rt.TryGetValue(out string? r1) ? r1
                     : s["type"] is JsonValue tt && tt.TryGetValue(out string? r2) ? r2 : null;
        if (type is null)
        {
            if (ReferenceEquals(s, rp)) type = "default";
            else throw err($"{where} has no rope_type (or type)");
        }
        double Get(string k) => s[k] is not null ? num(s, k, $"{where}.{k}") : throw err($"{where}.{k} missing (needed by rope_type '{type}')");
        return type switch
        {
            "default" => new RopeSpec(theta),
            "linear" => new RopeSpec(theta, "linear", Factor: Get("factor")),
            "llama3" => new RopeSpec(theta, "llama3", Factor: Get("factor"), LowFreqFactor: Get("low_freq_factor"),
                HighFreqFactor: Get("high_freq_factor"),
                OriginalMaxPositions: s["original_max_position_embeddings"] is not null
                    ? integer(s, "original_max_position_embeddings", $"{where}.original_max_position_embeddings")
                    : throw err($"{where}.original_max_position_embeddings missing (needed by rope_type 'llama3')")),
            _ => throw err($"rope_scaling type '{type}' is not supported (supported: {string.Join(", ", RopeSpec.SupportedScalings)})"),
        };
    }

    /// <summary>
    /// A config.json that HF transformers reads as this model_type (the keys its config class defines, with the
    /// values this record holds). <paramref name="torchDType"/> is the storage dtype ("float32", "bfloat16", …).
    /// </summary>
    public JsonObject ToJson(string? torchDType = null)
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(ArchitectureClass),
            ["attention_dropout"] = 0.0,
        };
        if (ModelType == "llama") o["attention_bias"] = AttentionBias;
        if (BosTokenId is int bos) o["bos_token_id"] = bos;
        if (EosTokenId is int eos) o["eos_token_id"] = eos;
        // Llama and Mistral read head_dim; Qwen2 reads it where it is given (else d/H), so it is written only when it differs.
        if (ModelType != "qwen2" || HeadDim * NumAttentionHeads != HiddenSize) o["head_dim"] = HeadDim;
        o["hidden_act"] = "silu";
        o["hidden_size"] = HiddenSize;
        o["initializer_range"] = 0.02;
        o["intermediate_size"] = IntermediateSize;
        o["max_position_embeddings"] = MaxPositionEmbeddings;
        if (ModelType == "qwen2") o["max_window_layers"] = SlidingWindow is null ? NumHiddenLayers : 0;   // layers ≥ this one slide
        if (ModelType == "llama") o["mlp_bias"] = MlpBiasFlag;
        o["model_type"] = ModelType;
        o["num_attention_heads"] = NumAttentionHeads;
        o["num_hidden_layers"] = NumHiddenLayers;
        o["num_key_value_heads"] = NumKeyValueHeads;
        if (ModelType == "llama") o["pretraining_tp"] = 1;
        o["rms_norm_eps"] = RmsNormEps;
        o["rope_scaling"] = Rope.Scaling switch
        {
            "default" => null,
            "linear" => new JsonObject { ["factor"] = Rope.Factor, ["rope_type"] = "linear" },
            _ => new JsonObject
            {
                ["factor"] = Rope.Factor, ["high_freq_factor"] = Rope.HighFreqFactor, ["low_freq_factor"] = Rope.LowFreqFactor,
                ["original_max_position_embeddings"] = Rope.OriginalMaxPositions, ["rope_type"] = Rope.Scaling,
            },
        };
        o["rope_theta"] = Rope.Theta;
        if (ModelType == "mistral") o["sliding_window"] = SlidingWindow;
        if (ModelType == "qwen2") o["sliding_window"] = SlidingWindow ?? MaxPositionEmbeddings;
        o["tie_word_embeddings"] = TieWordEmbeddings;
        if (torchDType is not null) o["torch_dtype"] = torchDType;
        o["use_cache"] = true;
        if (ModelType == "qwen2") o["use_sliding_window"] = SlidingWindow is not null;
        o["vocab_size"] = VocabSize;
        return o;
    }

    public string ToJsonText(string? torchDType = null) => ToJson(torchDType).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}
