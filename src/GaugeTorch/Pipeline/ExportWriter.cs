using System.Text.Json.Nodes;
using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Pipeline;

/// <summary>
/// The output side of the streaming pipeline: a HuggingFace model directory assembled in a hidden, registered temporary
/// folder beside the target (<see cref="TempFiles"/>) and renamed into place by <see cref="Commit"/> (a failure, a
/// signal, or disposing without committing leaves nothing; the target's parent must exist), holding one model.safetensors with the declared tensors. Layers are staged: each layer's tensors
/// are converted into one of two reused aligned buffers laid out like their bytes in the file, and a background task
/// writes the buffer (whole pages with direct I/O) while the next layer is computed; writes run one at a time
/// (concurrent buffered writes to one file contend on the inode lock; measured for canonicalize-checkpoint). Inputs
/// are never overwritten: the target may not be the input's directory, and the writer refuses every input file.
/// </summary>
public sealed class ExportWriter : IDisposable
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

    private ExportWriter(Checkpoint input, string target, string temp, SafeTensorWriter writer, IReadOnlyList<TensorSpec> specs)
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
    public static ExportWriter Create(Checkpoint input, string outDir, IReadOnlyList<TensorSpec> specs, IReadOnlyDictionary<string, string> metadata)
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
            return new ExportWriter(input, target, temp, writer, specs);
        }
        catch
        {
            TempFiles.Delete(temp);
            throw;
        }
    }

    /// <summary>Writes one tensor now (converted to its declared dtype).</summary>
    public void Write(string name, Tensor t) => _writer.Write(name, t);

    /// <summary>Writes a tensor's raw bytes (a buffer copied byte for byte).</summary>
    public void WriteBytes(string name, ReadOnlySpan<byte> bytes) => _writer.WriteBytes(name, bytes);

    /// <summary>
    /// Stages one layer's tensors (any dtype; converted to each one's declared dtype exactly as <see cref="Write"/>
    /// would) and queues their write; returns once the tensors have been copied, so the caller may free them.
    /// </summary>
    public void StageLayer(IReadOnlyList<(string Name, Tensor Tensor)> tensors) => Stage(tensors, [], null);

    /// <summary>
    /// Stages a group of tensors and queues their write: <paramref name="tensors"/> are converted to their declared
    /// dtypes as in <see cref="StageLayer"/>; each of <paramref name="filled"/> gets a slot of its declared dtype and
    /// byte length that <paramref name="fill"/> writes in place (given the slot of a name), so that a kernel reading
    /// the input's memory map can produce the biggest tensors without a float64 tensor of them (canonicalize-checkpoint
    /// on LLaMA-family models). Returns once everything is in the staging buffer, so the caller may free the tensors
    /// and the mapped sources. <paramref name="reuse"/>: one of two buffers reused group after group (layers);
    /// otherwise a buffer of its own (a one-off group such as a 1 GB embedding), freed once written. Every group is
    /// written by a background task, one write at a time, in staging order.
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
                foreach (var (name, _) in filled) Declared(name);
                fill?.Invoke(staging.Slot);
                foreach (var (name, shape) in filled) _writer.Claim(name, Declared(name), shape);
            }
        }
        catch
        {
            if (!reuse) staging.Dispose();
            throw;
        }
        var own = staging;
        // Writes run one at a time (concurrent writes to one file contend on the inode lock).
        _last = _last.ContinueWith(_ =>
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
