using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using static TorchSharp.torch;

namespace GaugeTorch.Alignment;

// Group actions of the LLaMA family (GAUGE.md §6.2) that alignment needs and the catalog of this branch does not
// provide as actions with given parameters. Each says why it is a symmetry; the alignment checks every result in float64.

/// <summary>
/// x ↦ x·P·D, a signed permutation of the residual ((x·R)[j] = s[j]·x[π[j]]), for RMSNorm models: RMSNorm commutes with
/// it (rms(xR) = rms(x)), so gains are permuted (g → g[π]) and readers absorb Rᵀ (rows permuted and signed), writers
/// and the embedding and head go to ·R; the tied head is the embedding, so (n∘g_f)R·(E R)ᵀ = (n∘g_f)Eᵀ.
/// </summary>
internal sealed class SignedResidualPermutationAction(long[] index, double[] signs) : ILayerAction, IGlobalAction
{
    public string Name => "signed-residual-perm";

    public void Apply(LayerView w, ModelTraits t)
    {
        if (t.Norm != NormKind.RmsNorm) throw new ArgumentException("per-coordinate residual signs hold for RMSNorm models only");
        using var idx = tensor(index);
        var s = tensor(signs, ScalarType.Float64);
        w.Norm1 = new NormView { Gain = w.Norm1.Gain.index_select(0, idx) };
        w.Norm2 = new NormView { Gain = w.Norm2.Gain.index_select(0, idx) };
        var r = s.view(1, -1, 1);
        w.Q = w.Q.index_select(1, idx) * r;
        w.K = w.K.index_select(1, idx) * r;
        w.V = w.V.index_select(1, idx) * r;
        w.Up = w.Up.index_select(0, idx) * s.unsqueeze(1);
        if (w.Gate is not null) w.Gate = w.Gate.index_select(0, idx) * s.unsqueeze(1);
        w.O = w.O.index_select(2, idx) * s;
        if (w.OBias is not null) w.OBias = w.OBias.index_select(0, idx) * s;
        w.Down = w.Down.index_select(1, idx) * s;
        if (w.DownBias is not null) w.DownBias = w.DownBias.index_select(0, idx) * s;
    }

    public void Apply(GlobalState g)
    {
        using var idx = tensor(index);
        using var s = tensor(signs, ScalarType.Float64);
        using var p = ResidualMap.SignedPermutation(idx, 1.0);
        using var d = ResidualMap.Diagonal(s);
        using var map = p.Then(d);
        g.Embed.RightMultiply(map);
        g.Head?.RightMultiply(map);
        g.SetFinalNorm(g.FinalNorm.Gain.index_select(0, idx), null);
    }

    public ILayerAction Inverse() => throw new NotSupportedException();
    IGlobalAction IGlobalAction.Inverse() => throw new NotSupportedException();
}

/// <summary>
/// GAUGE.md §6.2 family 1, the QK commutant: per KV group r and rotary plane j a complex z ≠ 0; every query head of the
/// group multiplies its plane (columns j and j + hd/2, bias included) by z, the group's keys by 1/conj(z). RoPE
/// multiplies both by the same phase, so each score Re(q·conj(k)·e^{iω(p−s)}) is unchanged.
/// </summary>
internal sealed class RotaryCommutantAction(Tensor re, Tensor im) : ILayerAction
{
    /// <summary>[G, hd/2].</summary>
    public Tensor Re { get; } = re;
    public Tensor Im { get; } = im;
    public string Name => "qk-commutant";

    private static Tensor Rotate(Tensor x, Tensor re, Tensor im)   // x [..., hd], re/im broadcastable to [..., hd/2]
    {
        long h2 = x.shape[^1] / 2;
        var a = x.narrow(-1, 0, h2);
        var b = x.narrow(-1, h2, h2);
        return cat([re * a - im * b, im * a + re * b], -1);
    }

    public void Apply(LayerView w, ModelTraits t)
    {
        var zr = ViewOps.PerQueryHead(Re, t);
        var zi = ViewOps.PerQueryHead(Im, t);
        w.Q = Rotate(w.Q, zr.unsqueeze(1), zi.unsqueeze(1));
        if (w.QBias is not null) w.QBias = Rotate(w.QBias, zr, zi);
        var n2 = Re.square() + Im.square();
        var wr = Re / n2;            // 1/conj(z) = z/|z|²
        var wi = Im / n2;
        w.K = Rotate(w.K, wr.unsqueeze(1), wi.unsqueeze(1));
        if (w.KBias is not null) w.KBias = Rotate(w.KBias, wr, wi);
    }

    public ILayerAction Inverse() => throw new NotSupportedException();
}

/// <summary>
/// GAUGE.md §6.2 family 4, SwiGLU unit scale: up[u] → s_u·up[u] (and its bias), down row u → down/s_u. The unit's
/// output silu(gate)·up is linear in up, so the product is unchanged; gate is left alone (silu is not homogeneous).
/// </summary>
internal sealed class UnitScaleAction(Tensor s) : ILayerAction
{
    public string Name => "unit-scale";

    public void Apply(LayerView w, ModelTraits t)
    {
        w.Up = w.Up * s.unsqueeze(0);
        if (w.UpBias is not null) w.UpBias = w.UpBias * s;
        w.Down = w.Down / s.unsqueeze(1);
    }

    public ILayerAction Inverse() => new UnitScaleAction(s.reciprocal());
}

/// <summary>
/// Whole KV groups permuted with their query heads (GAUGE.md §6.2 family 3): new group r is old group τ[r], and its
/// query heads keep their order within the group.
/// </summary>
internal sealed class GroupPermutationAction(long[] tau) : ILayerAction
{
    public string Name => "group-perm";

    public void Apply(LayerView w, ModelTraits t)
    {
        int k = t.GroupSize;
        using var g = tensor(tau);
        using var q = tensor(Enumerable.Range(0, t.QueryHeads).Select(i => tau[i / k] * k + i % k).ToArray());
        w.K = w.K.index_select(0, g);
        w.V = w.V.index_select(0, g);
        if (w.KBias is not null) w.KBias = w.KBias.index_select(0, g);
        if (w.VBias is not null) w.VBias = w.VBias.index_select(0, g);
        w.Q = w.Q.index_select(0, q);
        if (w.QBias is not null) w.QBias = w.QBias.index_select(0, q);
        w.O = w.O.index_select(0, q);
    }

    public ILayerAction Inverse() => throw new NotSupportedException();
}
