using GaugeTorch.Architectures.Gpt2;

namespace GaugeTorch.Tests.Fixtures;

/// <summary>
/// Small random GPT-2 checkpoints made by <see cref="CheckpointMaker"/>, cached per process in a temp folder.
/// Every fixture is deterministic in its arguments.
/// </summary>
public static class TestCheckpoints
{
    private static readonly string Root = Path.Combine(Path.GetTempPath(), "gaugetorch-tests-" + Environment.ProcessId);
    private static readonly object Gate = new();

    /// <summary>A tiny config: L=2, d=32, h=4 (d_k=8), F=64, V=97, P=32.</summary>
    public static Gpt2Config Tiny => new() { NLayer = 2, NEmbd = 32, NHead = 4, NInner = 64, VocabSize = 97, NPositions = 32 };

    /// <summary>Makes (once per process) a checkpoint and returns its directory.</summary>
    public static string Get(string name, Gpt2Config? config = null, MakeCheckpointOptions? options = null)
    {
        lock (Gate)
        {
            string dir = Path.Combine(Root, name);
            Directory.CreateDirectory(Root); // outputs never create their parents
            if (!File.Exists(Path.Combine(dir, "config.json")))
                CheckpointMaker.Make(config ?? Tiny, dir, options ?? new MakeCheckpointOptions { Seed = 1 });
            return dir;
        }
    }

    /// <summary>A fresh empty directory for outputs.</summary>
    public static string NewTempDir(string hint = "out")
    {
        string dir = Path.Combine(Root, "tmp", hint + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }
}
