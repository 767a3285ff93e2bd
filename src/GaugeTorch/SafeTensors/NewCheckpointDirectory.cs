using System.Text.Json.Nodes;

namespace GaugeTorch.SafeTensors;

/// <summary>
/// Writes a brand-new HuggingFace checkpoint directory (config.json plus model.safetensors, or exactly N shards and
/// their index) from a list of tensor specs and a producer that streams each tensor into its writer. The directory is
/// assembled in a registered temporary beside the target (<see cref="TempFiles"/>) and renamed into place, so an error
/// or a signal leaves nothing, and a non-empty target is refused unless <c>force</c> replaces it whole (never a mix of
/// old and new files, such as a stale index beside a new single file). Used by every architecture's checkpoint maker.
/// </summary>
public static class NewCheckpointDirectory
{
    /// <param name="specs">Every tensor with the name its producer knows it by (<c>Source</c>), in file order.</param>
    /// <param name="write">Writes one tensor (spec, source) into the writer (Write or Claim + WriteRange).</param>
    public static void Write(string outDir, IReadOnlyList<(TensorSpec Spec, string Source)> specs, int shards, bool force,
        IReadOnlyDictionary<string, string> metadata, string configJson, Action<SafeTensorWriter, TensorSpec, string> write,
        IProgress<(long Done, long Total)>? progress = null)
    {
        if (shards < 1) throw new ArgumentException($"shards: {shards} is less than 1");
        if (shards > specs.Count)
            throw new ArgumentException($"--shards {shards}: this model has {specs.Count} tensors, so at most {specs.Count} shards (a shard holds whole tensors)");
        string target = Path.GetFullPath(outDir).TrimEnd('/');
        if (File.Exists(target)) throw new IOException($"{target}: exists and is a file (--out must be a directory)");
        bool replace = Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any();
        if (replace && !force) throw new IOException($"{target}: directory exists and is not empty (choose another --out, or --force to replace it)");
        string temp = TempFiles.CreateDirectory(target);
        try
        {
            WriteInto(temp, specs, shards, metadata, configJson, write, progress);
            if (Directory.Exists(target) && !replace) Directory.Delete(target); // empty
            TempFiles.CommitReplacing(temp, target);
        }
        catch
        {
            TempFiles.Delete(temp);
            throw;
        }
    }

    private static void WriteInto(string dir, IReadOnlyList<(TensorSpec Spec, string Source)> specs, int shards, IReadOnlyDictionary<string, string> metadata,
        string configJson, Action<SafeTensorWriter, TensorSpec, string> write, IProgress<(long Done, long Total)>? progress)
    {
        long total = specs.Sum(s => s.Spec.ByteLength), done = 0;
        var groups = Partition(specs, shards);
        var writers = new List<SafeTensorWriter>();
        try
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int s = 0; s < groups.Count; s++)
            {
                string file = groups.Count == 1 ? SafeTensorStore.SingleFileName : $"model-{s + 1:D5}-of-{groups.Count:D5}.safetensors";
                var w = SafeTensorWriter.Create(Path.Combine(dir, file), groups[s].Select(g => g.Spec), metadata);
                writers.Add(w);
                foreach (var (spec, source) in groups[s])
                {
                    write(w, spec, source);
                    weightMap[spec.Name] = file;
                    done += spec.ByteLength;
                    progress?.Report((done, total));
                }
            }
            foreach (var w in writers) w.Commit();
            if (groups.Count > 1)
            {
                var index = new JsonObject
                {
                    ["metadata"] = new JsonObject { ["total_size"] = total },
                    ["weight_map"] = new JsonObject(weightMap.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
                };
                AtomicFile.WriteAllText(Path.Combine(dir, SafeTensorStore.IndexFileName), index.ToJsonString(new() { WriteIndented = true }));
            }
            AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        }
        finally
        {
            foreach (var w in writers) w.Dispose();
        }
    }

    /// <summary>
    /// Exactly <paramref name="shards"/> non-empty groups of consecutive tensors (needs shards ≤ specs.Count), about
    /// equal in bytes: a new shard starts when the current one holds its share, or when the tensors left are only
    /// just enough to give every remaining shard one (byte balance alone gave a tiny model's wte a shard of its own
    /// and everything else a second one, for --shards 3).
    /// </summary>
    internal static List<List<(TensorSpec Spec, string Source)>> Partition(IReadOnlyList<(TensorSpec Spec, string Source)> specs, int shards)
    {
        long total = specs.Sum(s => s.Spec.ByteLength);
        long per = (total + shards - 1) / shards;
        var groups = new List<List<(TensorSpec, string)>> { new() };
        long acc = 0;
        for (int i = 0; i < specs.Count; i++)
        {
            int tensorsLeft = specs.Count - i, shardsLeft = shards - groups.Count;
            if (groups[^1].Count > 0 && shardsLeft > 0 && (acc >= per || tensorsLeft <= shardsLeft)) { groups.Add(new()); acc = 0; }
            groups[^1].Add(specs[i]);
            acc += specs[i].Spec.ByteLength;
        }
        return groups;
    }

    /// <summary>A generator seed from (seed, tensor name): FNV-1a over the name mixed with the seed, stable across runs and platforms.</summary>
    public static long StableHash(long seed, string name)
    {
        ulong h = 1469598103934665603UL ^ (ulong)seed * 0x9E3779B97F4A7C15UL;
        foreach (char ch in name) { h ^= ch; h *= 1099511628211UL; }
        return (long)(h & 0x7FFFFFFFFFFFFFFFUL);
    }
}
