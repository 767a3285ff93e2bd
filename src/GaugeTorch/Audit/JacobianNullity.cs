using System.Diagnostics;
using GaugeTorch.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Audit;

/// <summary>Raised before any large allocation when a nullity shape would not fit in memory.</summary>
public sealed class AuditMemoryException(string message) : InvalidOperationException(message);

/// <summary>Options of a nullity run.</summary>
public sealed record NullityOptions
{
    /// <summary>Random token sequences; 0 picks enough for <see cref="Oversample"/> × the parameter count of outputs.</summary>
    public int Sequences { get; init; }
    /// <summary>
    /// Independent outputs per parameter when <see cref="Sequences"/> is 0. Rows of one sequence are correlated, so
    /// 2× was not always enough: (L=3, d=4, h=2, F=8, V=7, P=3, untied) gave nullity 274 with an unclear gap of 2.3e2 at
    /// 2×, and the formula's 250 with a gap of 3.2e7 at 200 sequences (≈ 6×); 4× costs little (the rows are cheap and
    /// LAPACK reduces a tall Jacobian by QR first).
    /// </summary>
    public double Oversample { get; init; } = 4.0;
    public long Seed { get; init; }
    /// <summary>Parameter copies (sequences) per batched backward pass.</summary>
    public int Batch { get; init; } = 128;
    /// <summary>The memory the run may use; null reads <see cref="AvailableMemory.Bytes"/>.</summary>
    public long? AvailableBytes { get; init; }
}

/// <summary>The outcome of a nullity run.</summary>
public sealed record NullityResult
{
    public required ModelTraits Traits { get; init; }
    /// <summary>p, the number of parameters (columns of the Jacobian).</summary>
    public required long Parameters { get; init; }
    /// <summary>The catalog's continuous dimension for these traits.</summary>
    public required long Formula { get; init; }
    public required int Sequences { get; init; }
    public required int SequenceLength { get; init; }
    /// <summary>m, the Jacobian's rows: sequences × positions × (V − 1) independent row-centred logits.</summary>
    public required long Outputs { get; init; }
    public required long Rank { get; init; }
    public long Nullity => Parameters - Rank;
    /// <summary>σ_rank / σ_rank+1: the singular-value gap at the rank decision (∞ when nothing is dropped).</summary>
    public required double Gap { get; init; }
    /// <summary>The rank threshold relative to σ_max: max(m, p)·ε.</summary>
    public required double RelativeTolerance { get; init; }
    /// <summary>σ_rank / σ_max, the smallest singular value counted.</summary>
    public required double SmallestKept { get; init; }
    /// <summary>σ_rank+1 / σ_max, the largest singular value dropped (0 when none).</summary>
    public required double LargestDropped { get; init; }
    /// <summary>The smallest dropped-side singular value relative to σ_max (the floor of the null space).</summary>
    public required double SmallestDropped { get; init; }
    /// <summary>Kept singular values below 1e-4·σ_max (relative): symmetries broken only weakly, e.g. by a norm's eps.</summary>
    public required double[] WeakKept { get; init; }
    public required long EstimatedBytes { get; init; }
    public required double JacobianSeconds { get; init; }
    public required double SvdSeconds { get; init; }

    /// <summary>True when the rank decision has a clear gap (<see cref="JacobianNullity.MinimumGap"/>).</summary>
    public bool Clear => Gap >= JacobianNullity.MinimumGap;
    /// <summary>The catalog is certified on this shape: the nullity equals the formula with a clear gap.</summary>
    public bool Certified => Nullity == Formula && Clear;
}

/// <summary>
/// Certifies the catalog's completeness on one shape (GAUGE.md §2 "completeness evidence", §6.2): the nullity of
/// the Jacobian of the row-centred logits with respect to every parameter, at random float64 weights over random
/// token sequences, must equal the catalog's continuous dimension. Every continuous symmetry is a null direction of
/// that Jacobian; with enough generic inputs, only symmetries are.
/// <para>
/// The rank decision. The singular values σ of the Jacobian as computed come from LAPACK (svdvals). A singular value
/// counts when σ > τ = σ_max·max(m, p)·ε₆₄, the standard numerical-rank tolerance (LAPACK's and NumPy's): rounding
/// perturbs a float64 matrix by about ε times its norm per entry, which moves the exact zeros up to that bound and
/// no further. The columns are not rescaled: the random model's weights are on scales that keep every activation
/// O(1), and some columns are zero in exact arithmetic (the key biases: family 4 makes ∂Y/∂b_K ≡ 0), whose rounding
/// noise (norm 1.7e-15) unit scaling would blow up into full-rank directions; tried, it gave 216 instead of 224 on
/// GAUGE.md's first shape. Directions that a model breaks only weakly are not null: RMSNorm's eps (1e-6) and LayerNorm's eps
/// (1e-5) break the residual scale, measured at σ/σ_max = 3e-9 … 3e-7 (GAUGE.md §6.2 quotes 1e-6 for its scales),
/// three to six orders above τ; they are counted in the rank and listed as <see cref="NullityResult.WeakKept"/>.
/// The exact null space lies at 5e-16 … 3e-15 of σ_max (measured, docs/audit.md).
/// The gap σ_rank/σ_rank+1 is reported; a decision is clear when it is at least <see cref="MinimumGap"/>, and
/// only a clear decision certifies.
/// </para>
/// </summary>
public static class JacobianNullity
{
    /// <summary>The smallest gap that makes a rank decision clear (three orders of magnitude around τ).</summary>
    public const double MinimumGap = 1e3;

    /// <summary>Singular values at or below this fraction of σ_max that are still counted are reported as weakly broken.</summary>
    public const double WeakThreshold = 1e-4;

    /// <summary>Sequences needed for <paramref name="o"/>: explicit, or enough for Oversample × p outputs.</summary>
    public static int SequencesFor(ModelTraits t, long parameters, NullityOptions o)
    {
        if (o.Sequences > 0) return o.Sequences;
        long perSeq = (long)t.MaxPositions * (t.Vocab - 1);
        double n = Math.Max(1, Math.Ceiling(o.Oversample * parameters / perSeq));
        if (n > int.MaxValue) throw new AuditMemoryException($"{t.Describe()}: the Jacobian nullity would need {n:G3} sequences of {t.MaxPositions} positions for its {parameters:N0} parameters; choose a smaller shape");
        return (int)n;
    }

    /// <summary>
    /// Peak bytes of a run, estimated before anything large is allocated: the Jacobian m×p (float64) twice (LAPACK
    /// works on a copy), the SVD's p×p workspace, and per batch of sequences the parameter copies, their gradients
    /// and the autograd graph's saved activations.
    /// </summary>
    public static double EstimateBytes(ModelTraits t, long parameters, int sequences, int batch)
    {
        double m = (double)sequences * t.MaxPositions * (t.Vocab - 1), p = parameters;
        int b = Math.Min(batch, sequences);
        double T = t.MaxPositions, d = t.Hidden, f = t.Inner, h = t.QueryHeads, hd = t.HeadDim;
        double perLayer = T * (14 * d + 5 * f + 3 * h * T + 6 * h * hd);
        double graph = b * (t.Layers * perLayer + 4 * T * t.Vocab + 4 * T * d);
        return 8 * (2 * m * p + 2 * p * p + 4 * b * p + graph) + (256L << 20);   // the process itself (.NET, libtorch): a nullity run of the smallest shapes peaks near 200 MB
    }

    public static NullityResult Run(ModelTraits t, IEnumerable<FamilyRow> catalog, NullityOptions o, IProgress<(long Done, long Total)>? progress = null)
    {
        if (o.Sequences < 0) throw new ArgumentException($"sequences must be positive (got {o.Sequences})");
        if (o.Batch < 1) throw new ArgumentException($"batch must be positive (got {o.Batch})");
        long formula = RedundancyTable.For(t, catalog).Total;
        long p = RedundancyTable.ParameterCount(t);
        int n = SequencesFor(t, p, o);
        int T = t.MaxPositions, V = t.Vocab;
        long rowsPerSeq = (long)T * (V - 1), m = n * rowsPerSeq;
        if (m <= p)
            throw new ArgumentException($"{t.Describe()}: {n} sequences give {m:N0} outputs, not more than the {p:N0} parameters, so the Jacobian's rank " +
                $"cannot reveal its nullity; use at least {p / rowsPerSeq + 1} sequences ({Math.Ceiling(o.Oversample * p / rowsPerSeq)} by default)");
        double need = EstimateBytes(t, p, n, o.Batch);
        long avail = o.AvailableBytes ?? AvailableMemory.Bytes();
        if (need > avail)
            throw new AuditMemoryException($"{t.Describe()}: the Jacobian nullity needs about {AvailableMemory.Format(need)} " +
                $"(a {m:N0} × {p:N0} float64 Jacobian, twice for the SVD) but only {AvailableMemory.Format(avail)} is available; choose a smaller shape or fewer sequences");

        using var scope = NewDisposeScope();
        var sw = Stopwatch.StartNew();
        using var model = RandomModel.Build(t, o.Seed);
        if (RedundancyTable.ParameterCount(t) != model.Layers.Sum(l => l.Named().Sum(x => x.Tensor.numel())) + model.Globals.Named().Sum(x => x.Tensor.numel()))
            throw new InvalidOperationException($"{t.Describe()}: the parameter count does not match the views (internal error)");
        var jac = empty(m, p, dtype: ScalarType.Float64);
        var gen = new Generator((ulong)(o.Seed * 7919 + 13) & 0x7FFFFFFFFFFFFFFFUL);
        var allTokens = randint(0, V, [n, T], dtype: ScalarType.Int64, generator: gen);
        TorchThreads.SingleThreaded(() =>
        {
            long row = 0;
            for (int start = 0; start < n; start += o.Batch)
            {
                using var chunkScope = NewDisposeScope();
                int b = Math.Min(o.Batch, n - start);
                var layers = model.Layers.Select(l => BatchedForward.Replicate(l, b)).ToList();
                var globals = BatchedForward.Replicate(model.Globals, b);
                var leaves = layers.SelectMany(l => l.Named()).Concat(globals.Named()).Select(x => x.Tensor).ToList();
                var y = Forward.RowCentre(BatchedForward.Logits(allTokens.narrow(0, start, b), layers, globals, t));   // [b, T, V]
                var seed = zeros_like(y);
                for (int pos = 0; pos < T; pos++)
                    for (int v = 0; v < V - 1; v++)   // the row-centred logits of a position sum to 0: V − 1 are independent
                    {
                        using var rowScope = NewDisposeScope();
                        seed.select(1, pos).select(1, v).fill_(1.0);
                        var grads = torch.autograd.grad([y], leaves, [seed], retain_graph: true);
                        seed.select(1, pos).select(1, v).fill_(0.0);
                        jac.narrow(0, row, b).copy_(cat(grads.Select(gr => gr.reshape(b, -1)).ToArray(), 1));
                        row += b;
                    }
                progress?.Report((row, m));
            }
            return 0;
        });
        double jacSeconds = sw.Elapsed.TotalSeconds;
        sw.Restart();

        // One thread: LAPACK's bidiagonalization is memory-bound, and on a shared machine OpenMP's spinning made it
        // 2.4–7× slower with two threads than with one (5220 × 2608: 36.6 / 78.2 s against 15.4 / 10.8 s, interleaved).
        var sv = TorchThreads.SingleThreaded(() => linalg.svdvals(jac));
        jac.Dispose();
        var s = sv.data<double>().ToArray();   // descending
        double svdSeconds = sw.Elapsed.TotalSeconds;

        double smax = s[0];
        double relTol = Math.Max(m, p) * Math.Pow(2, -52);
        long rank = s.Count(x => x > smax * relTol);
        // Singular values beyond min(m, p) are exactly zero: p − rank counts them too.
        double kept = rank > 0 ? s[rank - 1] : 0, dropped = rank < s.Length ? s[rank] : 0;
        double gap = rank == 0 ? 0 : (dropped > 0 ? kept / dropped : double.PositiveInfinity);
        return new NullityResult
        {
            Traits = t, Parameters = p, Formula = formula, Sequences = n, SequenceLength = T, Outputs = m, Rank = rank, Gap = gap,
            RelativeTolerance = relTol, SmallestKept = kept / smax, LargestDropped = dropped / smax,
            SmallestDropped = rank < s.Length ? s[^1] / smax : 0,
            WeakKept = s.Take((int)rank).Where(x => x <= WeakThreshold * smax).Select(x => x / smax).ToArray(),
            EstimatedBytes = (long)need, JacobianSeconds = jacSeconds, SvdSeconds = svdSeconds,
        };
    }
}
