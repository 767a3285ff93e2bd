using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// A linear map of the residual space acting on row vectors, x ↦ x·R (x [.., d]): the identity, a monomial map
/// (x·R)[j] = s[j]·x[π[j]] (a signed permutation, a diagonal, or both), or a dense float64 d×d matrix. Global
/// families compose these on the embedding and the head (<see cref="LazyMatrix"/>) without ever forming a [V, d]
/// product: a permutation or a gain stays an index and a vector, and only a rotation is dense.
/// The map owns its tensors (its own handles, outside every dispose scope); <see cref="Dispose"/> frees them.
/// </summary>
public sealed class ResidualMap : IDisposable
{
    private readonly Tensor? _index;   // [d] int64 π; null: the identity permutation
    private readonly Tensor? _inverse; // [d] int64 π⁻¹
    private readonly Tensor? _scale;   // [d] float64 s; null: ones
    private readonly Tensor? _dense;   // [d, d] float64

    public int Dim { get; }

    private ResidualMap(int d, Tensor? index, Tensor? scale, Tensor? dense)
    {
        using var scope = NewDisposeScope();
        Dim = d;
        _index = index is null ? null : Keep(index);
        _inverse = index is null ? null : Keep(index.argsort());
        _scale = scale is null ? null : Keep(scale);
        _dense = dense is null ? null : Keep(dense);
    }

    private static Tensor Keep(Tensor t) => t.contiguous().alias().DetachFromDisposeScope();

    public static ResidualMap Identity(int d) => new(d, null, null, null);

    /// <summary>(x·R)[j] = sign·x[index[j]].</summary>
    public static ResidualMap SignedPermutation(Tensor index, double sign)
    {
        using var scope = NewDisposeScope();
        int d = (int)index.shape[0];
        return new ResidualMap(d, index, sign == 1.0 ? null : full(d, sign, ScalarType.Float64), null);
    }

    /// <summary>(x·R)[j] = s[j]·x[j].</summary>
    public static ResidualMap Diagonal(Tensor s) => new((int)s.shape[0], null, s.to_type(ScalarType.Float64), null);

    /// <summary>x·M for a float64 [d, d] matrix.</summary>
    public static ResidualMap Dense(Tensor m) => new((int)m.shape[0], null, null, m.to_type(ScalarType.Float64));

    public bool IsIdentity => _index is null && _scale is null && _dense is null;
    public bool IsDense => _dense is not null;

    /// <summary>x·R for x [.., d] (in x's dtype; the map's float64 entries are cast to it).</summary>
    public Tensor Rows(Tensor x)
    {
        if (IsIdentity) return x.alias();
        if (_dense is not null) return matmul(x, _dense.to_type(x.dtype));
        var y = _index is null ? x : x.index_select(-1, _index);
        return _scale is null ? y.alias() : y * _scale.to_type(x.dtype);
    }

    /// <summary>x·Rᵀ for x [.., d].</summary>
    public Tensor RowsTransposed(Tensor x)
    {
        if (IsIdentity) return x.alias();
        if (_dense is not null) return matmul(x, _dense.t().to_type(x.dtype));
        // (x·Rᵀ)[π[j]] = s[j]·x[j]
        var y = _scale is null ? x : x * _scale.to_type(x.dtype);
        return _inverse is null ? y.alias() : y.index_select(-1, _inverse);
    }

    /// <summary>R·v for a column vector v [d].</summary>
    public Tensor Column(Tensor v) => RowsTransposed(v);

    /// <summary>R·next: x ↦ (x·R)·next. A new map; neither input is changed.</summary>
    public ResidualMap Then(ResidualMap next)
    {
        if (next.Dim != Dim) throw new ArgumentException($"residual maps of different sizes ({Dim}, {next.Dim})");
        using var scope = NewDisposeScope();
        if (next.IsIdentity) return Copy();
        if (IsIdentity) return next.Copy();
        if (_dense is not null || next._dense is not null) return Dense(matmul(ToDense(), next.ToDense()));
        // z[k] = s₂[k]·y[π₂[k]], y[j] = s₁[j]·x[π₁[j]]  ⇒  π = π₁[π₂], s = s₂ ∘ s₁[π₂]
        Tensor? index = (_index, next._index) switch
        {
            (null, null) => null,
            (null, var b) => b,
            (var a, null) => a,
            (var a, var b) => a!.index_select(0, b!),
        };
        Tensor? s1 = _scale is null ? null : next._index is null ? _scale : _scale.index_select(0, next._index);
        Tensor? scale = (s1, next._scale) switch
        {
            (null, null) => null,
            (null, var b) => b,
            (var a, null) => a,
            (var a, var b) => a! * b!,
        };
        return new ResidualMap(Dim, index, scale, null);
    }

    /// <summary>The map as a float64 [d, d] matrix (a new tensor).</summary>
    public Tensor ToDense()
    {
        if (_dense is not null) return _dense.clone();
        using var scope = NewDisposeScope();
        var m = eye(Dim, dtype: ScalarType.Float64);
        return Rows(m).contiguous().MoveToOuterDisposeScope();   // row i of I·R is e_i·R
    }

    private ResidualMap Copy() => new(Dim, _index, _scale, _dense);

    public void Dispose()
    {
        _index?.Dispose();
        _inverse?.Dispose();
        _scale?.Dispose();
        _dense?.Dispose();
    }
}
