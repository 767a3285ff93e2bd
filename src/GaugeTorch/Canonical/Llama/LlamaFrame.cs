using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Llama;

/// <summary>
/// The residual frame F [d, d] of step 2 of the LLaMA-family canonical form: the residual stream becomes x·F. A tied
/// head allows only signed permutations (<see cref="Permutation"/>, <see cref="Signs"/>: (x·F)[k] = sign[k]·x[perm[k]]),
/// which are exact in any dtype; an untied head allows any rotation (<see cref="Rotation"/>). Readers (q, k, v, gate,
/// up in the view's [in, out] layout, norm gains folded) become Fᵀ·W, writers (o, down, their biases), the embedding and
/// the untied head W·F. RMSNorm commutes with every orthogonal F, so with unit gains each of these is exact.
/// </summary>
public sealed class LlamaFrame : IDisposable
{
    public long[]? Permutation { get; private init; }
    public double[]? Signs { get; private init; }
    public Tensor? Rotation { get; private init; }
    private Tensor? _perm, _sign;

    public static LlamaFrame Identity() => new();

    public static LlamaFrame SignedPermutation(long[] perm, double[] signs)
    {
        bool identity = perm.Select((p, i) => p == i).All(x => x) && signs.All(s => s > 0);
        if (identity) return new LlamaFrame();
        return new LlamaFrame
        {
            Permutation = perm, Signs = signs,
            _perm = tensor(perm, ScalarType.Int64).DetachFromDisposeScope(),
            _sign = tensor(signs, ScalarType.Float64).DetachFromDisposeScope(),
        };
    }

    public static LlamaFrame Rotate(Tensor rotation) => new() { Rotation = rotation.DetachFromDisposeScope() };

    public bool IsIdentity => Rotation is null && Permutation is null;

    /// <summary>Fᵀ·W for readers [.., d, n] (the residual along dimension −2).</summary>
    public Tensor Reader(Tensor w)
    {
        if (Rotation is not null) return matmul(Rotation.t(), w);
        if (_perm is null) return w.alias();
        return w.index_select(-2, _perm) * _sign!.to_type(w.dtype).unsqueeze(1);
    }

    /// <summary>Fᵀ·diag(g)·W for readers [.., d, n] with their norm gain <paramref name="gain"/> [d] folded (one pass).</summary>
    public Tensor Reader(Tensor w, Tensor gain)
    {
        long d = gain.shape[0];
        if (Rotation is not null) return matmul(Rotation.t(), w * gain.view(d, 1));
        if (w.dim() == 3 && w.dtype == ScalarType.Float64)
        {
            // Per-head blocks [n, d, hd] of an nn.Linear weight [n·hd, d]: work on the stored rows (a view), return a view.
            long n = w.shape[0], hd = w.shape[2];
            var rows = w.transpose(1, 2).reshape(n * hd, d);
            var outRows = _perm is null ? rows * gain : LlamaKernels.GatherColumns(rows, Permutation!, FoldScale(gain));
            return outRows.view(n, hd, d).transpose(1, 2);
        }
        if (_perm is null) return w * gain.view(d, 1);
        return w.index_select(-2, _perm) * (gain.index_select(0, _perm) * _sign!.to_type(gain.dtype)).view(d, 1);
    }

    /// <summary>
    /// A signed-permutation (or identity) frame as index maps for the gather kernels: reader column k of the output
    /// takes source column index[k]·scale[k] (the gain folded); null for a rotation.
    /// </summary>
    public (long[] Index, double[] Scale)? ReaderColumns(Tensor gain)
    {
        if (Rotation is not null) return null;
        if (_perm is null) return (Enumerable.Range(0, (int)gain.shape[0]).Select(i => (long)i).ToArray(), gain.to_type(ScalarType.Float64).contiguous().data<double>().ToArray());
        return (Permutation!, FoldScale(gain));
    }

    /// <summary>Writer row i of the output takes source row index[i]·sign[i] (sign null: 1); null for a rotation.</summary>
    public (long[] Index, double[]? Sign)? WriterRowMap(long d)
    {
        if (Rotation is not null) return null;
        if (_perm is null) return (Enumerable.Range(0, (int)d).Select(i => (long)i).ToArray(), null);
        return (Permutation!, Signs);
    }

    /// <summary>g[perm[k]]·sign[k]: the gain folded into a signed-permuted reader column.</summary>
    private double[] FoldScale(Tensor gain)
    {
        var g = gain.to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
        return Permutation!.Select((p, k) => g[p] * Signs![k]).ToArray();
    }

    /// <summary>
    /// A reader stored with its units as rows, wt [n, d] (an nn.Linear weight [out, in]), its gain folded, into the
    /// frame: wt·diag(g)·F (one pass; the rows stay contiguous).
    /// </summary>
    public Tensor ReaderRows(Tensor wt, Tensor gain)
    {
        if (Rotation is not null) return matmul(wt * gain, Rotation);
        if (_perm is null) return wt * gain;
        return LlamaKernels.GatherColumns(wt, Permutation!, FoldScale(gain));
    }

    /// <summary>A writer stored [d, n] (an nn.Linear weight [out, in]) into the frame: Fᵀ·W (rows permuted and signed).</summary>
    public Tensor WriterRows(Tensor ws)
    {
        if (Rotation is not null) return matmul(Rotation.t(), ws);
        if (_perm is null) return ws.alias();
        return LlamaKernels.GatherRows(ws, Permutation!, Signs);
    }

    /// <summary>W·F for writers, embeddings and heads [.., d] (the residual along the last dimension).</summary>
    public Tensor Writer(Tensor w)
    {
        if (Rotation is not null) return matmul(w, Rotation);
        if (_perm is null) return w.alias();
        if (w.dim() == 2 && w.dtype == ScalarType.Float32) return LlamaKernels.GatherColumns32(w, Permutation!, Signs!);
        if (w.dim() == 3 && w.dtype == ScalarType.Float64)
        {
            // Per-head output blocks [H, hd, d] of an nn.Linear weight [d, H·hd]: permute and sign its rows (a view back).
            long h = w.shape[0], hd = w.shape[1], d = w.shape[2];
            var stored = w.reshape(h * hd, d).t();
            return LlamaKernels.GatherRows(stored, Permutation!, Signs).t().view(h, hd, d);
        }
        if (w.dim() == 2 && w.dtype == ScalarType.Float64) return LlamaKernels.GatherColumns(w, Permutation!, Signs);
        return w.index_select(-1, _perm) * _sign!.to_type(w.dtype);
    }

    /// <summary>A gain on the residual coordinates, permuted with them (signs do not touch a gain).</summary>
    public Tensor Gain(Tensor g)
    {
        if (Rotation is not null) throw new InvalidOperationException("a rotated frame needs the gains folded first");
        return _perm is null ? g.alias() : g.index_select(0, _perm);
    }

    public void Dispose()
    {
        Rotation?.Dispose();
        _perm?.Dispose();
        _sign?.Dispose();
    }
}
