using GaugeTorch.Architectures.Gpt2;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// One sampled transformation of one transformer block. <see cref="Apply"/> mutates a float64
/// <see cref="LayerWeights"/> that the caller owns (old tensors are disposed as they are replaced).
/// </summary>
public interface ILayerAction
{
    /// <summary>The catalog family, or null for an invalid control.</summary>
    GaugeFamily? Family { get; }
    string Name { get; }
    void Apply(LayerWeights w, Gpt2Config c);
    ILayerAction Inverse();
}

/// <summary>Per-head slicing helpers for the stored layout (Conv1D [in, out], Q | K | V column blocks).</summary>
public static class HeadLayout
{
    /// <summary>Columns [part·d, (part+1)·d) of c_attn (part 0 = Q, 1 = K, 2 = V) as [h, rows, dk].</summary>
    public static Tensor Heads(Tensor attnW, int part, Gpt2Config c)
    {
        long d = c.NEmbd, dk = c.HeadDim;
        var cols = attnW.narrow(-1, part * d, d);
        return attnW.dim() == 1
            ? cols.reshape(c.NHead, 1, dk)
            : cols.reshape(attnW.shape[0], c.NHead, dk).permute(1, 0, 2);
    }

    /// <summary>Inverse of <see cref="Heads"/>: [h, rows, dk] back to [rows, d] (or [d] for a bias).</summary>
    public static Tensor Merge(Tensor heads, bool bias)
    {
        long h = heads.shape[0], rows = heads.shape[1], dk = heads.shape[2];
        return bias ? heads.reshape(h * dk) : heads.permute(1, 0, 2).reshape(rows, h * dk);
    }

    /// <summary>Replaces columns [part·d, (part+1)·d) of c_attn weight and bias.</summary>
    public static void SetPart(LayerWeights w, int part, Tensor newW, Tensor newB, Gpt2Config c)
    {
        long d = c.NEmbd;
        var parts = w.AttnW.split(d, 1).ToArray();
        var bparts = w.AttnB.split(d, 0).ToArray();
        parts[part] = newW;
        bparts[part] = newB;
        Replace(w, x => x.AttnW, (x, t) => x.AttnW = t, cat(parts, 1));
        Replace(w, x => x.AttnB, (x, t) => x.AttnB = t, cat(bparts, 0));
    }

    /// <summary>Sets a tensor of <paramref name="w"/> and disposes the one it replaces.</summary>
    public static void Replace(LayerWeights w, Func<LayerWeights, Tensor> get, Action<LayerWeights, Tensor> set, Tensor value)
    {
        var old = get(w);
        set(w, value.MoveToOuterDisposeScope());
        if (!ReferenceEquals(old, value)) old.Dispose();
    }
}
