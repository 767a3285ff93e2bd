using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// A transformed [n, d] matrix of the residual space (the embedding, the learned positions or the head) held as
/// <c>Base·R + Σ_k a_k b_kᵀ</c>: the stored tensor (not owned, any dtype), a <see cref="ResidualMap"/> R, and rank-one
/// terms (a_k ∈ R^n or the all-ones vector, b_k ∈ R^d or the all-ones vector). Every global family acts on it in
/// O(d²) or O(n) memory (an embedding offset is one term, a final gain a diagonal R, a rotation a dense R, a final-bias
/// shift a term whose a_k is a vocabulary vector), so a streaming evaluator needs per transformed case only the T
/// gathered rows (<see cref="Gather"/>) and a map of the T final states (<see cref="Project"/>), never an O(n·d) copy.
/// <see cref="Materialize"/> forms the matrix once, for an export. Everything kept is owned (own handles, outside every
/// dispose scope) and freed by <see cref="Dispose"/>.
/// </summary>
public sealed class LazyMatrix : IDisposable
{
    private readonly List<(Tensor? A, Tensor? B)> _terms = [];
    private ResidualMap _map;

    /// <summary>The stored [n, d] matrix (owned by the caller).</summary>
    public Tensor Base { get; }

    public LazyMatrix(Tensor stored)
    {
        Base = stored;
        _map = ResidualMap.Identity((int)stored.shape[1]);
    }

    public long Rows => Base.shape[0];
    public int Dim => (int)Base.shape[1];

    /// <summary>True while nothing has acted on it (the matrix is the stored one).</summary>
    public bool IsIdentity => _map.IsIdentity && _terms.Count == 0;

    private static Tensor? Keep(Tensor? t) => t?.to_type(ScalarType.Float64).contiguous().alias().DetachFromDisposeScope();

    /// <summary>This ← this·M (M is not kept; its entries are copied into the composed map).</summary>
    public void RightMultiply(ResidualMap m)
    {
        using var scope = NewDisposeScope();
        var composed = _map.Then(m);
        _map.Dispose();
        _map = composed;
        for (int k = 0; k < _terms.Count; k++)
        {
            var (a, b) = _terms[k];
            var newB = m.Rows(b ?? ones(Dim, ScalarType.Float64));
            b?.Dispose();
            _terms[k] = (a, Keep(newB));
        }
    }

    /// <summary>This ← this + a·bᵀ (null means the all-ones vector; the vectors are kept as float64 copies' handles).</summary>
    public void AddOuter(Tensor? a, Tensor? b)
    {
        using var scope = NewDisposeScope();
        _terms.Add((Keep(a), Keep(b)));
    }

    /// <summary>this·v [n] (float64) for v [d]: Base·(R·v) + Σ a_k (b_k·v), widened to float64 in row blocks.</summary>
    public Tensor MatVec(Tensor v)
    {
        using var scope = NewDisposeScope();
        var w = _map.Column(v.to_type(ScalarType.Float64));
        Tensor y;
        if (Base.dtype == ScalarType.Float64) y = matmul(Base, w);
        else
        {
            var parts = new List<Tensor>();
            long block = Math.Max(1, (1L << 20) / Dim);
            for (long r = 0; r < Rows; r += block)
                parts.Add(matmul(Base.narrow(0, r, Math.Min(block, Rows - r)).to_type(ScalarType.Float64), w));
            y = cat(parts, 0);
        }
        foreach (var (a, b) in _terms)
        {
            var bv = b is null ? v.to_type(ScalarType.Float64).sum() : b.dot(v.to_type(ScalarType.Float64));
            y = a is null ? y + bv : y + a * bv;
        }
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>Rows <paramref name="index"/> [T] of the matrix, [T, d] float64.</summary>
    public Tensor Gather(Tensor index)
    {
        using var scope = NewDisposeScope();
        var x = _map.Rows(Base.index_select(0, index).to_type(ScalarType.Float64));
        foreach (var (a, b) in _terms) x = AddTerm(x, a?.index_select(0, index), b);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// y·thisᵀ [T, n] for y [T, d]: (y·Rᵀ)·Baseᵀ in the base's dtype plus the terms' (y·b_k)·a_kᵀ in float64. With
    /// nothing applied it is exactly y·Baseᵀ (the reference's own product).
    /// </summary>
    public Tensor Project(Tensor y)
    {
        using var scope = NewDisposeScope();
        var z = _map.IsIdentity ? y : _map.RowsTransposed(y.to_type(ScalarType.Float64)).to_type(Base.dtype);
        var logits = matmul(z, Base.t());
        if (_terms.Count > 0)
        {
            var y64 = y.to_type(ScalarType.Float64);
            logits = logits.to_type(ScalarType.Float64);
            foreach (var (a, b) in _terms)
            {
                var yb = (b is null ? y64.sum(-1) : matmul(y64, b)).unsqueeze(-1);   // [T, 1]
                logits = a is null ? logits + yb : logits + yb * a;
            }
        }
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>The matrix, [n, d] float64 (a new tensor): Base·R, then each term added in order.</summary>
    public Tensor Materialize()
    {
        using var scope = NewDisposeScope();
        var m = Base.to_type(ScalarType.Float64);
        if (!_map.IsIdentity) m = _map.Rows(m);
        foreach (var (a, b) in _terms) m = AddTerm(m, a, b);
        return m.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>x + a·bᵀ with the all-ones cases as plain broadcasts (x + b, x + a·1ᵀ), so that an offset is one exact add.</summary>
    private static Tensor AddTerm(Tensor x, Tensor? a, Tensor? b) => (a, b) switch
    {
        (null, null) => x + 1.0,
        (null, var bb) => x + bb!,
        (var aa, null) => x + aa!.unsqueeze(-1),
        (var aa, var bb) => x + aa!.unsqueeze(-1) * bb!,
    };

    public void Dispose()
    {
        _map.Dispose();
        foreach (var (a, b) in _terms)
        {
            a?.Dispose();
            b?.Dispose();
        }
        _terms.Clear();
    }
}
