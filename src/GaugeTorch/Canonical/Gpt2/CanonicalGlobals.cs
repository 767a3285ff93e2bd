using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>
/// The global part of the full canonical form: family 10 (step 4) and the residual frame (step 4b, GAUGE.md §5).
/// It runs before the layers, because the frame it fixes moves every reader and writer of every layer.
/// <list type="bullet">
/// <item>Tied head: the residual coordinates are sorted so that γ_f descends, and the residual is negated when the
/// largest-magnitude entry of β_f is negative (family 11). γ_f and β_f are carried exactly by the form (no family
/// but 11 touches them), so these comparisons are exact and survive any storage rounding; exact ties in γ_f are
/// ordered by β_f, then by the centred wte and wpe column norms, then by the wte columns' data.</item>
/// <item>Untied head (families 12–16): the head folds γ_f and its per-vocabulary bias, wte rows are centred, and
/// the residual is rotated onto the principal axes of wte, computed from its d×d Gram matrix in Helmert
/// coordinates (so the 1-direction is exactly excluded).</item>
/// </list>
/// </summary>
public static class CanonicalGlobals
{
    /// <summary>
    /// Canonical globals (float64) and the residual frame for the layers. <paramref name="untied"/>: use the untied
    /// form (forced when <paramref name="input"/> has an lm_head); a tied head is then read as lm_head = wte.
    /// Throws <see cref="NonFiniteTensorException"/> (suffix wte.weight) when wte has a NaN or ±inf; the other global
    /// tensors are the caller's to check (<see cref="RequireFinite"/>).
    /// </summary>
    public static (GlobalWeights Globals, ResidualFrame Frame) Canonicalize(GlobalWeights input, bool untied, CanonicalPrecision p, CanonicalReport? report = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var fr = report?.Frame ?? new ResidualFrameReport();
        fr.Dimension = (int)input.Wte.shape[1];
        var (g, frame) = untied || input.LmHead is not null ? Untied(input, p, fr, report) : Tied(input, p, fr, report);
        g.MoveToOuterDisposeScope();
        fr.Identity = frame.IsIdentity;
        return (g, frame);
    }

    // ---------------------------------------------------------------- tied head

    private static (GlobalWeights, ResidualFrame) Tied(GlobalWeights input, CanonicalPrecision p, ResidualFrameReport fr, CanonicalReport? report)
    {
        fr.Kind = "permutation";
        var wte = input.Wte.to_type(ScalarType.Float64).contiguous();     // [V, d]
        var wpe = input.Wpe.to_type(ScalarType.Float64);                  // [P, d]
        var lnW = input.LnFW.to_type(ScalarType.Float64);                 // [d]
        var lnB = input.LnFB.to_type(ScalarType.Float64);                 // [d]
        long v = wte.shape[0], d = wte.shape[1];
        var mean = wte.mean([0], keepdim: true);                          // [1, d]: family 10
        RequireFiniteMean(mean);
        PhaseClock.Mark("globals: wte mean");
        var wpe1 = wpe + mean;
        wpe1 = wpe1 - wpe1.mean([1], keepdim: true);

        var tf = new TiedFrameData(lnW, lnB, wte, mean, wpe1, p);
        var (perm, sign) = tf.Compute(fr);
        PhaseClock.Mark("globals: frame");
        if (p.KeepCanonicalInput && tf.IdentityAdmissible() && Centred(wte, 0, p) && Centred(wpe, 1, p))
        {
            fr.Kept = true;
            fr.Sign = 1;
            fr.Permutation = Enumerable.Range(0, (int)d).ToArray();
            report?.GlobalNotes.Add($"wte, wpe and ln_f are already canonical within {p.Storage} precision: kept as stored");
            return (new GlobalWeights { Wte = wte.clone(), Wpe = wpe.clone(), LnFW = lnW.clone(), LnFB = lnB.clone() }, ResidualFrame.Identity());
        }
        fr.Sign = sign;
        fr.Permutation = perm;
        var frame = ResidualFrame.Permutation(perm, sign);

        // wte ← σ·(wte − 1·mean)[:, P] in one fused pass (the layers' column gather, γ = σ for every row).
        var outWte = empty(v, d, ScalarType.Float64);
        var sigma = Enumerable.Repeat(sign, (int)v).ToArray();
        var meanArr = CanonicalMath.ToArray(mean).Select(m => sign * m).ToArray();
        unsafe
        {
            fixed (double* s = sigma)
                CanonicalKernels.GatherColumnsCentred(new KernelSource(NativeTensorAccess.DataPointer(wte), true), (IntPtr)s, v, d, perm, meanArr,
                    new KernelTarget(NativeTensorAccess.DataPointer(outWte), true));
        }
        PhaseClock.Mark("globals: wte gather");
        var g = new GlobalWeights
        {
            Wte = outWte,
            Wpe = frame.Writer(wpe1).contiguous(),
            LnFW = frame.Permuted(lnW).contiguous(),           // γ_f → γ_f P
            LnFB = frame.WriterVector(lnB).contiguous(),       // β_f → σ β_f P
        };
        return (g, frame);
    }

    /// <summary>The data that fixes the tied frame, with the order's lazily computed tie-breakers.</summary>
    private sealed class TiedFrameData(Tensor gamma, Tensor beta, Tensor wte, Tensor mean, Tensor wpe1, CanonicalPrecision p)
    {
        private readonly double[] _g = CanonicalMath.ToArray(gamma), _b = CanonicalMath.ToArray(beta);
        private double[]? _wteNorm, _wpeNorm;
        private double _sign = 1;
        private readonly Dictionary<int, double[]> _columns = [];

        private int D => _g.Length;

        private double[] WteNorm => _wteNorm ??= CanonicalMath.ToArray(linalg.vector_norm(wte - mean, dims: [0]));
        private double[] WpeNorm => _wpeNorm ??= CanonicalMath.ToArray(linalg.vector_norm(wpe1, dims: [0]));

        /// <summary>The centred wte column j, without the sign (σ flips every data comparison: see <see cref="DataCompare"/>).</summary>
        private double[] Column(int j)
        {
            if (!_columns.TryGetValue(j, out var c))
                _columns[j] = c = CanonicalMath.ToArray(wte.select(1, j) - mean.select(1, j));
            return c;
        }

        /// <summary>Compares the columns of σ·wte: the comparison of −x and −y is the negated comparison of x and y.</summary>
        private int DataCompare(int a, int b) => (int)_sign * CanonicalMath.DataCompare(Column(a), Column(b), p.Sort);

        /// <summary>σ from β_f: the sign of the largest-magnitude entry; equal magnitudes of both signs move on to the next magnitude.</summary>
        private (double Sign, bool FromBeta) SignFromBeta()
        {
            var byMag = Enumerable.Range(0, D).OrderByDescending(j => Math.Abs(_b[j])).ToArray();
            for (int i = 0; i < byMag.Length;)
            {
                double m = Math.Abs(_b[byMag[i]]);
                if (m == 0) break;
                int s = 0, k = i;
                for (; k < byMag.Length && Math.Abs(_b[byMag[k]]) == m; k++) s += Math.Sign(_b[byMag[k]]);
                if (s != 0) return (s > 0 ? 1 : -1, true);
                i = k;
            }
            return (1, false);
        }

        /// <summary>The third moment Σ(wte − mean)³, used for σ when β_f does not decide.</summary>
        private double ThirdMoment() => (wte - mean).pow(3).sum().item<double>();

        private double[] Keys(int j) => [_g[j], _sign * _b[j]];

        private int Compare(int a, int b)
        {
            if (_g[a] != _g[b]) return _g[a] > _g[b] ? -1 : 1;
            double ba = _sign * _b[a], bb = _sign * _b[b];
            if (ba != bb) return ba > bb ? -1 : 1;
            int c = TolerantCompare(WteNorm, a, b);
            if (c != 0) return c;
            c = TolerantCompare(WpeNorm, a, b);
            if (c != 0) return c;
            c = DataCompare(a, b);
            return c != 0 ? c : a.CompareTo(b);
        }

        private int TolerantCompare(double[] x, int a, int b, double? tol = null)
        {
            double scale = x.Max();
            if (Math.Abs(x[a] - x[b]) <= (tol ?? p.Sort) * scale) return 0;
            return x[a] > x[b] ? -1 : 1;
        }

        public (int[] Perm, double Sign) Compute(ResidualFrameReport fr)
        {
            var (s, fromBeta) = SignFromBeta();
            if (!fromBeta)
            {
                double t = ThirdMoment();
                s = t < 0 ? -1 : 1;
                fr.BetaZero = true;
            }
            _sign = s;
            var order = Enumerable.Range(0, D).ToArray();
            CanonicalMath.MergeSort(order, new int[D], 0, D, Compare);
            for (int q = 0; q + 1 < D; q++)
            {
                int a = order[q], b = order[q + 1];
                if (_g[a] != _g[b]) continue;
                fr.GammaTies++;
                if (_b[a] != _b[b] || TolerantCompare(WteNorm, a, b, p.Tie) != 0 || TolerantCompare(WpeNorm, a, b, p.Tie) != 0) continue;
                fr.GammaTiesByData++;
                if (DataCompare(a, b) == 0) fr.GammaTiesUnbroken++;
            }
            return (order, s);
        }

        /// <summary>
        /// True when the stored coordinates are already in canonical order with σ = +1 within storage precision: the
        /// exact rules (γ_f, β_f) hold exactly, and the tolerant tie-breakers (third moment, wte and wpe column norms,
        /// wte columns) can give the stored order for values within storage rounding (see CanonicalMath.Favourable).
        /// </summary>
        public bool IdentityAdmissible()
        {
            _sign = 1;
            var (s, fromBeta) = SignFromBeta();
            if (fromBeta && s < 0) return false;
            if (!fromBeta)
            {
                double t = ThirdMoment();
                double scale = (wte - mean).abs().pow(3).sum().item<double>();
                if (scale > 0 && CanonicalMath.Favourable([t / scale], [2 * p.Noise], p.Sort) == CanonicalMath.ScanResult.Reject) return false;
            }
            for (int j = 0; j + 1 < D; j++)
            {
                var ka = Keys(j);
                var kb = Keys(j + 1);
                if (ka[0] != kb[0]) { if (ka[0] < kb[0]) return false; continue; }
                if (ka[1] != kb[1]) { if (ka[1] < kb[1]) return false; continue; }
                double nw = WteNorm.Max(), np = WpeNorm.Max();
                double[] diffs = [nw == 0 ? 0 : (WteNorm[j] - WteNorm[j + 1]) / nw, np == 0 ? 0 : (WpeNorm[j] - WpeNorm[j + 1]) / np];
                var r = CanonicalMath.Favourable(diffs, [p.Noise, p.Noise], p.Sort);
                if (r == CanonicalMath.ScanResult.Reject) return false;
                if (r == CanonicalMath.ScanResult.Tied)
                {
                    var dd = CanonicalMath.RelativeDiffs(Column(j), Column(j + 1));
                    if (CanonicalMath.Favourable(dd, Enumerable.Repeat(p.Noise, dd.Length).ToArray(), p.Sort) == CanonicalMath.ScanResult.Reject) return false;
                }
            }
            return true;
        }
    }

    /// <summary>
    /// True when every line of <paramref name="x"/> along <paramref name="dim"/> sums to 0 within storage rounding:
    /// |Σ x| ≤ c·√n·‖x‖ (rounding each entry by u|x| moves the sum by at most u·Σ|x| ≤ u·√n·‖x‖), c = <see cref="CanonicalPrecision.Condition"/>.
    /// </summary>
    internal static bool Centred(Tensor x, long dim, CanonicalPrecision p)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[dim];
        var sum = x.sum([dim]).abs();
        var bound = linalg.vector_norm(x, dims: [dim]) * (p.Condition * Math.Sqrt(n)) + p.Absolute * n;
        return (sum <= bound).all().item<bool>();
    }

    // -------------------------------------------------------------- untied head

    private static (GlobalWeights, ResidualFrame) Untied(GlobalWeights input, CanonicalPrecision p, ResidualFrameReport fr, CanonicalReport? report)
    {
        fr.Kind = "rotation";
        var wte = input.Wte.to_type(ScalarType.Float64);                  // [V, d]
        var wpe = input.Wpe.to_type(ScalarType.Float64);                  // [P, d]
        var lnW = input.LnFW.to_type(ScalarType.Float64);                 // [d]
        var lnB = input.LnFB.to_type(ScalarType.Float64);                 // [d]
        var head0 = input.Head.to_type(ScalarType.Float64);               // [V, d]; a tied head read as lm_head = wte
        long d = wte.shape[1];

        // The head (families 13–15 and 6-like folds of ln_f): logits_v = n·(γ_f∘h_v) + β_f·h_v. Keep the
        // per-vocabulary bias b_v = β_f·h_v up to a common constant, fold γ_f, drop the unread 1-component of each
        // row and the vocabulary mean (family 14), then carry b_v on the 1-component with β_f = 1.
        // Every [V, d] float64 intermediate is updated in place or freed at once: each is 643 MB on gpt2-xl.
        var b = matmul(head0, lnB);                                       // [V]
        var h = (head0 * lnW.unsqueeze(0)).DetachFromDisposeScope();      // [V, d]
        try
        {
            using (var m1 = h.mean([1], keepdim: true)) h.sub_(m1);
            using (var m0 = h.mean([0], keepdim: true)) h.sub_(m0);
            h.add_(((b - b.mean()) / d).unsqueeze(1));
            // Family 10, then family 12: wte rows centred (the residual's 1-component is never read).
            var mean = wte.mean([0], keepdim: true);
            RequireFiniteMean(mean);
            var wpe1 = wpe + mean;
            wpe1 = wpe1 - wpe1.mean([1], keepdim: true);
            Tensor e;                                                     // wte·B [V, d−1], Helmert coordinates
            using (var wte1 = wte - mean)
            {
                using (var rm = wte1.mean([1], keepdim: true)) wte1.sub_(rm);
                e = CanonicalMath.HelmertCoordinates(wte1).DetachFromDisposeScope();
            }
            Tensor y;
            Tensor gram;
            try
            {
                gram = matmul(e.t(), e);                                  // [d−1, d−1]
                if (p.KeepCanonicalInput && UntiedAlreadyCanonical(input, wte, wpe, lnW, lnB, head0, e, gram, p))
                {
                    fr.Kept = true;
                    fr.EmbeddingRank = (int)(d - 1);
                    report?.GlobalNotes.Add($"wte, wpe, ln_f and lm_head are already canonical within {p.Storage} precision: kept as stored");
                    return (new GlobalWeights { Wte = wte.clone(), Wpe = wpe.clone(), LnFW = lnW.clone(), LnFB = lnB.clone(), LmHead = head0.clone() }, ResidualFrame.Identity());
                }
                var (lam, w0) = linalg.eigh(gram);                        // ascending
                var w = w0.flip(1);
                var sa = CanonicalMath.ToArray(lam.flip(0).clamp_min(0).sqrt());   // singular values of wte, descending
                double s1 = sa.Length > 0 ? sa[0] : 0;
                int rank = sa.Count(x => x > s1 * CanonicalForm.RankTolerance);
                fr.EmbeddingRank = rank;
                if (rank < d - 1)
                    report?.GlobalNotes.Add($"wte has rank {rank} < d − 1 = {d - 1} after centring: the frame is free inside the {d - 1 - rank}-dimensional null space");
                for (int k = 0; k + 1 < rank; k++)
                    if (sa[k] - sa[k + 1] < p.Tie * s1)
                    {
                        fr.EmbeddingNearDegenerate++;
                        if (fr.EmbeddingNearDegenerate <= 10)
                            report?.GlobalNotes.Add($"wte singular values σ{k + 1}={sa[k]:G6} and σ{k + 2}={sa[k + 1]:G6} are near-degenerate (relative gap {(sa[k] - sa[k + 1]) / s1:G2}): the axes may rotate inside their span");
                    }
                // Signs: each axis so that the largest-magnitude entry of wte·v_k (the U column) is positive.
                y = matmul(e, w).DetachFromDisposeScope();                // [V, d−1]
                e.Dispose();
                var stats = CanonicalKernels.ColumnSignStats(NativeTensorAccess.DataPointer(y), 1, y.shape[0], y.shape[1], p.Sort);
                var signs = new double[stats.Length];
                for (int k = 0; k < stats.Length; k++)
                {
                    var (sg, near, _) = CanonicalMath.SignRule(stats[k], p.Sort, p.Tie);
                    signs[k] = sg;
                    if (near) fr.EmbeddingNearTiedSigns++;
                }
                var sgn = tensor(signs, ScalarType.Float64);
                w = w * sgn.unsqueeze(0);
                y.mul_(sgn.unsqueeze(0));
                // R = B·W·Bᵀ + 11ᵀ/d: orthogonal, R·1 = 1, and wte·R = E·W·Bᵀ.
                var basis = CanonicalMath.HelmertBasis(d);
                var r = matmul(matmul(basis, w), basis.t()) + 1.0 / d;
                var frame = ResidualFrame.Rotation(r.contiguous());
                var outWte = CanonicalMath.FromHelmertCoordinates(y, inPlace: true);
                y.Dispose();
                var g = new GlobalWeights
                {
                    Wte = outWte,
                    Wpe = matmul(wpe1, r).contiguous(),
                    LnFW = ones(d, ScalarType.Float64),
                    LnFB = ones(d, ScalarType.Float64),
                    LmHead = matmul(h, r).contiguous(),
                };
                return (g, frame);
            }
            finally
            {
                e.Dispose();
            }
        }
        finally
        {
            h.Dispose();
        }
    }

    /// <summary>
    /// The untied globals already satisfy every condition of the form within storage precision: γ_f = β_f = 1,
    /// lm_head and wte centred over the vocabulary, wte rows and wpe rows centred, wte's Helmert coordinates E with
    /// orthogonal columns (EᵀE diagonal), their norms descending and their signs admissible.
    /// </summary>
    private static bool UntiedAlreadyCanonical(GlobalWeights input, Tensor wte, Tensor wpe, Tensor lnW, Tensor lnB, Tensor head, Tensor e, Tensor gram, CanonicalPrecision p)
    {
        if (input.LmHead is null) return false;
        if (!(lnW == 1).all().item<bool>() || !(lnB == 1).all().item<bool>()) return false;
        if (!Centred(head, 0, p) || !Centred(wte, 0, p) || !Centred(wte, 1, p) || !Centred(wpe, 1, p)) return false;
        // Off-diagonal Gram entries: rounding wte by Δ (‖Δ‖_F ≤ u‖wte‖_F) moves (EᵀE)_kl by at most ‖Δ‖_F(‖e_k‖ + ‖e_l‖).
        var norms = gram.diagonal().clamp_min(0).sqrt();                  // ‖e_k‖
        double wn = wte.norm().item<double>();
        var bound = (norms.unsqueeze(0) + norms.unsqueeze(1)) * (p.Condition * wn) + p.Absolute * wte.shape[0];
        var off = gram - diag(gram.diagonal());
        if (!(off.abs() <= bound).all().item<bool>()) return false;
        var sv = CanonicalMath.ToArray(norms);
        double s1 = sv.Length > 0 ? sv.Max() : 0;
        for (int k = 0; k + 1 < sv.Length; k++)
            if (s1 > 0 && (sv[k] - sv[k + 1]) / s1 + 4 * p.Noise < 0) return false;   // descending within rounding
        var ec = e.contiguous();
        var stats = CanonicalKernels.ColumnSignStats(NativeTensorAccess.DataPointer(ec), 1, ec.shape[0], ec.shape[1], p.Sort + p.Noise);
        return stats.All(st => CanonicalMath.SignAdmissible(st, p));
    }

    /// <summary>
    /// Refuses NaN or ±inf in any global tensor (wte, wpe, ln_f, lm_head), naming the file and tensor: one NaN in wte
    /// would otherwise become a whole NaN column of the export through the vocabulary mean (issue 11).
    /// </summary>
    /// <remarks>
    /// <paramref name="wteChecked"/>: wte is left to <see cref="Canonicalize"/>, which refuses it through the
    /// vocabulary mean it computes anyway (a NaN or ±inf entry makes its column's mean non-finite; sums of F32, F16
    /// or BF16 values cannot overflow float64). A separate pass over gpt2-xl's 80 M entries cost 1.8 s of 26 s.
    /// </remarks>
    public static void RequireFinite(Gpt2Checkpoint ck, GlobalWeights g, bool wteChecked = false)
    {
        foreach (var (name, t) in g.Named())
        {
            if (wteChecked && name == Gpt2Keys.Wte) continue;
            using var scope = NewDisposeScope();
            if (t.isfinite().all().item<bool>()) continue;
            throw Located(ck, name);
        }
    }

    /// <summary>The non-finite error for global tensor <paramref name="name"/> of <paramref name="ck"/>, naming its file and key.</summary>
    public static SafeTensorsException Located(Gpt2Checkpoint ck, string name)
    {
        string key = ck.Key(name);
        return new SafeTensorsException(ck.Store.Entry(key).File, key, NonFiniteTensorException.Problem);
    }

    /// <summary>Throws <see cref="NonFiniteTensorException"/> for wte when its vocabulary mean [1, d] is not finite.</summary>
    private static void RequireFiniteMean(Tensor mean)
    {
        if (!mean.isfinite().all().item<bool>()) throw new NonFiniteTensorException(Gpt2Keys.Wte);
    }
}
