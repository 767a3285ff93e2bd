using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Pipeline;

/// <summary>
/// Streaming reads of a checkpoint, one layer at a time: each stored tensor is read in place through the file's
/// memory map (<see cref="SafeTensorStore.MappedPointer"/>) and converted once into a new tensor of the wanted dtype,
/// and <see cref="Release"/> gives the layer's mapped pages back afterwards (<see cref="SafeTensorStore.ReleaseMapped"/>),
/// so that the resident set stays at about one layer whatever the model size. The adapter turns the tensors into a
/// <see cref="LayerView"/>; nothing here knows tensor names.
/// </summary>
public sealed class LayerStream(Checkpoint ck)
{
    public Checkpoint Checkpoint { get; } = ck;

    /// <summary>One stored parameter (unprefixed name) as a new tensor in <paramref name="dtype"/>.</summary>
    public unsafe Tensor ReadTensor(string name, ScalarType dtype)
    {
        var e = Checkpoint.Store.Entry(Checkpoint.Key(name));
        var src = Checkpoint.Store.MappedPointer(e);
        var stored = e.DType.ToScalarType();
        if (dtype == ScalarType.Float64)
        {
            var t = empty(e.Shape, ScalarType.Float64);
            Conversions.ToFloat64(src, e.DType, e.NumElements, NativeTensorAccess.DataPointer(t));
            return t;
        }
        var raw = empty(e.Shape, stored);
        Buffer.MemoryCopy((void*)src, (void*)NativeTensorAccess.DataPointer(raw), e.ByteLength, e.ByteLength);
        if (stored == dtype) return raw;
        var converted = raw.to_type(dtype);
        raw.Dispose();
        return converted;
    }

    /// <summary>Layer <paramref name="layer"/> as a view in <paramref name="dtype"/> (the view owns its tensors).</summary>
    public LayerView Read(int layer, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return Checkpoint.Architecture.ToView(layer, n => ReadTensor(n, dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>The globals as a view in <paramref name="dtype"/> (head null when tied); their mapped pages are released after reading.</summary>
    public GlobalView ReadGlobals(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var g = Checkpoint.Architecture.GlobalsToView(n => ReadTensor(n, dtype), Checkpoint.Tied).MoveToOuterDisposeScope();
        foreach (var n in GlobalNames()) Checkpoint.Store.ReleaseMapped(Checkpoint.Store.Entry(Checkpoint.Key(n)));
        return g;
    }

    private IEnumerable<string> GlobalNames() =>
        Checkpoint.Tied ? Checkpoint.Architecture.GlobalNames() : Checkpoint.Architecture.GlobalNames().Append(Checkpoint.Architecture.HeadName);

    /// <summary>Gives back the process's mapping of layer <paramref name="layer"/>'s stored pages (the page cache keeps them).</summary>
    public void Release(int layer)
    {
        foreach (var n in Checkpoint.Architecture.LayerNames(layer)) Checkpoint.Store.ReleaseMapped(Checkpoint.Store.Entry(Checkpoint.Key(n)));
    }

    /// <summary>Reads one byte per 4 KiB page of layer <paramref name="layer"/>'s stored tensors (on a background task), so that its page faults happen ahead of use.</summary>
    public unsafe Task Prefetch(int layer) => Task.Run(() =>
    {
        long sum = 0;
        foreach (var n in Checkpoint.Architecture.LayerNames(layer))
        {
            var e = Checkpoint.Store.Entry(Checkpoint.Key(n));
            byte* p = (byte*)Checkpoint.Store.MappedPointer(e);
            for (long i = 0; i < e.ByteLength; i += 4096) sum += p[i];
        }
        return sum;
    });
}
