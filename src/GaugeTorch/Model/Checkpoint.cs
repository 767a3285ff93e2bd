using System.Text.Json;
using System.Text.Json.Nodes;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>A checkpoint or config that GaugeTorch cannot use; the message names the file and tensors.</summary>
public class ModelFormatException(string message) : Exception(message);

/// <summary>
/// A HuggingFace checkpoint on disk, of any supported architecture: <c>config.json</c> plus <c>model.safetensors</c>
/// (or an index and shards), memory-mapped, with its <see cref="IArchitecture"/> adapter chosen by model_type.
/// Opening validates every tensor name, shape and dtype against the adapter and reports all problems in one error.
/// Stored names may carry the adapter's optional prefix; ignored buffers are recognised and skipped; the head may
/// be absent (tied), byte-equal to the embedding (tied) or different (untied), as the adapter resolves it.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    public string Directory { get; }
    public string ConfigPath { get; }
    /// <summary>config.json as read.</summary>
    public JsonObject Config { get; }
    public IArchitecture Architecture { get; }
    /// <summary>The adapter's traits with <see cref="ModelTraits.Tied"/> as this checkpoint stores it.</summary>
    public ModelTraits Traits { get; }
    public SafeTensorStore Store { get; }
    /// <summary>"" or the adapter's optional prefix, as stored.</summary>
    public string Prefix { get; }
    /// <summary>True when the head is the embedding.</summary>
    public bool Tied => Traits.Tied;
    /// <summary>True when a head tensor is stored (tied or not).</summary>
    public bool HasHeadTensor { get; }
    /// <summary>Storage dtype of the parameters (the embedding's).</summary>
    public DType StorageDType { get; }
    /// <summary>Stored names of the ignored buffers present.</summary>
    public IReadOnlyList<string> IgnoredBuffers { get; }

    /// <summary>Every file the checkpoint reads (config, weights, index), for never-overwrite checks.</summary>
    public IEnumerable<string> InputFiles => Store.SourcePaths.Append(ConfigPath);

    private Checkpoint(string dir, string configPath, JsonObject config, IArchitecture arch, SafeTensorStore store, string prefix,
        bool tied, bool hasHead, DType dtype, IReadOnlyList<string> buffers)
    {
        Directory = dir;
        ConfigPath = configPath;
        Config = config;
        Architecture = arch;
        Traits = arch.Traits with { Tied = tied };
        Store = store;
        Prefix = prefix;
        HasHeadTensor = hasHead;
        StorageDType = dtype;
        IgnoredBuffers = buffers;
    }

    /// <summary>Opens MODEL: a directory, a .safetensors file or an index (config.json beside it). Null means the embedded demo model.</summary>
    public static Checkpoint Open(string? path)
    {
        path ??= GaugeTorch.Architectures.Gpt2.DefaultModel.Path;
        string full = Path.GetFullPath(path);
        string dir = System.IO.Directory.Exists(full) ? full : Path.GetDirectoryName(full)!;
        if (!System.IO.Directory.Exists(full) && !File.Exists(full))
            throw new FileNotFoundException($"{full}: model not found (expected a directory with config.json and model.safetensors)");
        string configPath = Path.Combine(dir, "config.json");
        var config = ReadConfig(configPath);
        var arch = ArchitectureRegistry.FromConfig(config, configPath);
        var store = SafeTensorStore.Open(full);
        try
        {
            return Validate(dir, configPath, config, arch, store);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>Reads config.json as a JSON object, naming the file in every error.</summary>
    public static JsonObject ReadConfig(string configPath)
    {
        if (!File.Exists(configPath)) throw new ModelFormatException($"{Path.GetDirectoryName(configPath)}: no config.json (a model directory needs one beside its safetensors)");
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(configPath));
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{configPath}: not valid JSON ({e.Message})");
        }
        return root as JsonObject ?? throw new ModelFormatException($"{configPath}: not a JSON object");
    }

    private static Checkpoint Validate(string dir, string configPath, JsonObject config, IArchitecture arch, SafeTensorStore store)
    {
        string where = string.Join(", ", store.Files.Select(f => f.Path));
        var problems = Problems(arch, store, out string prefix, out string? headKey, out var buffers, out DType? floatType);
        if (problems.Count > 0)
        {
            string list = string.Join("\n  ", problems.Take(40)) + (problems.Count > 40 ? $"\n  ... and {problems.Count - 40} more" : "");
            throw new ModelFormatException($"{where}: not a {arch.Name} checkpoint matching {configPath} ({problems.Count} problem(s)):\n  {list}");
        }
        bool equal = false;
        if (headKey is not null)
        {
            string embKey = prefix + arch.EmbeddingName;
            equal = store.Entry(headKey).DType == store.Entry(embKey).DType && store.ReadBytes(headKey).AsSpan().SequenceEqual(store.ReadBytes(embKey));
        }
        bool tied = arch.ResolveTied(headKey is not null, equal, where);
        return new Checkpoint(dir, configPath, config, arch, store, prefix, tied, headKey is not null, floatType!.Value, buffers);
    }

    /// <summary>Every way <paramref name="store"/> fails to be a checkpoint of <paramref name="arch"/> (names, shapes, dtypes), one line each.</summary>
    public static List<string> Problems(IArchitecture arch, SafeTensorStore store) => Problems(arch, store, out _, out _, out _, out _);

    private static List<string> Problems(IArchitecture arch, SafeTensorStore store, out string prefix, out string? headKey, out List<string> buffers, out DType? floatType)
    {
        string? optional = arch.OptionalPrefix;
        bool prefixed = optional is not null && store.Entries.Any(e => e.Name.StartsWith(optional, StringComparison.Ordinal) && e.Name != arch.HeadName);
        string pre = prefixed ? optional! : "";
        prefix = pre;
        var expected = arch.Parameters().ToDictionary(p => pre + p.Name, p => p.Shape, StringComparer.Ordinal);
        var t = arch.Traits;
        long[] headShape = [t.Vocab, t.Hidden];

        var problems = new List<string>();
        buffers = [];
        headKey = null;
        floatType = null;
        foreach (var e in store.Entries)
        {
            string unprefixed = prefix.Length > 0 && e.Name.StartsWith(prefix, StringComparison.Ordinal) ? e.Name[prefix.Length..] : e.Name;
            if (expected.TryGetValue(e.Name, out var shape))
            {
                if (!e.Shape.SequenceEqual(shape)) problems.Add($"'{e.Name}' has shape {e.ShapeText}, expected [{string.Join(", ", shape)}]");
                else if (!e.DType.IsFloat()) problems.Add($"'{e.Name}' has non-float dtype {e.DType}");
                else if (floatType is null) floatType = e.DType;
                else if (floatType != e.DType) problems.Add($"'{e.Name}' is {e.DType} but other parameters are {floatType}");
            }
            else if (arch.IsIgnoredBuffer(unprefixed)) buffers.Add(e.Name);
            else if (e.Name == arch.HeadName || e.Name == prefix + arch.HeadName)
            {
                headKey = e.Name;
                if (!e.Shape.SequenceEqual(headShape)) problems.Add($"'{e.Name}' has shape {e.ShapeText}, expected [{t.Vocab}, {t.Hidden}]");
                else if (!e.DType.IsFloat()) problems.Add($"'{e.Name}' has non-float dtype {e.DType}");
            }
            else problems.Add($"unexpected tensor '{e.Name}' {e.ShapeText}");
        }
        foreach (var name in expected.Keys)
            if (!store.Contains(name)) problems.Add($"missing tensor '{name}'");
        return problems;
    }

    /// <summary>The stored key of an unprefixed parameter name (the head is looked up as stored).</summary>
    public string Key(string name)
    {
        if (name == Architecture.HeadName) return Store.Contains(name) ? name : Prefix + name;
        return Prefix + name;
    }

    /// <summary>One stored parameter by unprefixed name, converted to <paramref name="dtype"/>.</summary>
    public Tensor Load(string name, ScalarType dtype) => Store.Load(Key(name), dtype);

    /// <summary>Layer <paramref name="layer"/> as a view in <paramref name="dtype"/> (the view owns its tensors).</summary>
    public LayerView LoadLayer(int layer, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return Architecture.ToView(layer, n => Load(n, dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>The globals as a view in <paramref name="dtype"/> (head null when tied).</summary>
    public GlobalView LoadGlobals(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return Architecture.GlobalsToView(n => Load(n, dtype), Tied).MoveToOuterDisposeScope();
    }

    /// <summary>Tokenizer and other side files of a HuggingFace model directory that exports copy.</summary>
    public IEnumerable<string> SideFiles()
    {
        string[] names = ["tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];
        foreach (var n in names)
        {
            string p = Path.Combine(Directory, n);
            if (File.Exists(p)) yield return p;
        }
    }

    public void Dispose() => Store.Dispose();
}
