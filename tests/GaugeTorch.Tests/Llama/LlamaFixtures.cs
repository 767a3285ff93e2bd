using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Tests.Llama;

/// <summary>
/// Small random Llama / Qwen2 / Mistral checkpoints made by <see cref="LlamaCheckpointMaker"/>, cached per process.
/// Each variant exercises one feature of the family (see <see cref="Variant"/>).
/// </summary>
internal static class LlamaFixtures
{
    private static readonly string Root = Path.Combine(Path.GetTempPath(), "gaugetorch-tests-" + Environment.ProcessId, "llama");
    private static readonly object Gate = new();

    /// <summary>L=2, d=32, H=4, G=2, hd=8, F=48, V=61, P=64, untied, θ=10000.</summary>
    public static LlamaConfig Tiny => new()
    {
        ModelType = "llama", HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        HeadDim = 8, VocabSize = 61, MaxPositionEmbeddings = 64, RmsNormEps = 1e-6, Rope = new RopeSpec(10000), TieWordEmbeddings = false,
    };

    public static readonly string[] Names =
    [
        "mha", "gqa", "mqa", "head-dim", "qwen2", "llama-bias", "tied", "tied-copy", "untied", "llama3", "linear",
        "rope-parameters", "sharded", "bf16", "f16", "f64", "inv-freq", "mistral-window",
    ];

    /// <summary>(config, options, whether to rewrite config.json in transformers-5 style with rope_parameters).</summary>
    public static (LlamaConfig Config, LlamaMakeOptions Options, bool RopeParameters) Variant(string name) => name switch
    {
        "mha" => (Tiny with { NumKeyValueHeads = 4 }, new() { Seed = 11 }, false),
        "gqa" => (Tiny, new() { Seed = 12 }, false),
        "mqa" => (Tiny with { ModelType = "mistral", NumKeyValueHeads = 1 }, new() { Seed = 13 }, false),
        "head-dim" => (Tiny with { HeadDim = 12 }, new() { Seed = 14 }, false),                        // H·hd = 48 ≠ d = 32
        "qwen2" => (Tiny with { ModelType = "qwen2", TieWordEmbeddings = true, Rope = new RopeSpec(1e6) }, new() { Seed = 15 }, false),
        "llama-bias" => (Tiny with { AttentionBias = true, MlpBiasFlag = true }, new() { Seed = 16 }, false),
        "tied" => (Tiny with { TieWordEmbeddings = true }, new() { Seed = 17 }, false),
        "tied-copy" => (Tiny with { TieWordEmbeddings = true }, new() { Seed = 18, TiedHeadCopy = true }, false),
        "untied" => (Tiny with { NumAttentionHeads = 2, NumKeyValueHeads = 2, HeadDim = 16 }, new() { Seed = 19 }, false),   // MHA, hd = d/H
        "llama3" => (Tiny with { Rope = LlamaConfig.Llama3Scaling(500_000), TieWordEmbeddings = true }, new() { Seed = 20 }, false),
        "linear" => (Tiny with { Rope = new RopeSpec(10000, "linear", Factor: 4) }, new() { Seed = 21 }, false),
        "rope-parameters" => (Tiny with { Rope = LlamaConfig.Llama3Scaling(500_000) }, new() { Seed = 22 }, true),
        "sharded" => (Tiny, new() { Seed = 23, Shards = 3 }, false),
        "bf16" => (Tiny, new() { Seed = 24, DType = DType.BF16 }, false),
        "f16" => (Tiny, new() { Seed = 25, DType = DType.F16 }, false),
        "f64" => (Tiny, new() { Seed = 26, DType = DType.F64 }, false),
        "inv-freq" => (Tiny, new() { Seed = 27, InvFreqBuffers = true }, false),
        "mistral-window" => (Tiny with { ModelType = "mistral", SlidingWindow = 24 }, new() { Seed = 28 }, false),
        _ => throw new ArgumentException(name),
    };

    /// <summary>Makes (once per process) variant <paramref name="name"/> and returns its directory.</summary>
    public static string Get(string name)
    {
        var (config, options, ropeParameters) = Variant(name);
        return Get(name, config, options, ropeParameters);
    }

    public static string Get(string name, LlamaConfig config, LlamaMakeOptions options, bool ropeParameters = false)
    {
        lock (Gate)
        {
            string dir = Path.Combine(Root, name);
            if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            Directory.CreateDirectory(Root);   // writers never create missing parents
            LlamaCheckpointMaker.Make(config, dir, options);
            if (ropeParameters)
            {
                // transformers 5.x: rope_theta and the scaling live together in rope_parameters.
                string path = Path.Combine(dir, "config.json");
                var o = Checkpoint.ReadConfig(path);
                var rp = (JsonObject)o["rope_scaling"]!.DeepClone();
                rp["rope_theta"] = o["rope_theta"]!.DeepClone();
                o.Remove("rope_scaling");
                o.Remove("rope_theta");
                o["rope_parameters"] = rp;
                File.WriteAllText(path, o.ToJsonString());
            }
            return dir;
        }
    }

    /// <summary>A fresh copy of a fixture (to edit its files).</summary>
    public static string Copy(string name, string hint)
    {
        string src = Get(name);
        string dir = Path.Combine(Root, "tmp", hint + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    /// <summary>Edits a copy's config.json.</summary>
    public static void EditConfig(string dir, Action<JsonObject> edit)
    {
        string path = Path.Combine(dir, "config.json");
        var o = Checkpoint.ReadConfig(path);
        edit(o);
        File.WriteAllText(path, o.ToJsonString());
    }
}
