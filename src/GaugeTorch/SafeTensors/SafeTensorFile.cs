using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using TorchSharp;

namespace GaugeTorch.SafeTensors;

/// <summary>
/// A memory-mapped safetensors file. The header is parsed and checked strictly when the file is opened. Tensor
/// data is copied through short-lived views (<see cref="CopyRaw(TensorEntry, IntPtr)"/>), so only the tensor being
/// copied is resident in the process, or read in place through one whole-file view (<see cref="MappedPointer"/>),
/// whose pages a streaming reader gives back with <see cref="ReleaseMapped"/>.
/// </summary>
public sealed class SafeTensorFile : IDisposable
{
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly MemoryMappedFile? _map;
    private readonly Dictionary<string, TensorEntry> _byName;
    private readonly object _viewGate = new();
    private MemoryMappedViewAccessor? _wholeView;
    private unsafe byte* _wholeBase;

    public string Path { get; }
    public long FileLength { get; }
    public long DataStart { get; }
    public IReadOnlyList<TensorEntry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafeTensorFile(string path, long length, long dataStart, List<TensorEntry> entries, Dictionary<string, string> metadata, MemoryMappedFile? map)
    {
        Path = path;
        FileLength = length;
        DataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
        _map = map;
        _byName = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorEntry this[string name] =>
        _byName.TryGetValue(name, out var e) ? e : throw new SafeTensorsException(Path, name, "no such tensor in this file");

    public static SafeTensorFile Open(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full)) throw new SafeTensorsException(full, null, "file not found");
        try
        {
            return OpenChecked(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SafeTensorsException(full, null, $"cannot read the file ({e.Message})", e);
        }
    }

    private static SafeTensorFile OpenChecked(string full)
    {
        byte[] headerBytes;
        long length, headerLen;
        using (var fs = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            length = fs.Length;
            if (length < 8) throw new SafeTensorsException(full, null, $"file is {length} bytes, too short for the 8-byte header length");
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong n = BitConverter.ToUInt64(lenBytes);
            if (n > (ulong)MaxHeaderBytes) throw new SafeTensorsException(full, null, $"header length {n} exceeds the 100 MiB limit");
            if (8 + (long)n > length) throw new SafeTensorsException(full, null, $"header length {n} runs past the end of the {length}-byte file");
            headerLen = (long)n;
            headerBytes = new byte[headerLen];
            fs.ReadExactly(headerBytes);
        }
        long dataStart = 8 + headerLen;
        var (entries, metadata) = ParseHeader(full, headerBytes, dataStart, length - dataStart);
        MemoryMappedFile? map = length > dataStart
            ? MemoryMappedFile.CreateFromFile(new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read), null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false)
            : null;
        return new SafeTensorFile(full, length, dataStart, entries, metadata, map);
    }

    internal static (List<TensorEntry>, Dictionary<string, string>) ParseHeader(string file, byte[] header, long dataStart, long dataLength)
    {
        try
        {
            return ParseHeaderUnchecked(file, header, dataStart, dataLength);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or JsonException or OverflowException)
        {
            // Anything System.Text.Json throws on a malformed header (e.g. invalid UTF-8 inside a string) is a bad file,
            // never a crash.
            throw new SafeTensorsException(file, null, $"header is malformed ({e.Message})", e);
        }
    }

    private static (List<TensorEntry>, Dictionary<string, string>) ParseHeaderUnchecked(string file, byte[] header, long dataStart, long dataLength)
    {
        // System.Text.Json checks UTF-8 only when a string is decoded (and then throws InvalidOperationException).
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw new SafeTensorsException(file, null, "header is not valid UTF-8");
        JsonDocument doc;
        try
        {
            // Trailing spaces are the spec's padding.
            doc = JsonDocument.Parse(header.AsMemory(), new JsonDocumentOptions { AllowTrailingCommas = false, MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new SafeTensorsException(file, null, $"header is not valid JSON ({e.Message})");
        }
        catch (ArgumentException e)
        {
            throw new SafeTensorsException(file, null, $"header is not valid UTF-8 JSON ({e.Message})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsException(file, null, "header JSON is not an object");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var entries = new List<TensorEntry>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                string name = prop.Name;
                if (!seen.Add(name)) throw new SafeTensorsException(file, name, "duplicate name in header");
                if (name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new SafeTensorsException(file, null, "__metadata__ is not an object of strings");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new SafeTensorsException(file, null, $"__metadata__ value '{m.Name}' is not a string");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!))
                            throw new SafeTensorsException(file, null, $"__metadata__ has duplicate key '{m.Name}'");
                    }
                    continue;
                }
                entries.Add(ParseEntry(file, name, prop.Value, dataStart, dataLength));
            }
            CheckLayout(file, entries, dataStart, dataLength);
            return (entries, metadata);
        }
    }

    private static TensorEntry ParseEntry(string file, string name, JsonElement v, long dataStart, long dataLength)
    {
        if (v.ValueKind != JsonValueKind.Object) throw new SafeTensorsException(file, name, "entry is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new SafeTensorsException(file, name, "missing or non-string 'dtype'");
        string dts = dt.GetString()!;
        if (!DTypes.TryParse(dts, out var dtype)) throw new SafeTensorsException(file, name, $"unknown dtype '{dts}'");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new SafeTensorsException(file, name, "missing or non-array 'shape'");
        var shape = new List<long>();
        foreach (var s in sh.EnumerateArray())
        {
            if (s.ValueKind != JsonValueKind.Number || !s.TryGetInt64(out long dim) || dim < 0)
                throw new SafeTensorsException(file, name, $"shape entry '{s}' is not a non-negative integer");
            shape.Add(dim);
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new SafeTensorsException(file, name, "missing 'data_offsets' [begin, end]");
        var o = off.EnumerateArray().ToArray();
        if (o[0].ValueKind != JsonValueKind.Number || o[1].ValueKind != JsonValueKind.Number
            || !o[0].TryGetInt64(out long begin) || !o[1].TryGetInt64(out long end) || begin < 0 || end < 0)
            throw new SafeTensorsException(file, name, "data_offsets are not non-negative integers");
        if (begin > end) throw new SafeTensorsException(file, name, $"data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength) throw new SafeTensorsException(file, name, $"data_offsets [{begin}, {end}] lie outside the {dataLength}-byte data area");
        long expected;
        try
        {
            checked
            {
                expected = dtype.Size();
                foreach (long d in shape) expected *= d;
            }
        }
        catch (OverflowException)
        {
            throw new SafeTensorsException(file, name, "shape × dtype size overflows");
        }
        if (expected != end - begin)
            throw new SafeTensorsException(file, name, $"byte length {end - begin} disagrees with shape [{string.Join(", ", shape)}] × {dts} ({expected} bytes)");
        return new TensorEntry(name, dtype, shape.ToArray(), dataStart + begin, dataStart + end, file);
    }

    private static void CheckLayout(string file, List<TensorEntry> entries, long dataStart, long dataLength)
    {
        var sorted = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
        long cursor = dataStart;
        foreach (var e in sorted)
        {
            if (e.Begin < cursor)
                throw new SafeTensorsException(file, e.Name, $"data_offsets [{e.Begin - dataStart}, {e.End - dataStart}] overlap the previous tensor (which ends at {cursor - dataStart})");
            if (e.Begin > cursor)
                throw new SafeTensorsException(file, e.Name, $"data_offsets [{e.Begin - dataStart}, {e.End - dataStart}] leave a gap after offset {cursor - dataStart} (offsets must be contiguous)");
            cursor = e.End;
        }
        if (cursor != dataStart + dataLength)
            throw new SafeTensorsException(file, null, $"tensors cover {cursor - dataStart} bytes but the data area has {dataLength} (trailing bytes)");
    }

    /// <summary>Copies a tensor's raw bytes to <paramref name="destination"/> (at least ByteLength bytes).</summary>
    public void CopyRaw(TensorEntry e, IntPtr destination) => CopyRaw(e, 0, e.ByteLength, destination);

    /// <summary>
    /// Copies <paramref name="byteCount"/> bytes of a tensor, starting <paramref name="byteOffset"/> bytes into its data,
    /// to <paramref name="destination"/>. Only that range is mapped, so a slice of a tensor of any size (beyond 2 GiB
    /// too) costs only its own pages.
    /// </summary>
    public unsafe void CopyRaw(TensorEntry e, long byteOffset, long byteCount, IntPtr destination)
    {
        CheckOwnEntry(e);
        if (byteOffset < 0 || byteCount < 0 || byteOffset > e.ByteLength || byteCount > e.ByteLength - byteOffset)
            throw new ArgumentOutOfRangeException(nameof(byteOffset), $"{Path}: tensor '{e.Name}': byte range [{byteOffset}, +{byteCount}) outside its {e.ByteLength} bytes");
        if (byteCount == 0) return;
        if (_map is null) throw new SafeTensorsException(Path, e.Name, "file has no data area");
        using var view = _map.CreateViewAccessor(e.Begin + byteOffset, byteCount, MemoryMappedFileAccess.Read);
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        try
        {
            byte* src = p + view.PointerOffset;
            Buffer.MemoryCopy(src, (void*)destination, byteCount, byteCount);
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    /// <summary>Copies bytes [offset, offset+count) of a tensor's data to <paramref name="destination"/> (same as the range <see cref="CopyRaw(TensorEntry, long, long, IntPtr)"/>).</summary>
    public void CopyRange(TensorEntry e, long offset, long count, IntPtr destination) => CopyRaw(e, offset, count, destination);

    /// <summary>Reads <paramref name="byteCount"/> raw bytes of a tensor starting <paramref name="byteOffset"/> bytes into its data.</summary>
    public unsafe byte[] ReadBytes(TensorEntry e, long byteOffset, int byteCount)
    {
        var bytes = new byte[byteCount];
        fixed (byte* b = bytes) CopyRaw(e, byteOffset, byteCount, (IntPtr)b);
        return bytes;
    }

    private void CheckOwnEntry(TensorEntry e)
    {
        if (!_byName.TryGetValue(e.Name, out var mine) || mine.Begin != e.Begin || mine.End != e.End || mine.File != e.File)
            throw new ArgumentException($"{Path}: tensor entry '{e.Name}' does not belong to this file (it comes from {e.File})");
    }

    /// <summary>Reads a tensor into a new CPU tensor of its stored dtype, or converted to <paramref name="dtype"/>.</summary>
    public torch.Tensor Load(string name, torch.ScalarType? dtype = null) => Load(this[name], dtype);

    public torch.Tensor Load(TensorEntry e, torch.ScalarType? dtype = null)
    {
        var stored = torch.empty(e.Shape, e.DType.ToScalarType());
        try
        {
            CopyRaw(e, NativeTensorAccess.DataPointer(stored));
        }
        catch
        {
            stored.Dispose();
            throw;
        }
        if (dtype is null || dtype == stored.dtype) return stored;
        var converted = stored.to_type(dtype.Value);
        stored.Dispose();
        return converted;
    }

    /// <summary>Reads the raw bytes of a tensor (for hashing and byte-exact comparisons).</summary>
    public unsafe byte[] ReadBytes(string name)
    {
        var e = this[name];
        if (e.ByteLength > Array.MaxLength) throw new SafeTensorsException(Path, name, "tensor too large for a byte array");
        var bytes = new byte[e.ByteLength];
        fixed (byte* b = bytes) CopyRaw(e, (IntPtr)b);
        return bytes;
    }

    /// <summary>
    /// A pointer to a tensor's bytes inside one read-only mapping of the whole file (created on first use, kept
    /// until <see cref="Dispose"/>): zero-copy access for streaming readers. Pages become resident as they are
    /// touched and stay evictable page cache; the pointer is valid until this file is disposed.
    /// </summary>
    public unsafe IntPtr MappedPointer(TensorEntry e)
    {
        CheckOwnEntry(e);
        if (_map is null) throw new SafeTensorsException(Path, e.Name, "file has no data area");
        lock (_viewGate)
        {
            if (_wholeView is null)
            {
                var view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
                byte* p = null;
                view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                _wholeBase = p + view.PointerOffset;
                _wholeView = view;
            }
        }
        return (IntPtr)(_wholeBase + e.Begin);
    }

    private PrivateMapping? _private;
    private bool _privateTried, _disposed;

    /// <summary>
    /// A CPU tensor over the tensor's bytes in a read-only, private mapping of this file (<see cref="PrivateMapping"/>):
    /// no copy, pages shared with the page cache. Null where that is not possible (no mmap, or data not aligned to the
    /// element size); then copy (<see cref="Load(TensorEntry, torch.ScalarType?)"/>). The tensor stays valid after this
    /// file is disposed: its storage holds the mapping. Never write into it.
    /// </summary>
    public torch.Tensor? MappedTensor(TensorEntry e)
    {
        CheckOwnEntry(e);
        PrivateMapping? m;
        lock (_viewGate)
        {
            if (_disposed) throw new ObjectDisposedException(Path);
            if (!_privateTried)
            {
                _privateTried = true;
                try
                {
                    _private = PrivateMapping.TryCreate(Path, FileLength);
                }
                catch (Exception x) when (x is IOException or UnauthorizedAccessException)
                {
                    throw new SafeTensorsException(Path, e.Name, $"cannot map the file ({x.Message})", x);
                }
            }
            m = _private;
        }
        return m?.Wrap(e);
    }

    /// <summary>Whether <paramref name="p"/> is <paramref name="e"/>'s data in this file's private mapping (a zero-copy tensor's).</summary>
    public bool IsZeroCopy(TensorEntry e, IntPtr p)
    {
        lock (_viewGate) return _private is not null && _private.Holds(e, p);
    }

    [System.Runtime.InteropServices.DllImport("libc.so.6", EntryPoint = "madvise", SetLastError = true)]
    private static extern int MAdvise(IntPtr addr, UIntPtr length, int advice);

    private const int MADV_DONTNEED = 4;

    /// <summary>
    /// Drops this process's mappings of a tensor's pages in the whole-file view (<see cref="MappedPointer"/>), so
    /// that a streaming reader's resident set stays at one layer: the data stays in the page cache and is mapped
    /// again if touched. Only whole pages inside the tensor are released. A no-op where madvise is unavailable.
    /// </summary>
    public unsafe void ReleaseMapped(TensorEntry e)
    {
        CheckOwnEntry(e);
        if (_wholeView is null || !OperatingSystem.IsLinux()) return;
        const long page = 4096;
        long start = (long)(_wholeBase + e.Begin), end = (long)(_wholeBase + e.End);
        long a = (start + page - 1) / page * page, b = end / page * page;
        if (b <= a) return;
        try { MAdvise((IntPtr)a, (UIntPtr)(ulong)(b - a), MADV_DONTNEED); }
        catch (EntryPointNotFoundException) { }
        catch (DllNotFoundException) { }
    }

    public void Dispose()
    {
        lock (_viewGate)
        {
            _disposed = true;
            _private?.Release();
            _private = null;
            if (_wholeView is not null)
            {
                _wholeView.SafeMemoryMappedViewHandle.ReleasePointer();
                _wholeView.Dispose();
                _wholeView = null;
            }
        }
        _map?.Dispose();
    }
}
