using System.CommandLine;
using GaugeTorch.Hub;
using Spectre.Console;

namespace GaugeTorch.Cli.Commands;

public static class DownloadCommand
{
    /// <param name="options">Hub settings; default <see cref="HubOptions.FromEnvironment"/> (HF_ENDPOINT, HF_TOKEN). Tests pass their own.</param>
    public static Command Create(Func<HubOptions>? options = null)
    {
        var model = new Argument<string>("NAME")
        {
            Description = "A model name from the lock (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2) or a hub repo id (owner/name).",
        };
        var revision = new Option<string?>("--revision") { Description = "Branch, tag or commit to download. Default: the lock's pinned commit, else main." };
        var dir = new Option<string>("--dir") { Description = "Parent folder; the model lands in DIR/NAME (DIR is created if missing, and the output says so).", DefaultValueFactory = _ => "models" };
        var updateLock = new Option<bool>("--update-lock") { Description = "Record the downloaded revision and every file's size and sha256 in the --lock file (created if missing)." };
        var lockPath = new Option<string?>("--lock")
        {
            Description = $"Lock file to pin and verify against. Default: the {ModelLock.DefaultFileName} built into gaugetorch (the repository's at build time), " +
                          "the same from any working directory.",
        };
        var cmd = new Command("download",
            "Download a GPT-2 checkpoint from the HuggingFace hub (HF_ENDPOINT, HF_TOKEN) into DIR/NAME: config.json, safetensors weights " +
            "and tokenizer files, resumable, sha256-verified against models.lock.json and the hub before anything is placed.")
        { model, revision, dir, updateLock, lockPath };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string nameArg = r.GetValue(model)!.Trim();
            bool update = r.GetValue(updateLock);
            string? explicitLock = r.GetValue(lockPath);
            if (update && explicitLock is null)
                throw new ArgumentException($"--update-lock needs --lock FILE: the built-in lock cannot be changed (in the repository: --lock {ModelLock.DefaultFileName})");
            string? lockFile = explicitLock is null ? null : Path.GetFullPath(explicitLock);
            ModelLock? lk;
            if (lockFile is null) lk = ModelLock.BuiltIn();
            else if (File.Exists(lockFile)) lk = ModelLock.Load(lockFile);
            else if (!update) throw new FileNotFoundException($"--lock: {lockFile} not found (use --update-lock to create it)");
            else
            {
                OutputPaths.File("--lock", lockFile);
                lk = null;
            }

            var entry = lk?.Find(nameArg);
            string repo, name;
            if (nameArg.Contains('/'))
            {
                repo = nameArg;
                name = entry?.Name ?? nameArg[(nameArg.LastIndexOf('/') + 1)..];
            }
            else
            {
                name = nameArg;
                repo = entry?.Repo ?? (ModelLock.KnownRepos.TryGetValue(nameArg, out var known) ? known
                    : throw new ArgumentException($"NAME: '{nameArg}' is not in {(lk is null ? "the built-in list" : lk.Path)}; give a hub repo id (owner/name) " +
                                                  $"or one of: {string.Join(", ", (lk?.Entries.Select(e => e.Name) ?? ModelLock.KnownRepos.Keys).Distinct())}"));
            }
            HubClient.ValidateRepoId(repo);
            string? rev = r.GetValue(revision);
            // Which lock pins what: said before anything is fetched (the lock used to be read only from ./, silently).
            string lockName = lk?.Path ?? $"{lockFile} (new)";
            string pin = rev is not null ? $"--revision {rev} (given; the lock's pin {(entry?.Revision ?? "none")} is not used)"
                : update ? $"{entry?.Revision ?? "main"} (--update-lock: the hub's files are recorded, not checked against the lock)"
                : entry?.Revision is string pinned ? $"{pinned} (pinned by the lock)"
                : entry is not null ? "main (the lock names the model but pins no revision yet)"
                : "main (not in the lock: nothing pinned)";
            Console.Error.WriteLine($"lock: {lockName}; {repo} at {pin}");
            string parentDir = Path.GetFullPath(r.GetValue(dir)!);
            if (File.Exists(parentDir)) throw new IOException($"--dir: {parentDir} is a file");
            if (!Directory.Exists(parentDir))
            {
                OutputPaths.Directory("--dir", parentDir); // its own parent must exist and be writable
                Directory.CreateDirectory(parentDir);
                Console.Error.WriteLine($"created {parentDir} (--dir)");
            }

            var hubOptions = (options ?? HubOptions.FromEnvironment)();
            using var client = new HubClient(hubOptions);
            // SIGINT/SIGTERM (SignalCleanup) exit at once; the partial download is resume state, kept on purpose.
            string staging = Downloader.StagingDirectory(Path.Combine(parentDir, name));
            SignalCleanup.KeptNote = () => Directory.Exists(staging) && Directory.EnumerateFileSystemEntries(staging).Any()
                ? $"the partial download in {staging} is kept and the next run resumes from it" : null;
            DownloadResult result;
            try
            {
                // --update-lock makes the hub's metadata the authority: the locked revision is kept (unless --revision moves it),
                // the locked hashes are not enforced but compared below.
                var request = new DownloadRequest
                {
                    Repo = repo, Name = name, Directory = parentDir,
                    Revision = rev ?? (update ? entry?.Revision : null),
                    Lock = update ? null : entry,
                };
                result = RunWithProgress(client, request, CancellationToken.None);
            }
            finally
            {
                SignalCleanup.KeptNote = null;
            }

            var table = new Table().Border(TableBorder.Rounded).Title($"{result.Repo} @ {result.Commit}")
                .AddColumn("file").AddColumn(new TableColumn("bytes").RightAligned()).AddColumn(new TableColumn("sha256 (start)").NoWrap()).AddColumn("checked against");
            foreach (var f in result.Files)
            {
                string check = f.Check switch
                {
                    HashCheck.Lock => "lock sha256",
                    HashCheck.HubLfsSha256 => "hub LFS sha256",
                    HashCheck.HubGitBlob => "hub git blob id",
                    _ => "[yellow]nothing published[/]",
                };
                table.AddRow(Markup.Escape(f.Name), f.Size.ToString("N0"), f.Sha256[..16] + "…", check + (f.AlreadyPresent ? " (already here)" : ""));
            }
            AnsiConsole.Write(table);

            if (update)
            {
                if (entry is not null)
                    foreach (var f in result.Files)
                        if (entry.Files.TryGetValue(f.Name, out var old) && ((old.Sha256 is not null && old.Sha256 != f.Sha256) || (old.Size is not null && old.Size != f.Size)))
                            Console.Error.WriteLine($"{f.Name}: the lock had {old.Size?.ToString() ?? "?"} bytes, sha256 {old.Sha256 ?? "null"}; " +
                                                    $"the hub served {f.Size} bytes, sha256 {f.Sha256} at {result.Commit} (replaced)");
                lk ??= ModelLock.Empty(lockFile!);
                lk.Update(name, repo, result.Commit, result.Files, DateTimeOffset.UtcNow);
                lk.Save();
                Console.Error.WriteLine($"updated {lockFile}: {name} = {repo} @ {result.Commit}, {result.Files.Count} files");
            }
            Console.Error.WriteLine($"model ready in {result.TargetDirectory}: {result.Repo} @ {result.Commit}, {(entry?.Revision is not null && !update && rev is null ? $"pinned by {lk!.Path}" : "not pinned by a lock")} " +
                                    $"(use it as MODEL, e.g. gaugetorch inspect {Path.GetRelativePath(Environment.CurrentDirectory, result.TargetDirectory)})");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static DownloadResult RunWithProgress(HubClient client, DownloadRequest request, CancellationToken ct)
    {
        if (Console.IsErrorRedirected)
            return new Downloader(client, new LineReporter()).DownloadAsync(request, ct).GetAwaiter().GetResult();
        DownloadResult? result = null;
        CliCommon.StdErr.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(),
                     new TransferSpeedColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                result = await new Downloader(client, new SpectreReporter(ctx)).DownloadAsync(request, ct).ConfigureAwait(false);
            }).GetAwaiter().GetResult();
        return result!;
    }

    /// <summary>Progress bars with rate and remaining time, one per file.</summary>
    private sealed class SpectreReporter(ProgressContext ctx) : IDownloadReporter
    {
        public void Info(string line) => CliCommon.StdErr.MarkupLine(Markup.Escape(line));

        public IFileProgress BeginFile(string file, long? size, long alreadyOnDisk)
        {
            var task = ctx.AddTask(Markup.Escape(file), maxValue: Math.Max(1, size ?? 1));
            if (size is null) task.IsIndeterminate = true;
            task.Value = alreadyOnDisk;
            return new TaskProgress(task, size);
        }

        private sealed class TaskProgress(ProgressTask task, long? size) : IFileProgress
        {
            public void Report(long bytesOnDisk)
            {
                if (size is null && bytesOnDisk > task.MaxValue) task.MaxValue = bytesOnDisk;
                task.Value = bytesOnDisk;
            }

            public void Complete()
            {
                task.IsIndeterminate = false;
                task.Value = task.MaxValue;
                task.StopTask();
            }
        }
    }

    /// <summary>Plain lines when stderr is not a terminal (logs, CI).</summary>
    private sealed class LineReporter : IDownloadReporter
    {
        public void Info(string line) => Console.Error.WriteLine(line);

        public IFileProgress BeginFile(string file, long? size, long alreadyOnDisk)
        {
            Console.Error.WriteLine(alreadyOnDisk > 0 ? $"{file}: resuming at byte {alreadyOnDisk} of {size?.ToString() ?? "?"}" : $"{file}: {size?.ToString() ?? "?"} bytes");
            return new Line(file, size, alreadyOnDisk);
        }

        /// <summary>One line per tenth of a large file, with the rate, so logs show progress without a terminal.</summary>
        private sealed class Line(string file, long? size, long start) : IFileProgress
        {
            private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
            private readonly long _start = start;
            private long _bytes = start;
            private int _tenth = size is long s && s > 0 ? (int)(10 * start / s) : 0;

            public void Report(long bytesOnDisk)
            {
                _bytes = bytesOnDisk;
                if (size is not long s || s < 50_000_000) return;
                int tenth = (int)(10 * bytesOnDisk / s);
                if (tenth <= _tenth || tenth >= 10) return;
                _tenth = tenth;
                double rate = (bytesOnDisk - _start) / Math.Max(0.001, _clock.Elapsed.TotalSeconds);
                Console.Error.WriteLine($"{file}: {tenth * 10}% ({bytesOnDisk / 1e6:F0} of {s / 1e6:F0} MB, {rate / 1e6:F1} MB/s, about {(s - bytesOnDisk) / Math.Max(1, rate):F0} s left)");
            }

            public void Complete() => Console.Error.WriteLine($"{file}: received ({_bytes} bytes on disk, {_clock.Elapsed.TotalSeconds:F1} s)");
        }
    }
}
