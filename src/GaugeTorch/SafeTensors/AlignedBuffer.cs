using System.Runtime.InteropServices;

namespace GaugeTorch.SafeTensors;

/// <summary>Native memory aligned for direct I/O (<see cref="SafeTensorWriter.DirectAlignment"/>), freed on dispose.</summary>
public sealed unsafe class AlignedBuffer : IDisposable
{
    public IntPtr Pointer { get; private set; }
    public long Length { get; }

    public AlignedBuffer(long length, int alignment = SafeTensorWriter.DirectAlignment)
    {
        Length = Math.Max(length, 1);
        Pointer = (IntPtr)NativeMemory.AlignedAlloc((nuint)Length, (nuint)alignment);
    }

    public void Dispose()
    {
        if (Pointer == IntPtr.Zero) return;
        NativeMemory.AlignedFree((void*)Pointer);
        Pointer = IntPtr.Zero;
    }
}

/// <summary>
/// Output staging for a group of tensors (one layer): the maximal runs of them that are contiguous in one output
/// file, each laid out byte for byte as in the file inside one aligned buffer, at the file's page phase, so that
/// <see cref="SafeTensorWriter.WriteRange"/> can send whole pages with direct I/O. The buffer is reused (and grown
/// when needed) from one <see cref="Plan"/> to the next.
/// </summary>
public sealed class RangeStaging : IDisposable
{
    private AlignedBuffer? _buffer;
    private readonly Dictionary<string, IntPtr> _slots = new(StringComparer.Ordinal);
    private readonly List<(SafeTensorWriter Writer, long Start, long Length, IntPtr Data)> _runs = [];

    /// <summary>Where tensor <paramref name="name"/>'s bytes go.</summary>
    public IntPtr Slot(string name) => _slots[name];

    public IReadOnlyList<(SafeTensorWriter Writer, long Start, long Length, IntPtr Data)> Runs => _runs;

    public void Plan(IEnumerable<(string Name, SafeTensorWriter Writer)> tensors)
    {
        const long a = SafeTensorWriter.DirectAlignment;
        _slots.Clear();
        _runs.Clear();
        var runs = new List<(SafeTensorWriter W, long Start, long End, List<string> Names)>();
        foreach (var group in tensors.GroupBy(t => t.Writer))
            foreach (var (name, w) in group.OrderBy(t => t.Writer.DataOffset(t.Name)))
            {
                long off = w.DataOffset(name), end = off + w.DataLength(name);
                if (runs.Count > 0 && runs[^1].W == w && runs[^1].End == off)
                {
                    var r = runs[^1];
                    r.Names.Add(name);
                    runs[^1] = (r.W, r.Start, end, r.Names);
                }
                else runs.Add((w, off, end, [name]));
            }
        long need = runs.Sum(r => r.End - r.Start + 2 * a);
        if (_buffer is null || _buffer.Length < need)
        {
            _buffer?.Dispose();
            _buffer = new AlignedBuffer(need);
        }
        long cursor = 0;
        foreach (var r in runs)
        {
            long phase = r.Start % a, length = r.End - r.Start;
            IntPtr data = _buffer.Pointer + (nint)(cursor + phase);
            _runs.Add((r.W, r.Start, length, data));
            foreach (var n in r.Names) _slots[n] = data + (nint)(r.W.DataOffset(n) - r.Start);
            cursor += (phase + length + a - 1) / a * a;
        }
    }

    /// <summary>Writes every run (see <see cref="SafeTensorWriter.WriteRange"/>); the tensors must have been claimed.</summary>
    public void WriteAll()
    {
        foreach (var (w, start, length, data) in _runs) w.WriteRange(start, data, length);
    }

    public void Dispose() => _buffer?.Dispose();
}
