using System.Runtime.InteropServices;
using TorchSharp;

namespace GaugeTorch.SafeTensors;

/// <summary>
/// A read-only, private (<c>PROT_READ</c>, <c>MAP_PRIVATE</c>) mapping of a whole safetensors file, whose tensors can
/// be wrapped zero-copy as CPU tensors (<see cref="Wrap"/>): a loaded model's parameters are then the file's page cache,
/// faulted in as they are read, never copied into fresh anonymous memory (issue 12: the copy made loading gpt2-xl 16–22×
/// a warm <c>cat</c>, mostly system time). Reference counted: the owning <see cref="SafeTensorFile"/> holds one
/// reference and every wrapped tensor's storage one more (released by libtorch's deleter when the storage dies), so
/// the mapping outlives the file object for as long as any tensor over it lives, and is unmapped when the last goes.
/// A write into a wrapped tensor is a fault (the pages are read-only), never a change to the file: the inference
/// paths run under no_grad and nothing writes parameters in place. Linux and macOS only; elsewhere
/// <see cref="TryCreate"/> gives null and callers copy as before.
/// </summary>
public sealed class PrivateMapping
{
    private readonly string _path;
    private readonly IntPtr _base;
    private readonly long _length;
    private long _refs = 1;

    // Live mappings by base address, for the one native deleter (a static delegate that is never collected).
    private static readonly Dictionary<IntPtr, (PrivateMapping Map, long Count)> Wrapped = [];
    private static readonly object Gate = new();
    private static readonly DeleterFn Deleter = OnStorageFreed;
    private static readonly IntPtr DeleterPtr = Marshal.GetFunctionPointerForDelegate(Deleter);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void DeleterFn(IntPtr data);

    private PrivateMapping(string path, IntPtr @base, long length)
    {
        _path = path;
        _base = @base;
        _length = length;
    }

    /// <summary>Whether zero-copy wrapping is available here (a POSIX mmap).</summary>
    public static bool Supported => OperatingSystem.IsLinux() || OperatingSystem.IsMacOS();

    /// <summary>Maps <paramref name="path"/> read-only and private, or null where that is not possible (then copy).</summary>
    public static PrivateMapping? TryCreate(string path, long length)
    {
        if (!Supported || length <= 0) return null;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (fs.Length != length) return null; // changed under us: let the copying path report it
        IntPtr p = Mmap(IntPtr.Zero, (UIntPtr)(ulong)length, PROT_READ, MAP_PRIVATE, (int)fs.SafeFileHandle.DangerousGetHandle(), 0);
        if (p == MAP_FAILED) return null;
        return new PrivateMapping(path, p, length); // the mapping stays valid after the descriptor is closed
    }

    /// <summary>
    /// A CPU tensor of <paramref name="e"/>'s dtype and shape over the mapped bytes (no copy), or null when the data
    /// is not aligned to its element size. The tensor keeps this mapping alive.
    /// </summary>
    public torch.Tensor? Wrap(TensorEntry e)
    {
        if (e.Begin < 0 || e.End > _length) throw new SafeTensorsException(_path, e.Name, "tensor lies outside the mapped file");
        IntPtr data = _base + (nint)e.Begin;
        int size = e.DType.Size();
        if (size == 0 || ((long)data % size) != 0 || e.ByteLength == 0) return null;
        lock (Gate)
        {
            if (Interlocked.Read(ref _refs) <= 0) throw new ObjectDisposedException(_path);
            // One entry per distinct data pointer; the same tensor wrapped twice counts twice.
            Wrapped[data] = Wrapped.TryGetValue(data, out var w) ? (this, w.Count + 1) : (this, 1);
            Interlocked.Increment(ref _refs);
        }
        long[] shape = e.Shape;
        torch.InitializeDeviceType(DeviceType.CPU); // the native library is loaded before the P/Invoke
        IntPtr handle;
        var st = (sbyte)e.DType.ToScalarType();
        unsafe
        {
            fixed (long* dims = shape)
            {
                handle = THSTensor_new(data, DeleterPtr, (IntPtr)dims, shape.Length, st, st, 0, 0, false);
            }
        }
        if (handle == IntPtr.Zero)
        {
            OnStorageFreed(data);
            torch.CheckForErrors();
            throw new SafeTensorsException(_path, e.Name, "libtorch could not wrap the mapped tensor");
        }
        return torch.Tensor.UnsafeCreateTensor(handle);
    }

    /// <summary>Whether <paramref name="p"/> is where this mapping holds <paramref name="e"/>'s bytes.</summary>
    public bool Holds(TensorEntry e, IntPtr p) => p == _base + (nint)e.Begin;

    /// <summary>Drops the owner's reference; the mapping goes when no wrapped tensor is left.</summary>
    public void Release()
    {
        lock (Gate) Unref();
    }

    private void Unref()
    {
        if (Interlocked.Decrement(ref _refs) == 0) _ = Munmap(_base, (UIntPtr)(ulong)_length);
    }

    private static void OnStorageFreed(IntPtr data)
    {
        lock (Gate)
        {
            if (!Wrapped.TryGetValue(data, out var w)) return;
            if (w.Count > 1) Wrapped[data] = (w.Map, w.Count - 1);
            else Wrapped.Remove(data);
            w.Map.Unref();
        }
    }

    /// <summary>Tensors over mappings still alive (for tests).</summary>
    public static long LiveWrappedTensors
    {
        get { lock (Gate) return Wrapped.Values.Sum(w => w.Count); }
    }

    private const int PROT_READ = 1;
    private static int MAP_PRIVATE => 2;
    private static readonly IntPtr MAP_FAILED = new(-1);

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static extern IntPtr Mmap(IntPtr addr, UIntPtr length, int prot, int flags, int fd, long offset);

    [DllImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static extern int Munmap(IntPtr addr, UIntPtr length);

    // TorchSharp 0.107 exposes no from_blob; this is the native entry its own tensor-from-array factories use:
    // (data, deleter, sizes, ndim, element type of the data, dtype of the tensor, device type, device index, requires_grad).
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_new(IntPtr rawArray, IntPtr deleter, IntPtr dimensions, int numDimensions, sbyte type, sbyte dtype, int deviceType, int deviceIndex,
                                               [MarshalAs(UnmanagedType.U1)] bool requires_grad);
}
