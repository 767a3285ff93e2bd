using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// Reproducible randomness for gauge sampling: every draw comes from a generator seeded by a stable hash of
/// (seed, stream, layer, family), so an element does not depend on what else was sampled or in what order.
/// All draws are float64.
/// </summary>
public sealed class GaugeRandom
{
    public long Seed { get; }

    public GaugeRandom(long seed) => Seed = seed;

    public Generator For(int stream, int layer, string what)
    {
        ulong h = 1469598103934665603UL ^ (ulong)Seed * 0x9E3779B97F4A7C15UL;
        void Mix(ulong v) { h ^= v; h *= 1099511628211UL; h ^= h >> 29; }
        Mix((ulong)stream);
        Mix((ulong)(layer + 7));
        foreach (char ch in what) Mix(ch);
        return new Generator(h & 0x7FFFFFFFFFFFFFFFUL);
    }

    /// <summary>A random orthogonal n×n (QR of a Gaussian, signs fixed so the distribution is Haar).</summary>
    public static Tensor Orthogonal(long n, Generator g, long batch = 0)
    {
        using var scope = NewDisposeScope();
        var z = batch > 0 ? randn([batch, n, n], ScalarType.Float64, generator: g) : randn([n, n], ScalarType.Float64, generator: g);
        var (q, r) = linalg.qr(z);
        var signs = r.diagonal(dim1: -2, dim2: -1).sign();
        signs = where(signs == 0, ones_like(signs), signs);
        return (q * signs.unsqueeze(-2)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A batch of well-conditioned invertible matrices Q₁ Λ Q₂ᵀ with Λ uniform in [0.5, 2] (condition number ≤ 4,
    /// far below the 10³ cap, which is still checked).
    /// </summary>
    public static Tensor Invertible(long batch, long n, Generator g)
    {
        using var scope = NewDisposeScope();
        var q1 = Orthogonal(n, g, batch);
        var q2 = Orthogonal(n, g, batch);
        var lam = rand([batch, n], ScalarType.Float64, generator: g) * 1.5 + 0.5;
        var a = matmul(q1 * lam.unsqueeze(-2), q2.transpose(-2, -1));
        // Q₁ and Q₂ are orthogonal, so a's singular values are Λ: its condition number is max Λ / min Λ (no SVD; a
        // batched svdvals was a third of qk's and vo's per-layer draw on gpt2-xl).
        double cond = (lam.amax([-1]) / lam.amin([-1])).max().item<double>();
        if (!(cond <= 1e3)) throw new InvalidOperationException($"sampled matrix has condition number {cond:G3} > 1e3");
        return a.MoveToOuterDisposeScope();
    }

    /// <summary>A random permutation of 0..n-1.</summary>
    public static Tensor Permutation(long n, Generator g) => randperm(n, generator: g, dtype: ScalarType.Int64);

    /// <summary>Gaussian shift with standard deviation 0.1 × rms(reference) (1 when the reference is all zeros).</summary>
    public static Tensor Shift(long[] shape, Tensor reference, Generator g) => Shift(shape, Rms(reference), g);

    /// <summary><see cref="Shift(long[], Tensor, Generator)"/> for a reference whose <see cref="Rms"/> is already known.</summary>
    public static Tensor Shift(long[] shape, double referenceRms, Generator g)
    {
        double rms = referenceRms;
        if (!(rms > 0)) rms = 1.0;
        return randn(shape, ScalarType.Float64, generator: g) * (0.1 * rms);
    }

    /// <summary>
    /// The root mean square of a tensor, in float64. A float64 tensor gets exactly the reduction every earlier
    /// release used (so seeds keep their elements bit for bit); a tensor in another dtype is widened in blocks of rows,
    /// so that sampling on a float32 embedding never needs a float64 copy of it (gpt2-xl's wte would be 643 MB).
    /// </summary>
    public static double Rms(Tensor reference)
    {
        using var scope = NewDisposeScope();
        if (reference.dtype == ScalarType.Float64) return reference.square().mean().sqrt().item<double>();
        long n = reference.numel();
        if (n == 0) return 0;
        if (reference.dim() < 2 || n <= 1 << 20) return reference.to_type(ScalarType.Float64).square().mean().sqrt().item<double>();
        var rows = reference.reshape(reference.shape[0], -1);
        long block = Math.Max(1, (1 << 20) / rows.shape[1]);
        double sum = 0;
        for (long r = 0; r < rows.shape[0]; r += block)
        {
            using var part = rows.narrow(0, r, Math.Min(block, rows.shape[0] - r)).to_type(ScalarType.Float64);
            sum += part.square().sum().item<double>();
        }
        return Math.Sqrt(sum / n);
    }

    /// <summary>+1 or −1 with equal probability (one uniform draw).</summary>
    public static double Sign(Generator g)
    {
        using var u = rand([1], ScalarType.Float64, generator: g);
        return u.item<double>() < 0.5 ? -1.0 : 1.0;
    }

    /// <summary>Per-entry gains s with log|s| uniform in [−ln 2, ln 2] (|s| ∈ [0.5, 2]) and random signs, as the LayerNorm-gain family draws them.</summary>
    public static Tensor Gains(long n, Generator g)
    {
        var mag = (rand([n], ScalarType.Float64, generator: g) * 2 - 1) * Math.Log(2.0);
        var sign = (rand([n], ScalarType.Float64, generator: g) < 0.5).to_type(ScalarType.Float64) * 2 - 1;
        return mag.exp() * sign;
    }

    /// <summary>
    /// A Haar-random orthogonal d×d with Q·1 = 1: a basis whose first vector is 1/√d, a random rotation of its
    /// orthogonal complement. Such a Q preserves the mean and the centred norm of a row vector, so it commutes with
    /// LayerNorm's normalization (GAUGE.md §2b family 16).
    /// </summary>
    public static Tensor OrthogonalFixingOnes(int d, Generator g)
    {
        using var scope = NewDisposeScope();
        var m = randn([d, d], ScalarType.Float64, generator: g);
        m[.., 0] = ones(d, ScalarType.Float64);
        var (basis, _) = linalg.qr(m);
        basis = basis * basis[0, 0].sign();
        var inner = Orthogonal(d - 1, g);
        var block = zeros([d, d], ScalarType.Float64);
        block[0, 0] = tensor(1.0);
        block[TensorIndex.Slice(1), TensorIndex.Slice(1)] = inner;
        var q = matmul(matmul(basis, block), basis.t());
        return q.MoveToOuterDisposeScope();
    }
}
