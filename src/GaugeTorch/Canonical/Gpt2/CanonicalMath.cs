using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>
/// Shared numerics of the canonical forms: the factored SVD of a low-rank composite (QR of both factors, SVD of
/// the small core, never the big product), the sign rule, and a deterministic tolerance-aware sort.
/// Everything here is float64.
/// </summary>
internal static class CanonicalMath
{
    /// <summary>
    /// Cholesky factors of a Gram matrix are accepted when the smallest diagonal entry is at least this fraction of
    /// the largest (a lower bound on 1/κ of the factor). Gram-based factors lose about ε·κ² of accuracy, so with
    /// κ ≲ 10³ the balanced factors stay within ~1e-10 of the Householder ones; other heads use Householder QR.
    /// </summary>
    public const double CholeskyAcceptance = 1e-3;

    /// <summary>
    /// For a batch of factor pairs A [b, m, r], B [b, n, r] (m, n ≥ r), the balanced factors of the thin SVD of each
    /// composite <c>A Bᵀ = U diag(S) Vᵀ</c>: X = U·S^{1/2} [b, m, r], Y = V·S^{1/2} [b, n, r] and S [b, r]
    /// (descending), with the sign rule applied, and the number of Householder fallbacks. See <see cref="BalancingTransforms(Tensor, Tensor, double)"/>.
    /// </summary>
    public static (Tensor X, Tensor S, Tensor Y, int Fallbacks) BalancedFactors(Tensor a, Tensor b, double rankTolerance, double tie = CanonicalForm.GapTolerance)
    {
        using var scope = NewDisposeScope();
        var (ta, s, tb, fallbacks) = BalancingTransforms(a, b, rankTolerance);
        var x = matmul(a, ta);
        var y = matmul(b, tb);
        var sign = SignsOfColumns(x, tie).unsqueeze(1);
        return ((x * sign).MoveToOuterDisposeScope(), s.MoveToOuterDisposeScope(), (y * sign).MoveToOuterDisposeScope(), fallbacks);
    }

    /// <summary>
    /// The r×r transforms T_A, T_B [b, r, r] with X = A·T_A = U·S^{1/2} and Y = B·T_B = V·S^{1/2} for each composite
    /// <c>A Bᵀ = U diag(S) Vᵀ</c> (signs not yet fixed), S [b, r] descending, and how many batch entries needed the
    /// Householder fallback. The product is never formed: with square-root factors F_A, F_B (F_Aᵀ F_A = AᵀA, so
    /// A = Q_A F_A with orthonormal Q_A), the r×r core F_A F_Bᵀ = U_c S V_cᵀ gives U = Q_A U_c, V = Q_B V_c, hence
    /// U·S = A·F_Bᵀ V_c and V·S = B·F_Aᵀ U_c: T_A = F_Bᵀ V_c S^{-1/2}, T_B = F_Aᵀ U_c S^{-1/2}. Singular values at
    /// or below <paramref name="rankTolerance"/> × the entry's largest are set to exactly 0 with zero columns in the
    /// transforms, so rank-deficient and zero composites give finite, unique factors. Runs single-threaded.
    /// </summary>
    public static (Tensor TA, Tensor S, Tensor TB, int Fallbacks) BalancingTransforms(Tensor a, Tensor b, double rankTolerance)
    {
        using var scope = NewDisposeScope();
        var (ta, s, tb, n) = BalancingTransforms(Gram(a), a, Gram(b), b, rankTolerance);
        return (ta.MoveToOuterDisposeScope(), s.MoveToOuterDisposeScope(), tb.MoveToOuterDisposeScope(), n);
    }

    /// <summary>Gram matrices AᵀA [b, r, r] of a batch A [b, m, r].</summary>
    public static Tensor Gram(Tensor a) => matmul(a.transpose(1, 2), a);

    /// <summary>
    /// <see cref="BalancingTransforms"/> from precomputed Gram matrices (<paramref name="ga"/> = AᵀA, <paramref name="gb"/> = BᵀB);
    /// A and B are read only for the Householder fallback.
    /// </summary>
    public static (Tensor TA, Tensor S, Tensor TB, int Fallbacks) BalancingTransforms(Tensor ga, Tensor a, Tensor gb, Tensor b, double rankTolerance) =>
        TorchThreads.SingleThreaded(() =>
        {
            using var scope = NewDisposeScope();
            var (fa, na) = SquareRootFactor(ga, a);
            var (fb, nb) = SquareRootFactor(gb, b);
            PhaseClock.Mark("canon: factors (Cholesky)");
            var (ta, s, tb) = TransformsFromFactors(fa, fb, rankTolerance);
            PhaseClock.Mark("canon: factors (SVD)");
            return (ta.MoveToOuterDisposeScope(), s.MoveToOuterDisposeScope(), tb.MoveToOuterDisposeScope(), na + nb);
        });

    private static (Tensor TA, Tensor S, Tensor TB) TransformsFromFactors(Tensor fa, Tensor fb, double rankTolerance)
    {
        var core = matmul(fa, fb.transpose(1, 2));
        var (uc, s, vch) = linalg.svd(core, fullMatrices: false);
        var smax = s.select(1, 0).unsqueeze(1);                   // [b, 1]
        var keep = s > smax * rankTolerance;                       // all false when the composite is exactly 0
        s = where(keep, s, zeros_like(s));
        var invRoot = where(keep, s.rsqrt(), zeros_like(s)).unsqueeze(1);   // [b, 1, r]
        var ta = matmul(fb.transpose(1, 2), vch.transpose(1, 2)) * invRoot;
        var tb = matmul(fa.transpose(1, 2), uc) * invRoot;
        return (ta, s, tb);
    }

    /// <summary>
    /// An r×r factor F [b, r, r] with Fᵀ F = AᵀA for each A [b, m, r]: the transposed Cholesky factor of the Gram
    /// matrix where it is well conditioned (<see cref="CholeskyAcceptance"/>), else the R of a Householder QR of A.
    /// Returns F and the number of Householder fallbacks.
    /// </summary>
    public static (Tensor F, int Fallbacks) SquareRootFactor(Tensor gram, Tensor a)
    {
        using var scope = NewDisposeScope();
        var (l, info) = linalg.cholesky_ex(gram);
        var diag = l.diagonal(0, 1, 2).abs();                          // [b, r]
        var ok = (info == 0).logical_and(diag.amin([1]) >= diag.amax([1]) * CholeskyAcceptance);
        var f = l.transpose(1, 2).contiguous();
        var okArray = ok.data<bool>().ToArray();
        var bad = Enumerable.Range(0, okArray.Length).Where(i => !okArray[i]).Select(i => (long)i).ToArray();
        if (bad.Length > 0)
        {
            var idx = tensor(bad, ScalarType.Int64);
            var r = linalg.qr(a.index_select(0, idx), linalg.QRMode.R).R;
            f.index_copy_(0, idx, r);
        }
        return (f.MoveToOuterDisposeScope(), bad.Length);
    }

    /// <summary>
    /// The sign rule for a batch of factors X [b, m, r]: ±1 [b, r] per column, see <see cref="SignRule"/> (ties within
    /// <paramref name="tie"/> broken by the third moment).
    /// </summary>
    public static Tensor SignsOfColumns(Tensor x, double tie = CanonicalForm.GapTolerance)
    {
        using var scope = NewDisposeScope();
        var c = x.to_type(ScalarType.Float64).contiguous();
        long b = c.shape[0], m = c.shape[1], r = c.shape[2];
        var stats = CanonicalKernels.ColumnSignStats(NativeTensorAccess.DataPointer(c), b, m, r, tie);
        var signs = new double[b * r];
        for (int i = 0; i < signs.Length; i++) signs[i] = SignRule(stats[i], tie, tie).Sign;
        return tensor(signs, ScalarType.Float64).view(b, r).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The sign rule of GAUGE.md §5 step 7 for one column: +1 when its entry of largest magnitude is positive. When the
    /// largest positive and the largest negative magnitude agree within <paramref name="tol"/> (relative), the column's
    /// third moment Σx³ decides instead (odd, so it flips with the column, and far from 0 exactly where the two
    /// extremes nearly cancel); when that too is within the tolerance (relative to Σ|x|³), the extreme that comes first
    /// decides (unbroken). <c>NearTie</c>: the margin of the magnitudes is within <paramref name="tie"/>, so storage
    /// rounding could flip the rule.
    /// </summary>
    public static (double Sign, bool NearTie, bool Unbroken) SignRule(in ColumnSignStat s, double tol, double tie)
    {
        double m = Math.Max(s.MaxPositive, s.MaxNegative);
        if (m == 0) return (1.0, false, false);
        double d1 = (s.MaxPositive - s.MaxNegative) / m;
        bool near = Math.Abs(d1) <= tie;
        if (Math.Abs(d1) > tol) return (d1 > 0 ? 1.0 : -1.0, near, false);
        if (s.AbsCubes > 0 && Math.Abs(s.Cubes) > tol * s.AbsCubes) return (s.Cubes > 0 ? 1.0 : -1.0, true, false);
        if (s.MaxPositive != s.MaxNegative) return (s.MaxPositive > s.MaxNegative ? 1.0 : -1.0, true, true);
        return (s.FirstPositive <= s.FirstNegative ? 1.0 : -1.0, true, true);
    }

    /// <summary>
    /// True when a stored column may keep its sign: some values within storage rounding (<see cref="CanonicalPrecision.Noise"/>)
    /// of the stored ones make the rule of <see cref="SignRule"/> give +.
    /// </summary>
    public static bool SignAdmissible(in ColumnSignStat s, CanonicalPrecision p)
    {
        double m = Math.Max(s.MaxPositive, s.MaxNegative);
        if (m == 0) return true;
        Span<double> d = [(s.MaxPositive - s.MaxNegative) / m, s.AbsCubes > 0 ? s.Cubes / s.AbsCubes : 0];
        Span<double> noise = [p.Noise, 2 * p.Noise];
        return Favourable(d, noise, p.Sort) != ScanResult.Reject;
    }

    /// <summary>Outcome of <see cref="Favourable"/>.</summary>
    public enum ScanResult { Accept, Reject, Tied }

    /// <summary>
    /// Whether a decision of the form can come out in favour of the first item for some values within
    /// <paramref name="noise"/> of the stored ones. <paramref name="diffs"/> are the relative differences component by
    /// component (positive: first wins); the form decides at the first component whose |difference| exceeds
    /// <paramref name="tol"/>. Scanning in that order: a component whose interval reaches above tol can decide for the
    /// first item (Accept); one whose interval lies below −tol decides against it whatever the rounding was (Reject);
    /// otherwise it can be a tie and the scan goes on (Tied when every component can).
    /// </summary>
    public static ScanResult Favourable(ReadOnlySpan<double> diffs, ReadOnlySpan<double> noise, double tol)
    {
        for (int j = 0; j < diffs.Length; j++)
        {
            double hi = diffs[j] + noise[j];
            if (hi > tol) return ScanResult.Accept;
            if (hi < -tol) return ScanResult.Reject;
        }
        return ScanResult.Tied;
    }

    /// <summary>
    /// The first position p whose stored pair (p, p+1) no values within storage rounding could have put in this
    /// order (−1: none), for items sorted by descending keys as in <see cref="TolerantSort"/>: keys relative to each
    /// component's largest |value|, with noise <paramref name="noise"/>[k] (relative to that scale); where every key
    /// can tie, <paramref name="dataDiffs"/>(a, b) gives the relative data differences (noise <see cref="CanonicalPrecision.Noise"/>).
    /// </summary>
    public static int FirstInadmissible(double[][] keys, double[] noise, CanonicalPrecision p, Func<int, int, double[]> dataDiffs)
    {
        int n = keys.Length;
        if (n < 2) return -1;
        int m = keys[0].Length;
        var scale = KeyScales(keys);
        var diffs = new double[m];
        for (int a = 0; a + 1 < n; a++)
        {
            for (int k = 0; k < m; k++) diffs[k] = scale[k] == 0 ? 0 : (keys[a][k] - keys[a + 1][k]) / scale[k];
            var r = Favourable(diffs, noise, p.Sort);
            if (r == ScanResult.Reject) return a;
            if (r == ScanResult.Tied)
            {
                var dd = dataDiffs(a, a + 1);
                if (Favourable(dd, Enumerable.Repeat(p.Noise, dd.Length).ToArray(), p.Sort) == ScanResult.Reject) return a;
            }
        }
        return -1;
    }

    /// <summary>Largest |value| of each key component over all items (the scale of <see cref="TolerantSort"/>).</summary>
    public static double[] KeyScales(double[][] keys)
    {
        int m = keys.Length == 0 ? 0 : keys[0].Length;
        var scale = new double[m];
        for (int k = 0; k < m; k++)
            foreach (var key in keys) scale[k] = Math.Max(scale[k], Math.Abs(key[k]));
        return scale;
    }

    /// <summary>
    /// The margin of the decision between two items of <see cref="TolerantSort"/>: the relative difference of the first
    /// key component beyond <paramref name="tol"/>, else of the first data entry beyond it (<paramref name="dataMargin"/>),
    /// null when nothing but the index decided.
    /// </summary>
    public static double? DecisionMargin(double[] ka, double[] kb, double[] scale, double tol, Func<double?> dataMargin)
    {
        for (int k = 0; k < ka.Length; k++)
        {
            double diff = scale[k] == 0 ? 0 : Math.Abs(ka[k] - kb[k]) / scale[k];
            if (diff > tol) return diff;
        }
        return dataMargin();
    }

    /// <summary>The relative difference of the first entry beyond tol (as in <see cref="DataCompare"/>), null when all are within it.</summary>
    public static double? DataMargin(ReadOnlySpan<double> x, ReadOnlySpan<double> y, double tol)
    {
        double s = 0;
        for (int i = 0; i < x.Length; i++) s = Math.Max(s, Math.Max(Math.Abs(x[i]), Math.Abs(y[i])));
        for (int i = 0; i < x.Length; i++)
            if (Math.Abs(x[i] - y[i]) > tol * s) return Math.Abs(x[i] - y[i]) / s;
        return null;
    }

    /// <summary>Relative entry differences x − y (scaled by the largest magnitude of either), for <see cref="Contradicts"/>.</summary>
    public static double[] RelativeDiffs(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        double s = 0;
        for (int i = 0; i < x.Length; i++) s = Math.Max(s, Math.Max(Math.Abs(x[i]), Math.Abs(y[i])));
        var d = new double[x.Length];
        if (s > 0) for (int i = 0; i < x.Length; i++) d[i] = (x[i] - y[i]) / s;
        return d;
    }

    /// <summary>
    /// Helmert's orthonormal basis of the complement of 1 in R^d, [d, d−1]: column k (0-based) ∝ e₀ + … + e_k − (k+1)e_{k+1}.
    /// A fixed basis, so the residual frame of an untied head is defined without any choice.
    /// </summary>
    public static Tensor HelmertBasis(long d)
    {
        var b = new double[d * (d - 1)];
        for (long k = 0; k < d - 1; k++)
        {
            double norm = 1.0 / Math.Sqrt((k + 1.0) * (k + 2.0));
            for (long i = 0; i <= k; i++) b[i * (d - 1) + k] = norm;
            b[(k + 1) * (d - 1) + k] = -(k + 1) * norm;
        }
        return tensor(b, ScalarType.Float64).view(d, d - 1);
    }

    /// <summary>X·B for X [n, d] and Helmert's basis B (<see cref="HelmertBasis"/>), in O(n·d) with a cumulative sum: [n, d−1] (a view of an [n, d] buffer).</summary>
    public static Tensor HelmertCoordinates(Tensor x)
    {
        using var scope = NewDisposeScope();
        long d = x.shape[1];
        var k = arange(1, d, ScalarType.Float64);                                     // k+1 for column k
        var cs = x.cumsum(1);
        var e = cs.narrow(1, 0, d - 1);
        e.addcmul_(x.narrow(1, 1, d - 1), k.unsqueeze(0), -1.0).div_((k * (k + 1)).sqrt().unsqueeze(0));
        return e.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Y·Bᵀ for Y [n, d−1] (the inverse of <see cref="HelmertCoordinates"/> on rows orthogonal to 1): [n, d]. With
    /// <paramref name="inPlace"/> Y is overwritten (scaled) and at most two more [n, d−1] temporaries live at a time.
    /// </summary>
    public static Tensor FromHelmertCoordinates(Tensor y, bool inPlace = false)
    {
        using var scope = NewDisposeScope();
        long n = y.shape[0], d = y.shape[1] + 1;
        var k = arange(1, d, ScalarType.Float64);
        var z = inPlace ? y.div_((k * (k + 1)).sqrt()) : y / (k * (k + 1)).sqrt();   // [n, d−1]
        var result = zeros(n, d, ScalarType.Float64);
        using (var flipped = z.flip(1))
        using (var partial = flipped.cumsum(1))
        using (var rc = partial.flip(1))                                              // Σ_{k ≥ i} z_k, i = 0..d−2
            result.narrow(1, 0, d - 1).copy_(rc);
        result.narrow(1, 1, d - 1).addcmul_(z, k.unsqueeze(0), -1.0);                 // − i·z_{i−1}
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Copies a float64 tensor to a managed array (row-major).</summary>
    public static double[] ToArray(Tensor t)
    {
        using var c = t.to_type(ScalarType.Float64).contiguous().cpu();
        return c.data<double>().ToArray();
    }

    /// <summary>
    /// Counts, per row of <paramref name="s"/> [b, r] (descending singular values), the adjacent pairs of non-zero
    /// values whose gap relative to the row's largest value is below <paramref name="tol"/>, and the zeros.
    /// </summary>
    public static (int NearDegenerate, int Zeroed, List<string> Notes) Degeneracies(double[] s, int rows, int r, double tol, string what)
    {
        int near = 0, zeroed = 0;
        var notes = new List<string>();
        for (int i = 0; i < rows; i++)
        {
            double max = s[i * r];
            int z = 0;
            for (int j = 0; j < r; j++) if (s[i * r + j] == 0) z++;
            zeroed += z;
            if (z > 0 && z < r) notes.Add($"{what} {i}: {z} of {r} singular values below the rank tolerance (set to 0)");
            else if (z == r) notes.Add($"{what} {i}: composite is zero");
            for (int j = 0; j + 1 < r; j++)
            {
                double x = s[i * r + j], y = s[i * r + j + 1];
                if (y == 0) break;
                if (x - y < tol * max)
                {
                    near++;
                    notes.Add($"{what} {i}: σ{j + 1}={x:G6} and σ{j + 2}={y:G6} are near-degenerate (relative gap {(x - y) / max:G2})");
                }
            }
        }
        return (near, zeroed, notes);
    }

    /// <summary>
    /// Sorts items by their key vectors, each component descending, treating components that differ by at most
    /// <paramref name="tol"/> × (largest |value| of that component over all items) as equal and moving on to the
    /// next component; items tied on every component are ordered by <paramref name="fallback"/> (a comparison of
    /// their canonical data) and then by index. Returns the order (position → item) and the adjacent positions
    /// whose keys tie on every component. Stable merge sort: never throws on an inconsistent comparison.
    /// </summary>
    public static (int[] Order, List<int> TiedPositions) TolerantSort(double[][] keys, double tol, Func<int, int, int> fallback)
    {
        int n = keys.Length;
        int m = n == 0 ? 0 : keys[0].Length;
        var scale = new double[m];
        for (int k = 0; k < m; k++)
        {
            double s = 0;
            for (int i = 0; i < n; i++) s = Math.Max(s, Math.Abs(keys[i][k]));
            scale[k] = s;
        }
        int KeyCompare(int a, int b)
        {
            for (int k = 0; k < m; k++)
            {
                double x = keys[a][k], y = keys[b][k];
                if (Math.Abs(x - y) <= tol * scale[k]) continue;
                return x > y ? -1 : 1;
            }
            return 0;
        }
        int Compare(int a, int b)
        {
            int c = KeyCompare(a, b);
            if (c != 0) return c;
            c = fallback(a, b);
            return c != 0 ? c : a.CompareTo(b);
        }
        var order = Enumerable.Range(0, n).ToArray();
        var tmp = new int[n];
        MergeSort(order, tmp, 0, n, Compare);
        var tied = new List<int>();
        for (int p = 0; p + 1 < n; p++)
            if (KeyCompare(order[p], order[p + 1]) == 0) tied.Add(p);
        return (order, tied);
    }

    internal static void MergeSort(int[] a, int[] tmp, int lo, int hi, Func<int, int, int> cmp)
    {
        if (hi - lo < 2) return;
        int mid = (lo + hi) / 2;
        MergeSort(a, tmp, lo, mid, cmp);
        MergeSort(a, tmp, mid, hi, cmp);
        int i = lo, j = mid, k = lo;
        while (i < mid && j < hi) tmp[k++] = cmp(a[j], a[i]) < 0 ? a[j++] : a[i++];
        while (i < mid) tmp[k++] = a[i++];
        while (j < hi) tmp[k++] = a[j++];
        Array.Copy(tmp, lo, a, lo, hi - lo);
    }

    /// <summary>Lexicographic comparison of two data vectors, entries within tol × their largest magnitude being equal.</summary>
    public static int DataCompare(ReadOnlySpan<double> x, ReadOnlySpan<double> y, double tol)
    {
        double s = 0;
        for (int i = 0; i < x.Length; i++) s = Math.Max(s, Math.Max(Math.Abs(x[i]), Math.Abs(y[i])));
        for (int i = 0; i < x.Length; i++)
        {
            if (Math.Abs(x[i] - y[i]) <= tol * s) continue;
            return x[i] > y[i] ? -1 : 1;
        }
        return 0;
    }
}
