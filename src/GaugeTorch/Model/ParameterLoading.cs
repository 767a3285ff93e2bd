using GaugeTorch.SafeTensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace GaugeTorch.Model;

/// <summary>
/// How a module's parameters come from a checkpoint (issue 12, item 2). A parameter whose stored dtype is the compute
/// dtype, on the CPU, becomes a zero-copy view of the file's read-only private mapping (<see cref="PrivateMapping"/>,
/// via <c>set_</c> on the existing parameter, whose never-touched <c>empty</c> storage is freed): loading is then the
/// page cache's cost, and the resident set shares the file's pages instead of holding a second copy. Where the
/// mapping is not possible (unaligned data, no mmap) the bytes are copied; other dtypes convert as before. Nothing
/// writes a loaded parameter in place (every forward runs under no_grad; the only in-place parameter writes are the
/// copy paths below), and a write would fault instead of reaching the file. <c>GAUGETORCH_LOAD=copy</c> turns the
/// mapping off for the process (to measure the copy path).
/// </summary>
public static class ParameterLoading
{
    /// <summary>Whether loads map by default (false when GAUGETORCH_LOAD=copy).</summary>
    public static bool ZeroCopyDefault { get; } =
        !string.Equals(Environment.GetEnvironmentVariable("GAUGETORCH_LOAD"), "copy", StringComparison.OrdinalIgnoreCase);

    /// <summary>Fills <paramref name="parameters"/> (module names) from the entries <paramref name="key"/> names.</summary>
    public static void Fill(IReadOnlyList<(string name, Parameter p)> parameters, SafeTensorStore store, Func<string, string> key, ScalarType dtype,
                            IProgress<(long Done, long Total)>? progress = null, bool? zeroCopy = null)
    {
        bool map = zeroCopy ?? ZeroCopyDefault;
        using var _ = no_grad();
        long total = parameters.Sum(x => store.Entry(key(x.name)).ByteLength), done = 0;
        foreach (var (name, p) in parameters)
        {
            var entry = store.Entry(key(name));
            if (!entry.Shape.SequenceEqual(p.shape))
                throw new ModelFormatException($"{entry.File}: '{entry.Name}' has shape {entry.ShapeText}, the module expects [{string.Join(", ", p.shape)}]");
            if (entry.DType.ToScalarType() == dtype && p.device_type == DeviceType.CPU)
            {
                Tensor? mapped = map ? store.MappedTensor(entry) : null;
                if (mapped is not null)
                    using (mapped) p.set_(mapped);
                else
                    store.CopyRaw(entry, NativeTensorAccess.DataPointer(p));
            }
            else
            {
                using var t = store.Load(entry.Name, dtype);
                p.copy_(t);
            }
            done += entry.ByteLength;
            progress?.Report((done, total));
        }
    }
}
