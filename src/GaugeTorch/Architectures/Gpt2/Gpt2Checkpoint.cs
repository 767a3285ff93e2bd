using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>
/// A HuggingFace GPT-2 checkpoint on disk: <c>config.json</c> plus <c>model.safetensors</c> (or an index and
/// shards), memory-mapped. Keys may carry the <c>transformer.</c> prefix; mask buffers are recognised and
/// skipped; <c>lm_head.weight</c> may be absent (tied), equal to wte (tied) or different (untied).
/// Opening validates every tensor name and shape and reports all problems in one error.
/// </summary>
public sealed class Gpt2Checkpoint : IDisposable
{
    public string Directory { get; }
    public string ConfigPath { get; }
    public Gpt2Config Config { get; }
    public SafeTensorStore Store { get; }
    /// <summary>"" or "transformer.".</summary>
    public string Prefix { get; }
    /// <summary>True when the checkpoint stores the causal-mask buffers.</summary>
    public bool HasMaskBuffers { get; }
    /// <summary>True when the output head is wte (no lm_head.weight, or one byte-equal to wte).</summary>
    public bool Tied { get; }
    /// <summary>True when lm_head.weight is stored (tied or not).</summary>
    public bool HasLmHeadTensor { get; }
    /// <summary>Storage dtype of the parameters (the dtype of wte).</summary>
    public DType StorageDType { get; }

    /// <summary>Every file the checkpoint reads (config, weights, index), for never-overwrite checks.</summary>
    public IEnumerable<string> InputFiles => Store.SourcePaths.Append(ConfigPath);

    private Gpt2Checkpoint(string dir, string configPath, Gpt2Config config, SafeTensorStore store, string prefix, bool buffers, bool tied, bool hasHead, DType dtype)
    {
        Directory = dir;
        ConfigPath = configPath;
        Config = config;
        Store = store;
        Prefix = prefix;
        HasMaskBuffers = buffers;
        Tied = tied;
        HasLmHeadTensor = hasHead;
        StorageDType = dtype;
    }

    /// <summary>Opens MODEL: a directory, a .safetensors file or an index (config.json beside it). Null means the embedded demo model.</summary>
    public static Gpt2Checkpoint Open(string? path)
    {
        path ??= DefaultModel.Path;
        string full = System.IO.Path.GetFullPath(path);
        string dir = System.IO.Directory.Exists(full) ? full : System.IO.Path.GetDirectoryName(full)!;
        if (!System.IO.Directory.Exists(full) && !File.Exists(full))
            throw new FileNotFoundException($"{full}: model not found (expected a directory with config.json and model.safetensors)");
        string configPath = System.IO.Path.Combine(dir, "config.json");
        var config = Gpt2Config.Load(configPath);
        var store = SafeTensorStore.Open(full);
        try
        {
            return Validate(dir, configPath, config, store);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    private static Gpt2Checkpoint Validate(string dir, string configPath, Gpt2Config c, SafeTensorStore store)
    {
        string where = string.Join(", ", store.Files.Select(f => f.Path));
        var problems = Problems(c, store, out string prefix, out bool hasHead, out bool anyBuffer, out DType? floatType);
        if (problems.Count > 0)
        {
            string list = string.Join("\n  ", problems.Take(40)) + (problems.Count > 40 ? $"\n  ... and {problems.Count - 40} more" : "");
            throw new Gpt2FormatException($"{where}: not a GPT-2 checkpoint matching {configPath} ({problems.Count} problem(s)):\n  {list}");
        }
        bool tied = true;
        if (hasHead)
        {
            string headKey = store.Contains(Gpt2Keys.LmHead) ? Gpt2Keys.LmHead : prefix + Gpt2Keys.LmHead;
            var he = store.Entry(headKey);
            tied = he.DType == store.Entry(prefix + Gpt2Keys.Wte).DType && store.ReadBytes(headKey).AsSpan().SequenceEqual(store.ReadBytes(prefix + Gpt2Keys.Wte));
        }
        else if (!c.TieWordEmbeddings)
        {
            throw new Gpt2FormatException($"{where}: config says tie_word_embeddings=false but there is no lm_head.weight");
        }
        return new Gpt2Checkpoint(dir, configPath, c, store, prefix, anyBuffer, tied, hasHead, floatType!.Value);
    }

    /// <summary>
    /// Every way the tensors of <paramref name="store"/> differ from a GPT-2 of configuration <paramref name="c"/>
    /// (empty when they match). <c>inspect --no-validate</c> lists these instead of refusing the checkpoint.
    /// </summary>
    public static List<string> Problems(Gpt2Config c, SafeTensorStore store) => Problems(c, store, out _, out _, out _, out _);

    private static List<string> Problems(Gpt2Config c, SafeTensorStore store, out string prefix, out bool hasHead, out bool anyBuffer, out DType? floatType)
    {
        bool prefixed = store.Contains(Gpt2Keys.Prefix + Gpt2Keys.Wte) || store.Entries.Any(e => e.Name.StartsWith(Gpt2Keys.Prefix + "h.", StringComparison.Ordinal));
        string pre = prefixed ? Gpt2Keys.Prefix : "";
        prefix = pre;
        var expected = Gpt2Keys.Parameters(c).ToDictionary(p => pre + p.Name, p => p.Shape, StringComparer.Ordinal);
        var buffers = new HashSet<string>(StringComparer.Ordinal);
        for (int l = 0; l < c.NLayer; l++)
            foreach (var b in Gpt2Keys.BufferSuffixes) buffers.Add(pre + Gpt2Keys.Layer(l, b));

        var problems = new List<string>();
        hasHead = false;
        anyBuffer = false;
        floatType = null;
        foreach (var e in store.Entries)
        {
            if (expected.TryGetValue(e.Name, out var shape))
            {
                if (!e.Shape.SequenceEqual(shape)) problems.Add($"'{e.Name}' has shape {e.ShapeText}, expected [{string.Join(", ", shape)}]");
                else if (!e.DType.IsFloat()) problems.Add($"'{e.Name}' has non-float dtype {e.DType}");
                else if (floatType is null) floatType = e.DType;
                else if (floatType != e.DType) problems.Add($"'{e.Name}' is {e.DType} but other parameters are {floatType}");
            }
            else if (buffers.Contains(e.Name)) anyBuffer = true;
            else if (e.Name == Gpt2Keys.LmHead || e.Name == pre + Gpt2Keys.LmHead)
            {
                hasHead = true;
                if (!e.Shape.SequenceEqual(new long[] { c.VocabSize, c.NEmbd }))
                    problems.Add($"'{e.Name}' has shape {e.ShapeText}, expected [{c.VocabSize}, {c.NEmbd}]");
            }
            else problems.Add($"unexpected tensor '{e.Name}' {e.ShapeText}");
        }
        foreach (var name in expected.Keys)
            if (!store.Contains(name)) problems.Add($"missing tensor '{name}'");
        return problems;
    }

    /// <summary>The stored key of a parameter given its unprefixed name.</summary>
    public string Key(string name) => name == Gpt2Keys.LmHead
        ? (Store.Contains(Gpt2Keys.LmHead) ? Gpt2Keys.LmHead : Prefix + Gpt2Keys.LmHead)
        : Prefix + name;

    public Tensor Load(string name, ScalarType dtype) => Store.Load(Key(name), dtype);

    public LayerWeights LoadLayer(int layer, ScalarType dtype) =>
        LayerWeights.FromFunc(s => Load(Gpt2Keys.Layer(layer, s), dtype));

    public GlobalWeights LoadGlobals(ScalarType dtype) => new()
    {
        Wte = Load(Gpt2Keys.Wte, dtype),
        Wpe = Load(Gpt2Keys.Wpe, dtype),
        LnFW = Load(Gpt2Keys.LnFWeight, dtype),
        LnFB = Load(Gpt2Keys.LnFBias, dtype),
        LmHead = Tied ? null : Load(Gpt2Keys.LmHead, dtype),
    };

    /// <summary>Tokenizer and other side files of a HuggingFace model directory that exports should copy.</summary>
    public IEnumerable<string> SideFiles()
    {
        string[] names = ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];
        foreach (var n in names)
        {
            string p = System.IO.Path.Combine(Directory, n);
            if (File.Exists(p)) yield return p;
        }
    }

    public void Dispose() => Store.Dispose();
}
