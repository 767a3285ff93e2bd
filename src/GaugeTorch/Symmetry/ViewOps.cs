using System.Runtime.CompilerServices;
using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Shared pieces of the families' arithmetic on a <see cref="LayerView"/>: the readers of each norm (the
/// projections that read its output), the writers of the residual stream, and per-group ↔ per-head expansion.
/// The readers of the first norm are handled as one [d, (H + 2G)·hd] matrix Q | K | V so that a family acting on all
/// of them does one product, in the same order as on a fused c_attn.
/// </summary>
internal static class ViewOps
{
    /// <summary>
    /// Q | K | V as one [d, (H + 2G)·hd] matrix: the matrix they were set from by <see cref="SetReader1"/> when they
    /// are still its views (an alias, no copy), otherwise a new contiguous tensor. Either way the same values in the
    /// same row-major layout, so every product with it rounds alike (issue 12: in all-together, ln-bias and
    /// reader-mean each concatenated the three again, 0.2 and 0.7 s a layer on gpt2-xl).
    /// </summary>
    public static Tensor Reader1(LayerView w)
    {
        if (Fused.TryGetValue(w.Q, out var f) && ReferenceEquals(f.K, w.K) && ReferenceEquals(f.V, w.V) && !f.M.IsInvalid) return f.M.alias();
        // One strided copy per part straight into the matrix (cat of Flat copied each [n, d, hd] part twice).
        Tensor[] parts = [w.Q, w.K, w.V];
        long d = w.Q.shape[1], width = parts.Sum(p => p.shape[0] * p.shape[2]), at = 0;
        var m = empty([d, width], w.Q.dtype, w.Q.device);
        foreach (var p in parts)
        {
            long n = p.shape[0] * p.shape[2];
            m.narrow(1, at, n).view(d, p.shape[0], p.shape[2]).copy_(p.permute(1, 0, 2));
            at += n;
        }
        return m;
    }

    /// <summary>The matrix Q | K | V were set from, keyed weakly by Q's handle (checked against K's and V's).</summary>
    private static readonly ConditionalWeakTable<Tensor, FusedReader1> Fused = new();

    private sealed record FusedReader1(Tensor M, Tensor K, Tensor V);

    /// <summary>The biases of Q | K | V as one vector, or null when the projections have none.</summary>
    public static Tensor? Reader1Bias(LayerView w) =>
        w.QBias is null ? null : cat([w.QBias.reshape(-1), Required(w.KBias, "k bias").reshape(-1), Required(w.VBias, "v bias").reshape(-1)], 0);

    /// <summary>Sets Q, K and V from one [d, (H + 2G)·hd] matrix (as views of it).</summary>
    public static void SetReader1(LayerView w, ModelTraits t, Tensor m)
    {
        long d = m.shape[0], hd = t.HeadDim, nq = t.QueryHeads * hd, nk = t.KvHeads * hd;
        w.Q = Heads(m.narrow(1, 0, nq), t.QueryHeads, hd);
        w.K = Heads(m.narrow(1, nq, nk), t.KvHeads, hd);
        w.V = Heads(m.narrow(1, nq + nk, nk), t.KvHeads, hd);
        if (m.is_contiguous()) Fused.AddOrUpdate(w.Q, new FusedReader1(m, w.K, w.V));
    }

    /// <summary>Sets the Q, K and V biases from one vector.</summary>
    public static void SetReader1Bias(LayerView w, ModelTraits t, Tensor b)
    {
        long hd = t.HeadDim, nq = t.QueryHeads * hd, nk = t.KvHeads * hd;
        w.QBias = b.narrow(0, 0, nq).reshape(t.QueryHeads, hd);
        w.KBias = b.narrow(0, nq, nk).reshape(t.KvHeads, hd);
        w.VBias = b.narrow(0, nq + nk, nk).reshape(t.KvHeads, hd);
    }

    /// <summary>[d, n·hd] → [n, d, hd] (head i's columns i·hd …), a view.</summary>
    public static Tensor Heads(Tensor flat, long n, long hd) => flat.reshape(flat.shape[0], n, hd).permute(1, 0, 2);

    /// <summary>Per-KV-group tensors [G, ...] repeated for every query head of the group → [H, ...] (as is when G = H).</summary>
    public static Tensor PerQueryHead(Tensor perGroup, ModelTraits t) =>
        t.GroupSize == 1 ? perGroup : perGroup.repeat_interleave(t.GroupSize, 0);

    /// <summary>W_O as one [H·hd, d] matrix (a view when O is contiguous).</summary>
    public static Tensor FlatO(LayerView w) => w.O.reshape(w.O.shape[0] * w.O.shape[1], w.O.shape[2]);

    /// <summary>Applies <paramref name="f"/> to every reader of the second norm (up, and the SwiGLU gate when present).</summary>
    public static void MapReaders2(LayerView w, Func<Tensor, Tensor> f)
    {
        w.Up = f(w.Up);
        if (w.Gate is not null) w.Gate = f(w.Gate);
    }

    /// <summary>Sets each second-norm reader's bias to f(weight, bias) (the reader must have a bias).</summary>
    public static void MapReaderBiases2(LayerView w, Func<Tensor, Tensor, Tensor> f)
    {
        w.UpBias = f(w.Up, Required(w.UpBias, "up bias"));
        if (w.Gate is not null) w.GateBias = f(w.Gate, Required(w.GateBias, "gate bias"));
    }

    /// <summary>A float64 view with every tensor of <paramref name="at"/> as zeros (a tangent's unmoved parts).</summary>
    public static LayerView Zeros(LayerView at) => at.Map(x => zeros(x.shape, ScalarType.Float64));

    public static GlobalView Zeros(GlobalView at) => at.Map(x => zeros(x.shape, ScalarType.Float64));

    public static Tensor Required(Tensor? t, string what) =>
        t ?? throw new ArgumentException($"the layer view has no {what}, which this family needs");

    /// <summary>Throws when a norm gain has a zero entry (a family divides by it), naming the layer and norm.</summary>
    public static void RequireNonZero(Tensor gain, string what)
    {
        if (gain.abs().min().item<double>() == 0)
            throw new ArgumentException($"{what} has a zero entry; this family divides by it");
    }
}
