using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge.Canonical;

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
    public static (Tensor X, Tensor S, Tensor Y, int Fallbacks) BalancedFactors(Tensor a, Tensor b, double rankTolerance)
    {
        using var scope = NewDisposeScope();
        var (ta, s, tb, fallbacks) = BalancingTransforms(a, b, rankTolerance);
        var x = matmul(a, ta);
        var y = matmul(b, tb);
        var sign = SignsOfColumns(x).unsqueeze(1);
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
    /// The sign rule for a batch of factors X [b, m, r]: ±1 [b, r] such that, after multiplying, the entry of each
    /// column with the largest magnitude (the first one on exact ties) is positive.
    /// </summary>
    public static Tensor SignsOfColumns(Tensor x)
    {
        using var scope = NewDisposeScope();
        var idx = x.abs().argmax(1, keepdim: true);                // [b, 1, r]
        var lead = x.gather(1, idx).squeeze(1);
        return where(lead < 0, full_like(lead, -1.0), full_like(lead, 1.0)).MoveToOuterDisposeScope();
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

    private static void MergeSort(int[] a, int[] tmp, int lo, int hi, Func<int, int, int> cmp)
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
