using System.Text.Json;
using TorchSharp;

namespace GaugeTorch.SafeTensors;

/// <summary>
/// All tensors of a checkpoint: one <c>.safetensors</c> file, or the shards listed by a
/// <c>*.safetensors.index.json</c> (HuggingFace's <c>weight_map</c>). Names must be unique across shards.
/// </summary>
public sealed class SafeTensorStore : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafeTensorFile> _files;
    private readonly Dictionary<string, (SafeTensorFile File, TensorEntry Entry)> _byName;

    public IReadOnlyList<SafeTensorFile> Files => _files;
    public IReadOnlyList<TensorEntry> Entries { get; }
    /// <summary>The metadata of the first file (shards written by GaugeTorch all carry the same metadata).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _files.Count > 0 ? _files[0].Metadata : new Dictionary<string, string>();
    /// <summary>Every file this store reads (the shards, and the index when there is one).</summary>
    public IReadOnlyList<string> SourcePaths { get; }

    private SafeTensorStore(List<SafeTensorFile> files, List<string> sources)
    {
        _files = files;
        SourcePaths = sources;
        _byName = new Dictionary<string, (SafeTensorFile, TensorEntry)>(StringComparer.Ordinal);
        var entries = new List<TensorEntry>();
        foreach (var f in files)
        {
            foreach (var e in f.Entries)
            {
                if (!_byName.TryAdd(e.Name, (f, e)))
                    throw new SafeTensorsException(f.Path, e.Name, $"tensor also present in {_byName[e.Name].File.Path}");
                entries.Add(e);
            }
        }
        Entries = entries;
    }

    /// <summary>Finds the weights of a directory or file: a <c>.safetensors</c> file, an index file, or a directory holding either.</summary>
    public static string ResolveWeightsPath(string path)
    {
        string full = Path.GetFullPath(path);
        if (File.Exists(full)) return full;
        if (!Directory.Exists(full)) throw new FileNotFoundException($"{full}: no such file or directory");
        string single = Path.Combine(full, SingleFileName);
        if (File.Exists(single)) return single;
        string index = Path.Combine(full, IndexFileName);
        if (File.Exists(index)) return index;
        var others = Directory.GetFiles(full, "*.safetensors");
        if (others.Length == 1) return others[0];
        throw new FileNotFoundException($"{full}: no {SingleFileName} or {IndexFileName} found");
    }

    public static SafeTensorStore Open(string path)
    {
        string resolved = ResolveWeightsPath(path);
        if (resolved.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return OpenIndex(resolved);
        var f = SafeTensorFile.Open(resolved);
        return new SafeTensorStore([f], [resolved]);
    }

    private static SafeTensorStore OpenIndex(string indexPath)
    {
        string dir = Path.GetDirectoryName(indexPath)!;
        var shards = new List<string>();
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsException(indexPath, null, "index JSON is not an object");
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsException(indexPath, null, "index has no 'weight_map' object");
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw new SafeTensorsException(indexPath, p.Name, "weight_map value is not a file name");
                string shard = p.Value.GetString()!;
                if (shard.Contains('/') || shard.Contains('\\') || shard == ".." ) throw new SafeTensorsException(indexPath, p.Name, $"shard name '{shard}' is not a plain file name");
                if (!expected.TryAdd(p.Name, shard)) throw new SafeTensorsException(indexPath, p.Name, "duplicate name in weight_map");
                if (!shards.Contains(shard)) shards.Add(shard);
            }
            if (shards.Count == 0) throw new SafeTensorsException(indexPath, null, "index 'weight_map' lists no tensors");
        }
        catch (JsonException e)
        {
            throw new SafeTensorsException(indexPath, null, $"index is not valid JSON ({e.Message})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            throw new SafeTensorsException(indexPath, null, $"cannot read the index ({e.Message})", e);
        }
        var files = new List<SafeTensorFile>();
        try
        {
            foreach (var s in shards) files.Add(SafeTensorFile.Open(Path.Combine(dir, s)));
            var store = new SafeTensorStore(files, [indexPath, .. files.Select(f => f.Path)]);
            foreach (var (name, shard) in expected)
            {
                if (!store._byName.TryGetValue(name, out var hit))
                    throw new SafeTensorsException(Path.Combine(dir, shard), name, $"listed in {Path.GetFileName(indexPath)} but not present in the shard");
                if (Path.GetFileName(hit.File.Path) != shard)
                    throw new SafeTensorsException(hit.File.Path, name, $"index says it lives in {shard}");
            }
            foreach (var e in store.Entries)
                if (!expected.ContainsKey(e.Name))
                    throw new SafeTensorsException(e.File, e.Name, $"present in the shard but not listed in {Path.GetFileName(indexPath)}");
            return store;
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorEntry Entry(string name) =>
        _byName.TryGetValue(name, out var hit) ? hit.Entry : throw new KeyNotFoundException($"tensor '{name}' not found in {string.Join(", ", _files.Select(f => f.Path))}");

    public torch.Tensor Load(string name, torch.ScalarType? dtype = null)
    {
        if (!_byName.TryGetValue(name, out var hit)) throw new KeyNotFoundException($"tensor '{name}' not found in {string.Join(", ", _files.Select(f => f.Path))}");
        return hit.File.Load(hit.Entry, dtype);
    }

    /// <summary>Copies a tensor's raw bytes (stored dtype) to <paramref name="destination"/> (at least ByteLength bytes).</summary>
    public void CopyRaw(TensorEntry e, IntPtr destination)
    {
        if (!_byName.TryGetValue(e.Name, out var hit)) throw new KeyNotFoundException($"tensor '{e.Name}' not found");
        hit.File.CopyRaw(e, destination);
    }

    /// <summary>A zero-copy CPU tensor over a tensor's stored bytes, or null (see <see cref="SafeTensorFile.MappedTensor"/>).</summary>
    public torch.Tensor? MappedTensor(TensorEntry e)
    {
        if (!_byName.TryGetValue(e.Name, out var hit)) throw new KeyNotFoundException($"tensor '{e.Name}' not found");
        return hit.File.MappedTensor(e);
    }

    /// <summary>Zero-copy pointer to a tensor's stored bytes (see <see cref="SafeTensorFile.MappedPointer"/>).</summary>
    public IntPtr MappedPointer(TensorEntry e)
    {
        if (!_byName.TryGetValue(e.Name, out var hit)) throw new KeyNotFoundException($"tensor '{e.Name}' not found");
        return hit.File.MappedPointer(e);
    }

    /// <summary>Releases the process's mapping of a tensor's pages (see <see cref="SafeTensorFile.ReleaseMapped"/>).</summary>
    public void ReleaseMapped(TensorEntry e)
    {
        if (_byName.TryGetValue(e.Name, out var hit)) hit.File.ReleaseMapped(e);
    }

    public byte[] ReadBytes(string name)
    {
        if (!_byName.TryGetValue(name, out var hit)) throw new KeyNotFoundException($"tensor '{name}' not found");
        return hit.File.ReadBytes(name);
    }

    public long TotalBytes => _files.Sum(f => f.FileLength);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
