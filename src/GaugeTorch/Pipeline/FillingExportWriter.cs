using System.Text.Json.Nodes;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Pipeline;

/// <summary>
/// <see cref="ExportWriter"/> (same directory handling, guards, atomic commit and staged direct-I/O writes) for callers
/// that produce some tensors straight into the staging buffer: <see cref="Stage"/> takes, besides tensors to convert,
/// tensors that a callback fills in place in their declared dtype (a kernel reading the input's memory map), so the
/// biggest tensors never exist as float64 tensors. Every staged group, including a one-off one such as a 1 GB
/// embedding, is written by a background task, one write at a time (concurrent writes to one file contend on the
/// inode lock, measured for canonicalize-checkpoint), while the caller computes the next group.
/// </summary>
public sealed class FillingExportWriter : IDisposable
{
    private readonly Checkpoint _input;
    private readonly string _target;
    private readonly string _temp;
    private readonly SafeTensorWriter _writer;
    private readonly Dictionary<string, DType> _declared;
    private readonly RangeStaging[] _staging = [new(), new()];
    private readonly Task?[] _writing = new Task?[2];
    private readonly List<Task> _tasks = [];
    private Task _last = Task.CompletedTask;
    private int _layers;
    private bool _committed;

    private FillingExportWriter(Checkpoint input, string target, string temp, SafeTensorWriter writer, IReadOnlyList<TensorSpec> specs)
    {
        _declared = specs.ToDictionary(s => s.Name, s => s.DType, StringComparer.Ordinal);
        _input = input;
        _target = target;
        _temp = temp;
        _writer = writer;
    }

    /// <summary>Output directory of the export (after <see cref="Commit"/>).</summary>
    public string Target => _target;

    /// <summary>Starts an export of <paramref name="input"/> into <paramref name="outDir"/> (which must not exist or be empty) holding <paramref name="specs"/>.</summary>
    public static FillingExportWriter Create(Checkpoint input, string outDir, IReadOnlyList<TensorSpec> specs, IReadOnlyDictionary<string, string> metadata)
    {
        string target = Path.GetFullPath(outDir).TrimEnd('/');
        OutputGuard.RefuseInputDirectory(target, input.Directory);
        if (File.Exists(target)) throw new IOException($"{target}: exists and is a file (the output must be a directory)");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"{target}: directory exists and is not empty (refusing to mix outputs)");
        foreach (var f in input.InputFiles)
            if (Path.GetFullPath(f).StartsWith(target + "/", StringComparison.Ordinal))
                throw new IOException($"{target}: contains the input file {f}");
        string temp = TempFiles.CreateDirectory(target);   // registered: removed on SIGINT/SIGTERM; the parent must exist
        try
        {
            var writer = SafeTensorWriter.Create(Path.Combine(temp, SafeTensorStore.SingleFileName), specs, metadata, input.InputFiles);
            return new FillingExportWriter(input, target, temp, writer, specs);
        }
        catch
        {
            TempFiles.Delete(temp);
            throw;
        }
    }

    /// <summary>Writes a tensor's raw bytes now (a buffer copied byte for byte); only before anything is staged.</summary>
    public void WriteBytes(string name, ReadOnlySpan<byte> bytes)
    {
        if (_tasks.Count > 0) throw new InvalidOperationException("WriteBytes after a staged write");
        _writer.WriteBytes(name, bytes);
    }

    /// <summary>
    /// Stages a group of tensors and queues their write: <paramref name="tensors"/> are converted to their declared
    /// dtypes exactly as <see cref="ExportWriter.StageLayer"/> converts them; each of <paramref name="filled"/> gets a
    /// slot of its declared dtype and byte length that <paramref name="fill"/> writes (given the slot of a name).
    /// Returns once everything is in the staging buffer, so the caller may free the tensors and the mapped sources.
    /// <paramref name="reuse"/>: one of two buffers reused group after group (layers); otherwise a buffer of its own,
    /// freed once written.
    /// </summary>
    public unsafe void Stage(IReadOnlyList<(string Name, Tensor Tensor)> tensors, IReadOnlyList<(string Name, long[] Shape)> filled,
        Action<Func<string, IntPtr>>? fill, bool reuse = true)
    {
        RangeStaging staging;
        int set = -1;
        if (reuse)
        {
            set = _layers++ % 2;
            staging = _staging[set];
            _writing[set]?.GetAwaiter().GetResult();          // this buffer's previous group is on disk
        }
        else staging = new RangeStaging();
        try
        {
            staging.Plan(tensors.Select(p => (p.Name, _writer)).Concat(filled.Select(p => (p.Name, _writer))));
            using (var scope = NewDisposeScope())
            {
                foreach (var (name, t) in tensors)
                {
                    var dtype = Declared(name);
                    var shape = t.shape;
                    if (dtype is DType.F32 or DType.F64 && t.dtype == ScalarType.Float64)
                    {
                        var t64 = t.contiguous();
                        Conversions.FromFloat64(NativeTensorAccess.DataPointer(t64), t64.numel(), dtype, staging.Slot(name));
                    }
                    else
                    {
                        var c = t.to(dtype.ToScalarType()).contiguous();
                        long bytes = NativeTensorAccess.ByteLength(c);
                        Buffer.MemoryCopy((void*)NativeTensorAccess.DataPointer(c), (void*)staging.Slot(name), bytes, bytes);
                    }
                    _writer.Claim(name, dtype, shape);
                }
            }
            if (filled.Count > 0)
            {
                foreach (var (name, shape) in filled) Declared(name);
                fill?.Invoke(staging.Slot);
                foreach (var (name, shape) in filled) _writer.Claim(name, Declared(name), shape);
            }
        }
        catch
        {
            if (!reuse) staging.Dispose();
            throw;
        }
        var previous = _last;
        var own = staging;
        _last = previous.ContinueWith(_ =>
        {
            try { own.WriteAll(); }
            finally { if (!reuse) own.Dispose(); }
        }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        _tasks.Add(_last);
        if (reuse) _writing[set] = _last;
    }

    private DType Declared(string name) =>
        _declared.TryGetValue(name, out var dt) ? dt : throw new ArgumentException($"{_writer.Path}: tensor '{name}' was not declared");

    private void WaitForWrites()
    {
        var pending = _tasks.ToArray();
        try { Task.WaitAll(pending); } catch (AggregateException) when (pending.Any(t => t.IsFaulted)) { }
    }

    /// <summary>Waits for the staged writes, commits the weights, writes config.json and copies the side files, then renames the directory into place.</summary>
    public void Commit(JsonObject config)
    {
        WaitForWrites();
        foreach (var t in _tasks) t.GetAwaiter().GetResult();   // surface a write error
        _writer.Commit();
        File.WriteAllText(Path.Combine(_temp, "config.json"), config.ToJsonString(new() { WriteIndented = true }));
        foreach (var side in _input.SideFiles()) File.Copy(side, Path.Combine(_temp, Path.GetFileName(side)));
        if (Directory.Exists(_target)) Directory.Delete(_target);   // empty (checked in Create)
        TempFiles.Commit(_temp, _target);
        _committed = true;
    }

    public void Dispose()
    {
        WaitForWrites();
        _writer.Dispose();
        foreach (var s in _staging) s.Dispose();
        if (!_committed) TempFiles.Delete(_temp);
    }
}
