using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using System.Text.Json;
using TorchSharp;

namespace GaugeTorch.SafeTensors;

/// <summary>Name, dtype and shape of a tensor to be written.</summary>
public sealed record TensorSpec(string Name, DType DType, long[] Shape)
{
    public long ByteLength => DType.Size() * Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// Writes one safetensors file deterministically: names sorted (ordinal), data laid out in that order, header
/// padded with spaces to a multiple of 8 bytes, <c>__metadata__</c> sorted. The file is built under a temporary
/// name beside the target (<see cref="TempFiles"/>: removed on SIGINT/SIGTERM, and by a later run if this process
/// dies) and renamed into place on <see cref="Commit"/>; disposing without committing deletes it. The target's
/// directory must exist.
/// Tensors may be written in any order (each lands at its precomputed offset), so a layerwise producer can
/// stream a checkpoint of any size.
/// </summary>
public sealed class SafeTensorWriter : IDisposable
{
    private readonly FileStream _stream;
    private readonly Dictionary<string, (TensorSpec Spec, long Offset)> _layout;
    private readonly HashSet<string> _written = new(StringComparer.Ordinal);
    private readonly string _tempPath;
    private bool _done;

    public string Path { get; }

    private SafeTensorWriter(string path, string tempPath, FileStream stream, Dictionary<string, (TensorSpec, long)> layout)
    {
        Path = path;
        _tempPath = tempPath;
        _stream = stream;
        _layout = layout;
    }

    /// <param name="path">Target file.</param>
    /// <param name="specs">Every tensor the file will hold.</param>
    /// <param name="metadata">String metadata (may be null).</param>
    /// <param name="protectedPaths">Input files that must never be overwritten (compared after resolving links).</param>
    public static SafeTensorWriter Create(string path, IEnumerable<TensorSpec> specs, IReadOnlyDictionary<string, string>? metadata, IEnumerable<string>? protectedPaths = null)
    {
        string full = System.IO.Path.GetFullPath(path);
        OutputGuard.RefuseToOverwrite(full, protectedPaths);
        var sorted = specs.OrderBy(s => s.Name, StringComparer.Ordinal).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if (sorted[i].Name == sorted[i - 1].Name) throw new ArgumentException($"{full}: duplicate tensor name '{sorted[i].Name}'");
        if (sorted.Any(s => s.Name == "__metadata__")) throw new ArgumentException($"{full}: '__metadata__' is reserved");

        var header = new MemoryStream();
        var layout = new Dictionary<string, (TensorSpec, long)>(StringComparer.Ordinal);
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata.OrderBy(k => k.Key, StringComparer.Ordinal)) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var s in sorted)
            {
                w.WriteStartObject(s.Name);
                w.WriteString("dtype", s.DType.Name());
                w.WriteStartArray("shape");
                foreach (long d in s.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + s.ByteLength);
                w.WriteEndArray();
                w.WriteEndObject();
                layout[s.Name] = (s, offset);
                offset += s.ByteLength;
            }
            w.WriteEndObject();
        }
        int pad = (int)((8 - header.Length % 8) % 8);
        for (int i = 0; i < pad; i++) header.WriteByte((byte)' ');
        long headerLen = header.Length;
        foreach (var k in layout.Keys.ToList()) layout[k] = (layout[k].Item1, layout[k].Item2 + 8 + headerLen);

        // A registered temporary beside the target (deleted on SIGINT/SIGTERM); the directory must already exist.
        string temp = TempFiles.NewPath(full);
        FileStream fs;
        try
        {
            fs = new FileStream(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
        }
        catch
        {
            TempFiles.Release(temp);
            throw;
        }
        try
        {
            TestHooks.Pause();
            long total = 8 + headerLen + sorted.Sum(s => s.ByteLength);
            fs.SetLength(total);
            fs.Write(BitConverter.GetBytes((ulong)headerLen));
            fs.Write(header.GetBuffer(), 0, (int)headerLen);
        }
        catch
        {
            fs.Dispose();
            TempFiles.Delete(temp);
            throw;
        }
        return new SafeTensorWriter(full, temp, fs, layout);
    }

    /// <summary>Writes a tensor's data; it is converted to the declared dtype and made contiguous on the CPU.</summary>
    public void Write(string name, torch.Tensor tensor)
    {
        if (!_layout.TryGetValue(name, out var slot)) throw new ArgumentException($"{Path}: tensor '{name}' was not declared");
        if (!_written.Add(name)) throw new ArgumentException($"{Path}: tensor '{name}' written twice");
        var want = slot.Spec.Shape;
        if (!tensor.shape.SequenceEqual(want))
            throw new ArgumentException($"{Path}: tensor '{name}' has shape [{string.Join(", ", tensor.shape)}], declared [{string.Join(", ", want)}]");
        using var scope = torch.NewDisposeScope();
        var t = tensor.to(slot.Spec.DType.ToScalarType()).cpu().contiguous();
        WriteRaw(slot.Offset, NativeTensorAccess.DataPointer(t), slot.Spec.ByteLength);
    }

    /// <summary>
    /// Marks a declared tensor as written and returns the file offset of its data, for a later
    /// <see cref="WriteRange"/> (possibly from another thread). The caller must pass data of the declared dtype and shape.
    /// </summary>
    public long Claim(string name, DType dtype, long[] shape)
    {
        if (!_layout.TryGetValue(name, out var slot)) throw new ArgumentException($"{Path}: tensor '{name}' was not declared");
        if (slot.Spec.DType != dtype || !slot.Spec.Shape.SequenceEqual(shape))
            throw new ArgumentException($"{Path}: tensor '{name}' is {dtype} [{string.Join(", ", shape)}], declared {slot.Spec.DType} [{string.Join(", ", slot.Spec.Shape)}]");
        if (!_written.Add(name)) throw new ArgumentException($"{Path}: tensor '{name}' written twice");
        return slot.Offset;
    }

    /// <summary>Absolute file offset of a declared tensor's data.</summary>
    public long DataOffset(string name) =>
        _layout.TryGetValue(name, out var slot) ? slot.Offset : throw new ArgumentException($"{Path}: tensor '{name}' was not declared");

    /// <summary>Declared byte length of a tensor.</summary>
    public long DataLength(string name) =>
        _layout.TryGetValue(name, out var slot) ? slot.Spec.ByteLength : throw new ArgumentException($"{Path}: tensor '{name}' was not declared");

    /// <summary>Alignment of direct (unbuffered) writes: file offsets, lengths and buffer addresses.</summary>
    public const int DirectAlignment = 4096;

    /// <summary>
    /// Writes a byte range of claimed tensors, [start, start + length), from <paramref name="src"/>. Where
    /// <paramref name="src"/> ≡ <paramref name="start"/> (mod <see cref="DirectAlignment"/>), the whole aligned pages
    /// inside the range go to disk with direct I/O (O_DIRECT: the device reads the buffer, no copy into the page
    /// cache, a fraction of the CPU time); the partial pages at both ends, and everything on file systems without
    /// O_DIRECT, use ordinary positional writes. No page is written both ways, so the two paths never overlap.
    /// Thread-safe (positional writes only). Set GAUGETORCH_NO_DIRECT_IO to always write through the page cache.
    /// </summary>
    public void WriteRange(long start, IntPtr src, long length)
    {
        const long a = DirectAlignment;
        long end = start + length;
        long lo = (start + a - 1) / a * a, hi = end / a * a;
        var direct = DirectHandle();
        if (direct is null || hi - lo < a || ((long)src - start) % a != 0)
        {
            WriteRaw(start, src, length, flush: false);
            return;
        }
        if (lo > start) WriteRaw(start, src, lo - start, flush: false);
        try
        {
            WriteDirect(direct, lo, src + (nint)(lo - start), hi - lo);
        }
        catch (IOException)
        {
            // The file system refused direct I/O after all: write through the page cache from now on.
            lock (_directGate) _directFailed = true;
            WriteRaw(lo, src + (nint)(lo - start), hi - lo, flush: false);
        }
        if (end > hi) WriteRaw(hi, src + (nint)(hi - start), end - hi, flush: false);
    }

    private static unsafe void WriteDirect(SafeFileHandle h, long offset, IntPtr src, long length)
    {
        const int chunk = 1 << 26;   // 64 MiB, a multiple of the alignment
        byte* p = (byte*)src;
        for (long done = 0; done < length; done += chunk)
        {
            int n = (int)Math.Min(chunk, length - done);
            RandomAccess.Write(h, new ReadOnlySpan<byte>(p + done, n), offset + done);
        }
    }

    private readonly object _directGate = new();
    private SafeFileHandle? _direct;
    private bool _directTried, _directFailed;

    [DllImport("libc.so.6", EntryPoint = "open", SetLastError = true)]
    private static extern int OpenNative([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    private SafeFileHandle? DirectHandle()
    {
        lock (_directGate)
        {
            if (_directFailed) return null;
            if (!_directTried)
            {
                _directTried = true;
                if (OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("GAUGETORCH_NO_DIRECT_IO") is not { Length: > 0 })
                {
                    const int O_WRONLY = 0x1, O_DIRECT = 0x4000, O_CLOEXEC = 0x80000;
                    try
                    {
                        int fd = OpenNative(_tempPath, O_WRONLY | O_DIRECT | O_CLOEXEC);
                        if (fd >= 0) _direct = new SafeFileHandle(fd, ownsHandle: true);
                    }
                    catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
                }
            }
            return _direct;
        }
    }

    private void CloseDirect()
    {
        lock (_directGate)
        {
            _direct?.Dispose();
            _direct = null;
            _directFailed = true;
        }
    }

    /// <summary>Writes raw little-endian bytes for a declared tensor.</summary>
    public void WriteBytes(string name, ReadOnlySpan<byte> data)
    {
        if (!_layout.TryGetValue(name, out var slot)) throw new ArgumentException($"{Path}: tensor '{name}' was not declared");
        if (data.Length != slot.Spec.ByteLength) throw new ArgumentException($"{Path}: tensor '{name}' needs {slot.Spec.ByteLength} bytes, got {data.Length}");
        if (!_written.Add(name)) throw new ArgumentException($"{Path}: tensor '{name}' written twice");
        _stream.Flush();
        RandomAccess.Write(_stream.SafeFileHandle, data, slot.Offset);
    }

    /// <summary>Positional writes (pwrite) straight from native memory, in chunks of 16 MiB (a span is int-sized).</summary>
    private unsafe void WriteRaw(long offset, IntPtr src, long length, bool flush = true)
    {
        if (flush) _stream.Flush();
        const int chunk = 1 << 24;
        byte* p = (byte*)src;
        for (long done = 0; done < length; done += chunk)
        {
            int n = (int)Math.Min(chunk, length - done);
            RandomAccess.Write(_stream.SafeFileHandle, new ReadOnlySpan<byte>(p + done, n), offset + done);
        }
    }

    /// <summary>Checks that every declared tensor was written, flushes to disk and renames into place.</summary>
    public void Commit()
    {
        var missing = _layout.Keys.Where(k => !_written.Contains(k)).ToList();
        if (missing.Count > 0) throw new InvalidOperationException($"{Path}: tensors never written: {string.Join(", ", missing.Take(10))}");
        CloseDirect();
        _stream.Flush(flushToDisk: true);   // data written directly is on the device; this flushes the rest and the metadata
        _stream.Dispose();
        TempFiles.Commit(_tempPath, Path, overwrite: true);
        _done = true;
    }

    public void Dispose()
    {
        if (_done) return;
        CloseDirect();
        _stream.Dispose();
        TempFiles.Delete(_tempPath);
        _done = true;
    }

    /// <summary>Writes a whole set of tensors in one call.</summary>
    public static void WriteAll(string path, IReadOnlyList<KeyValuePair<string, torch.Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata, IEnumerable<string>? protectedPaths = null)
    {
        var specs = tensors.Select(kv => new TensorSpec(kv.Key, DTypes.FromScalarType(kv.Value.dtype), kv.Value.shape.ToArray()));
        using var w = Create(path, specs, metadata, protectedPaths);
        foreach (var kv in tensors) w.Write(kv.Key, kv.Value);
        w.Commit();
    }
}
