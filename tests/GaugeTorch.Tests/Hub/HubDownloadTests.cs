using System.CommandLine;
using System.Text;
using System.Text.Json.Nodes;
using GaugeTorch.Cli.Commands;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Hub;
using GaugeTorch.Tests.Fixtures;

namespace GaugeTorch.Tests.Hub;

public class HubDownloadTests
{
    private static readonly string[] ForeignFiles =
        ["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/decoder_model.onnx", "rust_model.ot", "64-8bits.tflite", "README.md"];

    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    /// <summary>A fake hub serving a real tiny checkpoint, tokenizer files and files of other formats that must never be fetched.</summary>
    private static FakeHub NewHub(bool sharded = false)
    {
        var hub = new FakeHub();
        hub.AddFolder(sharded
            ? TestCheckpoints.Get("hub-sharded", options: new MakeCheckpointOptions { Seed = 5, Shards = 2 })
            : TestCheckpoints.Get("hub-single", options: new MakeCheckpointOptions { Seed = 4 }));
        hub.Files["tokenizer.json"] = Encoding.UTF8.GetBytes("{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\"}}");
        hub.Files["vocab.json"] = Encoding.UTF8.GetBytes("{\"a\":0,\"b\":1}");
        hub.Files["merges.txt"] = Encoding.UTF8.GetBytes("#version: 0.2\na b\n");
        hub.Files["tokenizer_config.json"] = Encoding.UTF8.GetBytes("{\"model_max_length\": 32}");
        foreach (var f in ForeignFiles) hub.Files[f] = Encoding.UTF8.GetBytes("must not be downloaded: " + f);
        return hub;
    }

    private static DownloadResult Download(FakeHub hub, string dir, string? token = null, ModelLockEntry? lk = null, string? revision = null)
    {
        using var client = new HubClient(hub.Options(token));
        var task = new Downloader(client).DownloadAsync(new DownloadRequest { Repo = hub.Repo, Name = "tiny", Directory = dir, Lock = lk, Revision = revision });
        Assert.True(task.Wait(Limit), "download did not finish in time");
        return task.Result;
    }

    private static HubException DownloadFails(FakeHub hub, string dir, string? token = null, ModelLockEntry? lk = null)
    {
        var e = Assert.ThrowsAny<Exception>(() => Download(hub, dir, token, lk));
        return Assert.IsAssignableFrom<HubException>(e is AggregateException ae ? ae.InnerException : e);
    }

    private static (int Code, string Out, string Err) Cli(FakeHub hub, params string[] args)
    {
        var root = new RootCommand { DownloadCommand.Create(() => hub.Options()) };
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o);
        Console.SetError(e);
        Spectre.Console.AnsiConsole.Console = Fixtures.CliRunner.ConsoleFor(o);
        try
        {
            var run = Task.Run(() => root.Parse(args).Invoke());
            Assert.True(run.Wait(Limit), "CLI did not finish in time");
            return (run.Result, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Fact]
    public void DownloadsTheSelectedFilesThroughTheCdnRedirectAndTheCheckpointOpens()
    {
        using var hub = NewHub();
        string dir = TestCheckpoints.NewTempDir("hub-dl");
        var result = Download(hub, dir, token: "secret-token");

        string target = Path.Combine(dir, "tiny");
        string[] expected = ["config.json", "merges.txt", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json"];
        Assert.Equal(expected, Directory.GetFiles(target).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
        Assert.Equal(FakeHub.Commit, result.Commit);
        foreach (var f in expected) Assert.Equal(hub.Files[f], File.ReadAllBytes(Path.Combine(target, f)));
        Assert.Contains(result.Files, f => f.Name == "model.safetensors" && f.VerifiedBy.Contains("X-Linked-Etag"));
        Assert.Contains(result.Files, f => f.Name == "config.json" && f.VerifiedBy.Contains("git blob"));
        Assert.False(Directory.Exists(Downloader.StagingDirectory(target)), "staging folder left behind");

        // Listing, HEAD before GET, files pinned to the commit, other formats never requested.
        var api = hub.Api.Requests.ToList();
        Assert.Contains(api, r => r.Method == "GET" && r.Path == $"/api/models/{hub.Repo}/revision/main");
        Assert.Contains(api, r => r.Method == "HEAD" && r.Path == $"/{hub.Repo}/resolve/{FakeHub.Commit}/model.safetensors");
        Assert.DoesNotContain(api.Concat(hub.Cdn.Requests), r => ForeignFiles.Any(f => r.Path.EndsWith(f, StringComparison.Ordinal)));
        // The token goes to the hub, never to the CDN on another origin.
        Assert.All(api, r => Assert.Equal("Bearer secret-token", r.Header("Authorization")));
        var cdn = hub.Cdn.Requests.ToList();
        Assert.Contains(cdn, r => r.Method == "GET" && r.Path.StartsWith("/cdn/", StringComparison.Ordinal));
        Assert.All(cdn, r => Assert.Null(r.Header("Authorization")));

        using var ck = Gpt2Checkpoint.Open(target);
        Assert.Equal(TestCheckpoints.Tiny.NLayer, ck.Config.NLayer);

        // A second run finds every file in place and verified, and downloads nothing.
        int cdnBefore = hub.Cdn.Requests.Count;
        var again = Download(hub, dir, token: "secret-token");
        Assert.All(again.Files, f => Assert.True(f.AlreadyPresent));
        Assert.Equal(cdnBefore, hub.Cdn.Requests.Count);
    }

    [Fact]
    public void ARelativeRedirectIsFollowedWithTheTokenAndTheLfsHashIsStillRead()
    {
        using var hub = NewHub();
        hub.SameOriginCdn = true;
        string dir = TestCheckpoints.NewTempDir("hub-rel");
        var result = Download(hub, dir, token: "tok");
        Assert.Contains(result.Files, f => f.Name == "model.safetensors" && f.VerifiedBy.Contains("X-Linked-Etag"));
        Assert.Equal(hub.Files["model.safetensors"], File.ReadAllBytes(Path.Combine(dir, "tiny", "model.safetensors")));
        var cdnGet = Assert.Single(hub.Api.Requests, r => r.Method == "GET" && r.Path.StartsWith("/cdn/", StringComparison.Ordinal));
        Assert.Equal("Bearer tok", cdnGet.Header("Authorization"));
        Assert.Empty(hub.Cdn.Requests);
    }

    [Fact]
    public void ResumesWithARangeRequestAfterADroppedConnection()
    {
        using var hub = NewHub();
        long total = hub.Files["model.safetensors"].Length;
        long cut = total / 3;
        hub.DropOnce["model.safetensors"] = cut;
        string dir = TestCheckpoints.NewTempDir("hub-resume");
        Download(hub, dir);

        Assert.Equal(hub.Files["model.safetensors"], File.ReadAllBytes(Path.Combine(dir, "tiny", "model.safetensors")));
        var gets = hub.Cdn.Requests.Where(r => r.Method == "GET").ToList();
        Assert.Equal(2, gets.Count);
        Assert.Null(gets[0].Header("Range"));
        Assert.Equal($"bytes={cut}-", gets[1].Header("Range"));
    }

    [Fact]
    public void ResumesAPartialFileLeftByAnEarlierRunAndRestartsWhenTheServerIgnoresRange()
    {
        using var hub = NewHub();
        byte[] weights = hub.Files["model.safetensors"];
        string dir = TestCheckpoints.NewTempDir("hub-resume2");
        string staging = Downloader.StagingDirectory(Path.Combine(dir, "tiny"));
        Directory.CreateDirectory(staging);
        File.WriteAllBytes(Path.Combine(staging, "model.safetensors.incomplete"), weights[..1000]);
        Download(hub, dir);
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(dir, "tiny", "model.safetensors")));
        var get = Assert.Single(hub.Cdn.Requests, r => r.Method == "GET");
        Assert.Equal("bytes=1000-", get.Header("Range"));

        // Same situation, but the server answers 200 with the whole file: the download restarts from 0.
        using var hub2 = NewHub();
        hub2.IgnoreRange = true;
        string dir2 = TestCheckpoints.NewTempDir("hub-norange");
        string staging2 = Downloader.StagingDirectory(Path.Combine(dir2, "tiny"));
        Directory.CreateDirectory(staging2);
        File.WriteAllBytes(Path.Combine(staging2, "model.safetensors.incomplete"), weights[..1000]);
        Download(hub2, dir2);
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(dir2, "tiny", "model.safetensors")));
    }

    [Fact]
    public void ShaMismatchLeavesNothingInTheModelFolderAndNamesFileAndHashes()
    {
        using var hub = NewHub();
        byte[] bad = (byte[])hub.Files["model.safetensors"].Clone();
        bad[^1] ^= 0x5A;
        hub.Corrupt["model.safetensors"] = bad;
        string dir = TestCheckpoints.NewTempDir("hub-bad");
        var e = Assert.IsType<HubHashMismatchException>(DownloadFails(hub, dir));

        string expected = FakeHub.Sha256(hub.Files["model.safetensors"]), actual = FakeHub.Sha256(bad);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.Contains(actual, e.Message);
        Assert.Equal(expected, e.Expected);
        Assert.Equal(actual, e.Actual);
        string target = Path.Combine(dir, "tiny");
        Assert.False(Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any(), "the model folder received files");
        Assert.Empty(Directory.GetFiles(dir, "*.incomplete", SearchOption.AllDirectories));
        Assert.Empty(Directory.GetFiles(dir, "model.safetensors", SearchOption.AllDirectories));

        // Through the CLI: exit code 2 and one line naming the file and both hashes.
        var (code, _, err) = Cli(hub, "download", hub.Repo, "--dir", TestCheckpoints.NewTempDir("hub-bad-cli"));
        Assert.Equal(2, code);
        Assert.Contains($"model.safetensors: sha256 mismatch: expected {expected}", err);
        Assert.Contains(actual, err);
    }

    [Fact]
    public void NotFoundUnauthorizedAndOfflineExplainHowToPlaceFilesByHand()
    {
        using var hub = NewHub();
        string dir = TestCheckpoints.NewTempDir("hub-err");
        string target = Path.Combine(dir, "tiny");

        using (var client = new HubClient(hub.Options()))
        {
            var t = new Downloader(client).DownloadAsync(new DownloadRequest { Repo = "test-org/missing", Name = "tiny", Directory = dir });
            var e404 = Assert.IsType<HubException>(Assert.Throws<AggregateException>(() => t.Wait(Limit)).InnerException);
            Assert.Equal(404, e404.StatusCode);
            Assert.Contains("repository not found", e404.Message);
            Assert.Contains("test-org/missing", e404.Message);
            Assert.Contains("place the files by hand", e404.Message);
            Assert.Contains("config.json", e404.Message);
            Assert.Contains("model.safetensors", e404.Message);
            Assert.Contains(target, e404.Message);
        }

        hub.RequiredToken = "right";
        var e401 = DownloadFails(hub, dir);
        Assert.Equal(401, e401.StatusCode);
        Assert.Contains("HF_TOKEN", e401.Message);
        Assert.Contains("place the files by hand", e401.Message);
        var wrong = DownloadFails(hub, dir, token: "wrong");
        Assert.Contains("token in HF_TOKEN was rejected", wrong.Message);
        hub.RequiredToken = null;

        // generation_config.json is taken when the repository has it; an entry without a revision is fine.
        var lk = new ModelLockEntry("tiny", hub.Repo, null, new Dictionary<string, LockedFile>());
        hub.Files.Remove("merges.txt");
        hub.Files["generation_config.json"] = Encoding.UTF8.GetBytes("{}");
        Assert.Contains(Download(hub, TestCheckpoints.NewTempDir("hub-gen"), lk: lk).Files, f => f.Name == "generation_config.json");

        // Nothing listening: an offline message with the same advice.
        int port;
        using (var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            l.Start();
            port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        }
        using var offline = new HubClient(hub.Options() with { Endpoint = $"http://127.0.0.1:{port}" });
        var t2 = new Downloader(offline).DownloadAsync(new DownloadRequest { Repo = hub.Repo, Name = "tiny", Directory = dir });
        var eoff = Assert.IsType<HubException>(Assert.Throws<AggregateException>(() => t2.Wait(Limit)).InnerException);
        Assert.Equal(HubErrorKind.Offline, eoff.Kind);
        Assert.Contains("cannot reach", eoff.Message);
        Assert.Contains("place the files by hand", eoff.Message);
        Assert.False(Directory.Exists(target));
    }

    [Fact]
    public void UpdateLockRecordsRevisionSizesAndHashesAndTheLockIsThenEnforced()
    {
        using var hub = NewHub();
        string work = TestCheckpoints.NewTempDir("hub-lock");
        string lockPath = Path.Combine(work, "models.lock.json");
        var (code, stdout, err) = Cli(hub, "download", hub.Repo, "--dir", Path.Combine(work, "models"), "--update-lock", "--lock", lockPath);
        Assert.True(code == 0, err);
        Assert.Contains("model.safetensors", stdout);

        var lk = ModelLock.Load(lockPath);
        var entry = Assert.Single(lk.Entries);
        Assert.Equal("tiny-gpt2", entry.Name);
        Assert.Equal(hub.Repo, entry.Repo);
        Assert.Equal(FakeHub.Commit, entry.Revision);
        string[] files = ["config.json", "merges.txt", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json"];
        Assert.Equal(files, entry.Files.Keys.Order(StringComparer.Ordinal).ToArray());
        foreach (var f in files)
        {
            Assert.Equal(hub.Files[f].Length, entry.Files[f].Size);
            Assert.Equal(FakeHub.Sha256(hub.Files[f]), entry.Files[f].Sha256);
            Assert.False(string.IsNullOrEmpty(entry.Files[f].Source));
        }
        Assert.Empty(Directory.GetFiles(work, "*.tmp", SearchOption.AllDirectories));

        // The lock is enforced for a file the hub publishes no sha256 for: tamper with config.json's pinned hash.
        var root = JsonNode.Parse(File.ReadAllText(lockPath))!;
        root["models"]!["tiny-gpt2"]!["files"]!["config.json"]!["sha256"] = new string('a', 64);
        File.WriteAllText(lockPath, root.ToJsonString());
        var (code2, _, err2) = Cli(hub, "download", "tiny-gpt2", "--dir", Path.Combine(work, "models2"), "--lock", lockPath);
        Assert.Equal(2, code2);
        Assert.Contains($"config.json: sha256 mismatch: expected {new string('a', 64)}", err2);
        Assert.Contains("tiny-gpt2 in the lock", err2);
        Assert.False(File.Exists(Path.Combine(work, "models2", "tiny-gpt2", "config.json")));

        // --update-lock trusts the hub: it downloads, reports the difference and repairs the lock.
        var (code3, _, err3) = Cli(hub, "download", "tiny-gpt2", "--dir", Path.Combine(work, "models3"), "--lock", lockPath, "--update-lock");
        Assert.True(code3 == 0, err3);
        Assert.Contains($"config.json: the lock had {hub.Files["config.json"].Length} bytes, sha256 {new string('a', 64)}", err3);
        Assert.Equal(FakeHub.Sha256(hub.Files["config.json"]), ModelLock.Load(lockPath).Find("tiny-gpt2")!.Files["config.json"].Sha256);
    }

    [Fact]
    public void ShardedModelDownloadsIndexAndShardsAndOpens()
    {
        using var hub = NewHub(sharded: true);
        Assert.DoesNotContain("model.safetensors", hub.Files.Keys);
        string dir = TestCheckpoints.NewTempDir("hub-shards");
        var result = Download(hub, dir);
        string target = Path.Combine(dir, "tiny");
        string[] shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
        foreach (var s in shards.Append("model.safetensors.index.json"))
            Assert.Equal(hub.Files[s], File.ReadAllBytes(Path.Combine(target, s)));
        Assert.Equal(2, hub.Cdn.Requests.Count(r => r.Method == "GET"));
        using var ck = Gpt2Checkpoint.Open(target);
        using var reference = Gpt2Checkpoint.Open(TestCheckpoints.Get("hub-sharded", options: new MakeCheckpointOptions { Seed = 5, Shards = 2 }));
        Assert.Equal(reference.Store.Entries.Count(), ck.Store.Entries.Count());
        Assert.Equal(reference.Config, ck.Config);
    }

    [Fact]
    public void LockFileValidationNamesTheBadField()
    {
        string dir = TestCheckpoints.NewTempDir("hub-lockbad");
        string p = Path.Combine(dir, "models.lock.json");
        File.WriteAllText(p, "{\"version\":1,\"models\":{\"gpt2\":{\"repo\":\"openai-community/gpt2\",\"revision\":\"main\",\"files\":{}}}}");
        var e = Assert.Throws<FormatException>(() => ModelLock.Load(p));
        Assert.Contains("models.gpt2.revision", e.Message);
        File.WriteAllText(p, "{\"version\":1,\"models\":{\"gpt2\":{\"repo\":\"openai-community/gpt2\",\"revision\":null,\"files\":{\"model.safetensors\":{\"size\":1,\"sha256\":\"xyz\"}}}}}");
        Assert.Contains("sha256", Assert.Throws<FormatException>(() => ModelLock.Load(p)).Message);
    }

    [Fact]
    public void TheRepositoryLockParsesAndNamesTheFiveModels()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, ModelLock.DefaultFileName))) dir = Path.GetDirectoryName(dir);
        Assert.NotNull(dir);
        var lk = ModelLock.Load(Path.Combine(dir!, ModelLock.DefaultFileName));
        foreach (var (name, repo) in ModelLock.KnownRepos)
            Assert.Equal(repo, lk.Find(name)?.Repo);
    }
}
