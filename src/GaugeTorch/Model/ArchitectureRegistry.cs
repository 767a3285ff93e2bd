using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Architectures.Llama;

namespace GaugeTorch.Model;

/// <summary>Chooses the <see cref="IArchitecture"/> adapter of a config.json by its model_type.</summary>
public static class ArchitectureRegistry
{
    /// <summary>model_type values GaugeTorch reads.</summary>
    public static readonly IReadOnlyList<string> Supported = ["gpt2", "llama", "qwen2", "mistral"];

    public static IArchitecture FromConfig(JsonObject config, string source)
    {
        string modelType = config["model_type"] is JsonValue v && v.TryGetValue(out string? s) ? s : "gpt2";
        return modelType switch
        {
            "gpt2" => new Gpt2Adapter(Gpt2Config.FromJson(config, source)),
            "llama" or "qwen2" or "mistral" => new LlamaAdapter(LlamaConfig.FromJson(config, source)),
            _ => throw new ModelFormatException($"{source}: model_type '{modelType}' is not supported (supported: {string.Join(", ", Supported)})"),
        };
    }
}
