using System.Text.Json;
using System.Text.Json.Nodes;

namespace GaugeTorch.Hub;

/// <summary>One pinned file of a lock entry. Null values are not known yet.</summary>
public sealed record LockedFile(long? Size, string? Sha256, string? Source);

/// <summary>One model of models.lock.json.</summary>
public sealed record ModelLockEntry(string Name, string Repo, string? Revision, IReadOnlyDictionary<string, LockedFile> Files);

/// <summary>
/// <c>models.lock.json</c>: for each model name, the hub repo id, the pinned revision (a commit) and each file's
/// size and SHA-256, with a "source" for every value that was not produced by <c>--update-lock</c>.
/// Unknown fields are preserved when the lock is rewritten; writes are atomic.
/// <code>
/// { "version": 1,
///   "models": { "gpt2": { "repo": "openai-community/gpt2", "revision": "…", "source": "…",
///                         "files": { "model.safetensors": { "size": 548105171, "sha256": "…", "source": "…" } } } } }
/// </code>
/// </summary>
public sealed class ModelLock
{
    public const string DefaultFileName = "models.lock.json";

    /// <summary>The five GPT-2 checkpoints GaugeTorch knows by name, used when no lock file names them.</summary>
    public static readonly IReadOnlyDictionary<string, string> KnownRepos = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["gpt2"] = "openai-community/gpt2",
        ["gpt2-medium"] = "openai-community/gpt2-medium",
        ["gpt2-large"] = "openai-community/gpt2-large",
        ["gpt2-xl"] = "openai-community/gpt2-xl",
        ["distilgpt2"] = "distilbert/distilgpt2",
    };

    /// <summary>Resource name of the lock built into the library (the repository's models.lock.json at build time).</summary>
    public const string ResourceName = "GaugeTorch.models.lock.json";

    /// <summary>Where the lock came from: a file path, or a description of the built-in lock.</summary>
    public string Path { get; }
    /// <summary>True for the lock built into the binary (it cannot be saved).</summary>
    public bool IsBuiltIn { get; }
    private readonly JsonObject _root;

    private ModelLock(string path, JsonObject root, bool builtIn = false)
    {
        Path = path;
        _root = root;
        IsBuiltIn = builtIn;
    }

    public static ModelLock Empty(string path) => new(path, new JsonObject { ["version"] = 1, ["models"] = new JsonObject() });

    /// <summary>The raw text of the built-in lock.</summary>
    public static string BuiltInText()
    {
        using var s = typeof(ModelLock).Assembly.GetManifestResourceStream(ResourceName)
                      ?? throw new InvalidOperationException($"the built-in {DefaultFileName} is missing from {typeof(ModelLock).Assembly.GetName().Name}");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>
    /// The lock built into the binary: the repository's models.lock.json when this build was made, so that
    /// <c>download</c> pins the same revisions from any working directory.
    /// </summary>
    public static ModelLock BuiltIn() => Parse(BuiltInText(), $"built-in {DefaultFileName} ({ToolInfo.Version})", builtIn: true);

    public static ModelLock Load(string path) => Parse(File.ReadAllText(path), path);

    private static ModelLock Parse(string text, string path, bool builtIn = false)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new FormatException($"{path}: not valid JSON ({e.Message})", e);
        }
        if (node is not JsonObject root) throw new FormatException($"{path}: expected a JSON object");
        if (root["models"] is not JsonObject) throw new FormatException($"{path}: no \"models\" object");
        var lk = new ModelLock(path, root, builtIn);
        foreach (var e in lk.Entries) { _ = e; } // validates every entry
        return lk;
    }

    private JsonObject Models => (JsonObject)_root["models"]!;

    public IEnumerable<ModelLockEntry> Entries => Models.Select(kv => Parse(kv.Key, kv.Value)).ToList();

    /// <summary>The entry whose name or repo id is <paramref name="nameOrRepo"/>, or null.</summary>
    public ModelLockEntry? Find(string nameOrRepo) =>
        Entries.FirstOrDefault(e => e.Name == nameOrRepo) ?? Entries.FirstOrDefault(e => string.Equals(e.Repo, nameOrRepo, StringComparison.OrdinalIgnoreCase));

    private ModelLockEntry Parse(string name, JsonNode? node)
    {
        string where = $"{Path}: models.{name}";
        if (node is not JsonObject o) throw new FormatException($"{where}: expected an object");
        string repo = o["repo"] is JsonValue rv && rv.TryGetValue(out string? r) && !string.IsNullOrWhiteSpace(r) ? r : throw new FormatException($"{where}.repo: expected a repo id string");
        string? revision = OptionalString(o["revision"], $"{where}.revision");
        if (revision is not null && !HubClient.IsHex(revision, 40)) throw new FormatException($"{where}.revision: '{revision}' is not a 40-hex commit hash (pin commits, not branches)");
        var files = new Dictionary<string, LockedFile>(StringComparer.Ordinal);
        if (o["files"] is JsonObject fo)
        {
            foreach (var (fname, fnode) in fo)
            {
                string fwhere = $"{where}.files[\"{fname}\"]";
                if (!HubFileSelection.IsPlainFileName(fname)) throw new FormatException($"{fwhere}: not a plain file name");
                if (fnode is not JsonObject f) throw new FormatException($"{fwhere}: expected an object with size and sha256");
                long? size = f["size"] switch
                {
                    null => null,
                    JsonValue v when v.TryGetValue(out long l) && l >= 0 => l,
                    _ => throw new FormatException($"{fwhere}.size: expected a non-negative integer or null"),
                };
                string? sha = OptionalString(f["sha256"], $"{fwhere}.sha256")?.ToLowerInvariant();
                if (sha is not null && !HubClient.IsHex(sha, 64)) throw new FormatException($"{fwhere}.sha256: '{sha}' is not 64 hex digits");
                files[fname] = new LockedFile(size, sha, OptionalString(f["source"], $"{fwhere}.source"));
            }
        }
        else if (o["files"] is not null) throw new FormatException($"{where}.files: expected an object");
        return new ModelLockEntry(name, repo, revision, files);
    }

    private static string? OptionalString(JsonNode? n, string where) => n switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new FormatException($"{where}: expected a string or null"),
    };

    /// <summary>
    /// Sets an entry's repo, revision and files from what the hub served (sizes and hashes verified by the download).
    /// Other fields of the entry are kept; the file list is replaced.
    /// </summary>
    public void Update(string name, string repo, string revision, IEnumerable<DownloadedFile> files, DateTimeOffset when)
    {
        if (Models[name] is not JsonObject entry)
        {
            entry = new JsonObject();
            Models[name] = entry;
        }
        entry["repo"] = repo;
        entry["revision"] = revision;
        entry["revision_source"] = $"X-Repo-Commit / api/models sha from the hub, recorded by 'gaugetorch download --update-lock' on {when:yyyy-MM-dd}";
        var fo = new JsonObject();
        foreach (var f in files.OrderBy(f => f.Name, StringComparer.Ordinal))
            fo[f.Name] = new JsonObject
            {
                ["size"] = f.Size,
                ["sha256"] = f.Sha256,
                ["source"] = $"{f.VerifiedBy}; recorded by 'gaugetorch download --update-lock' on {when:yyyy-MM-dd}",
            };
        entry["files"] = fo;
    }

    /// <summary>Writes the lock atomically (temporary file + rename).</summary>
    public void Save()
    {
        if (IsBuiltIn) throw new InvalidOperationException($"the {Path} cannot be changed: give --lock FILE to update a lock file");
        AtomicFile.WriteAllText(Path, _root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
