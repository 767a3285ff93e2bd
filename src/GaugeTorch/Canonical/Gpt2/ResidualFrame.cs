using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>How step 4b moved the residual stream.</summary>
public enum ResidualFrameKind
{
    /// <summary>Nothing moved (the paper form, or an input already in its canonical frame).</summary>
    Identity,
    /// <summary>Tied head: a permutation of the d residual coordinates and a global sign (family 11, S_d × Z₂).</summary>
    Permutation,
    /// <summary>Untied head: an orthogonal R with R·1 = 1 (family 16, which contains family 11).</summary>
    Rotation,
}

/// <summary>
/// The residual frame fixed by GAUGE.md §5 step 4b, x_new = x_old·F with F = σP (tied) or R (untied). Every
/// reader of the residual stream takes Fᵀ on its rows (<see cref="Reader"/>), every writer and embedding F on its
/// columns (<see cref="Writer"/>). The fused layer kernels apply a permutation and sign themselves (a row
/// permutation of the readers, a column permutation of the writers); these torch helpers serve the small and the
/// global tensors and the rotation.
/// </summary>
public sealed class ResidualFrame : IDisposable
{
    private Tensor? _permT;

    public ResidualFrameKind Kind { get; private init; }
    /// <summary>Permutation: canonical coordinate j holds original coordinate Perm[j].</summary>
    public int[]? Perm { get; private init; }
    /// <summary>Permutation: original coordinate i goes to canonical coordinate Inverse[i].</summary>
    public int[]? Inverse { get; private init; }
    /// <summary>Permutation: the global sign σ = ±1.</summary>
    public double Sign { get; private init; } = 1.0;
    /// <summary>Rotation: R [d, d] (float64, orthogonal, R·1 = 1).</summary>
    public Tensor? R { get; private init; }

    public bool IsIdentity => Kind == ResidualFrameKind.Identity;

    public static ResidualFrame Identity() => new() { Kind = ResidualFrameKind.Identity };

    /// <summary>σP; the identity when the permutation is the identity and σ = 1.</summary>
    public static ResidualFrame Permutation(int[] perm, double sign)
    {
        bool id = sign == 1.0;
        for (int j = 0; id && j < perm.Length; j++) id = perm[j] == j;
        if (id) return Identity();
        var inv = new int[perm.Length];
        for (int j = 0; j < perm.Length; j++) inv[perm[j]] = j;
        return new() { Kind = ResidualFrameKind.Permutation, Perm = perm, Inverse = inv, Sign = sign };
    }

    /// <summary>A rotation (the tensor is owned by the frame from now on).</summary>
    public static ResidualFrame Rotation(Tensor r) => new() { Kind = ResidualFrameKind.Rotation, R = r.DetachFromDisposeScope() };

    private Tensor PermTensor => _permT ??= tensor(Perm!.Select(i => (long)i).ToArray(), ScalarType.Int64).DetachFromDisposeScope();

    /// <summary>A writer or embedding [n, d] in the new frame: σ·W[:, P] or W·R (a new float64 tensor).</summary>
    public Tensor Writer(Tensor w) => Kind switch
    {
        ResidualFrameKind.Identity => w.to_type(ScalarType.Float64).clone(),
        ResidualFrameKind.Permutation => w.to_type(ScalarType.Float64).index_select(1, PermTensor).mul_(Sign),
        _ => matmul(w.to_type(ScalarType.Float64), R!),
    };

    /// <summary>A writer's bias [d] in the new frame.</summary>
    public Tensor WriterVector(Tensor b)
    {
        using var scope = NewDisposeScope();
        return Writer(b.unsqueeze(0)).squeeze(0).MoveToOuterDisposeScope();
    }

    /// <summary>A reader [d, n] (LayerNorm already folded in) in the new frame: σ·W[P, :] or Rᵀ·W (a new float64 tensor).</summary>
    public Tensor Reader(Tensor w) => Kind switch
    {
        ResidualFrameKind.Identity => w.to_type(ScalarType.Float64).clone(),
        ResidualFrameKind.Permutation => w.to_type(ScalarType.Float64).index_select(0, PermTensor).mul_(Sign),
        _ => matmul(R!.t(), w.to_type(ScalarType.Float64)),
    };

    /// <summary>A per-coordinate vector [d] moved without the sign (the tied γ_f: γ_f → γ_f P).</summary>
    public Tensor Permuted(Tensor v) => Kind == ResidualFrameKind.Permutation ? v.index_select(0, PermTensor) : v.clone();

    public void Dispose()
    {
        _permT?.Dispose();
        R?.Dispose();
    }
}
