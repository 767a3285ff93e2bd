using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using static TorchSharp.torch;

namespace GaugeTorch.Alignment;

/// <summary>
/// The LLaMA family (RMSNorm, RoPE, GQA, SwiGLU; GAUGE.md §6.2): tied, a signed permutation of the residual by linear
/// assignment (each pair's sign chosen by its signed similarity); untied, any Q ∈ O(d) by Procrustes, then the final
/// gain and unembedding offset in closed form. Per block: norm gains in closed form; KV groups and the query heads
/// within them by nested linear assignment on the per-query-head composites Q̃·K̃ᵀ and Ṽ·O (readers folded with their
/// gain, biases as an extra row); the QK commutant per group and plane (a complex scalar) and each group's GL(hd) on
/// V/O by least squares; MLP units by linear assignment on the folded gate and the scale-free up⊗down composite; the
/// SwiGLU unit scale per unit by least squares.
/// </summary>
public static partial class GaugeAlignment
{
    private static bool IsRotary(ModelTraits t) => t.Norm == NormKind.RmsNorm;

    /// <summary>Residual features of an RMSNorm model, [n, d] with whether the residual signs multiply them.</summary>
    private static List<(Tensor X, bool Signed)> RmsResidualFeatures(ModelWeights m, AlignmentMode mode, bool includeBlocks)
    {
        bool full = mode == AlignmentMode.Full;
        var g = m.Globals;
        var f = new List<(Tensor, bool)> { (g.Embed, true), (g.FinalNorm.Gain.unsqueeze(0), false) };
        if (g.Head is not null) f.Add((full ? g.Head * g.FinalNorm.Gain.unsqueeze(0) : g.Head, true));
        if (!includeBlocks) return f;
        foreach (var w in m.Layers)
        {
            f.Add((w.Norm1.Gain.unsqueeze(0), false));
            f.Add((w.Norm2.Gain.unsqueeze(0), false));
            var r1 = ViewOps.Reader1(w);
            f.Add(((full ? w.Norm1.Gain.unsqueeze(1) * r1 : r1).t(), true));
            f.Add(((full ? w.Norm2.Gain.unsqueeze(1) * w.Up : w.Up).t(), true));
            if (w.Gate is not null) f.Add(((full ? w.Norm2.Gain.unsqueeze(1) * w.Gate : w.Gate).t(), true));
            f.Add((ViewOps.FlatO(w), true));
            f.Add((w.Down, true));
        }
        return f;
    }

    /// <summary>π and per-coordinate signs s maximizing Σ_i S_u[i, π(i)] + |S_s[i, π(i)]| (full) or Σ S[i, π(i)] (permutations only).</summary>
    private static (long[] Index, double[] Signs) SignedResidualAssignment(ModelWeights a, ModelWeights b, AlignmentMode mode, bool includeBlocks)
    {
        using var scope = NewDisposeScope();
        int d = a.Traits.Hidden;
        var fa = RmsResidualFeatures(a, mode, includeBlocks);
        var fb = RmsResidualFeatures(b, mode, includeBlocks);
        var (su, ss) = Similarities(fa, fb, d);
        bool full = mode == AlignmentMode.Full;
        var score = full ? su + ss.abs() : su + ss;
        var assign = Assign(score, d, minimize: false);
        var sd = ss.contiguous().data<double>().ToArray();
        var signs = assign.Select((j, i) => full && sd[i * d + j] < 0 ? -1.0 : 1.0).ToArray();
        return (assign, signs);
    }

    /// <summary>Q ∈ O(d) minimizing Σ ‖B_f·Q − A_f‖² (embedding, head folded with g_f and centred over the vocabulary, folded readers, writers).</summary>
    private static Tensor RmsProcrustes(ModelWeights a, ModelWeights b, bool includeBlocks)
    {
        using var scope = NewDisposeScope();
        int d = a.Traits.Hidden;
        List<Tensor> Features(ModelWeights m)
        {
            var g = m.Globals;
            var head = g.HeadOrEmbed * g.FinalNorm.Gain.unsqueeze(0);
            var f = new List<Tensor> { g.Embed, head - head.mean([0], keepdim: true) };
            if (!includeBlocks) return f;
            foreach (var w in m.Layers)
            {
                f.Add((w.Norm1.Gain.unsqueeze(1) * ViewOps.Reader1(w)).t());
                f.Add((w.Norm2.Gain.unsqueeze(1) * w.Up).t());
                if (w.Gate is not null) f.Add((w.Norm2.Gain.unsqueeze(1) * w.Gate).t());
                f.Add(ViewOps.FlatO(w));
                f.Add(w.Down);
            }
            return f;
        }
        var fa = Features(a);
        var fb = Features(b);
        var m = zeros(d, d, ScalarType.Float64);
        for (int k = 0; k < fa.Count; k++) m += matmul(fb[k].t(), fa[k]);
        var (u, _, vh) = linalg.svd(m, fullMatrices: false);
        return matmul(u, vh).contiguous().MoveToOuterDisposeScope();
    }

    private static void AlignRmsGlobals(ModelWeights a, ModelWeights b)
    {
        if (a.Traits.Tied) return;
        using (var scope = NewDisposeScope())
            ApplyGlobal(b, new FinalGainAction(Ratio(a.Globals.FinalNorm.Gain, b.Globals.FinalNorm.Gain)));
        using (var scope = NewDisposeScope())
            ApplyGlobal(b, new UnembedOffsetAction((a.Globals.Head! - b.Globals.Head!).mean([0])));
    }

    /// <summary>Per query head: Q̃ [H, d(+1), hd], K̃ and Ṽ per query head [H, d(+1), hd] (bias rows when present), O [H, hd, d].</summary>
    private static (Tensor Q, Tensor K, Tensor V, Tensor O) RmsHeadFeatures(LayerView w, ModelTraits t, bool full)
    {
        var g = w.Norm1.Gain.view(1, -1, 1);
        Tensor F(Tensor heads, Tensor? bias)
        {
            var y = full ? g * heads : heads;
            return bias is null ? y : cat([y, bias.unsqueeze(1)], 1);
        }
        return (F(w.Q, w.QBias), ViewOps.PerQueryHead(F(w.K, w.KBias), t), ViewOps.PerQueryHead(F(w.V, w.VBias), t), w.O);
    }

    /// <summary>[H, H] costs ‖QK_A,i − QK_B,j‖² + ‖VO_A,i − VO_B,j‖² between query heads (their composites).</summary>
    private static double[] QueryHeadCosts(LayerView a, LayerView b, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var fa = RmsHeadFeatures(a, t, true);
        var fb = RmsHeadFeatures(b, t, true);
        static Tensor Cross(Tensor x, Tensor y) => einsum("ink,jnl->ijkl", x, y);
        static Tensor RowCross(Tensor x, Tensor y) => einsum("ikn,jln->ijkl", x, y);
        var qk = (Cross(fa.Q, fb.Q) * Cross(fa.K, fb.K)).sum([2, 3]);
        var qkA = (Cross(fa.Q, fa.Q) * Cross(fa.K, fa.K)).sum([2, 3]).diagonal();
        var qkB = (Cross(fb.Q, fb.Q) * Cross(fb.K, fb.K)).sum([2, 3]).diagonal();
        var vo = (Cross(fa.V, fb.V) * RowCross(fa.O, fb.O)).sum([2, 3]);
        var voA = (Cross(fa.V, fa.V) * RowCross(fa.O, fa.O)).sum([2, 3]).diagonal();
        var voB = (Cross(fb.V, fb.V) * RowCross(fb.O, fb.O)).sum([2, 3]).diagonal();
        var cost = qkA.unsqueeze(1) + qkB.unsqueeze(0) - 2 * qk + voA.unsqueeze(1) + voB.unsqueeze(0) - 2 * vo;
        return cost.contiguous().data<double>().ToArray();
    }

    /// <summary>
    /// Groups by linear assignment on group costs (each the optimal within-group query-head matching's total), then
    /// the query heads within each matched pair: (τ over groups, σ over query heads after τ is applied).
    /// </summary>
    private static (long[] Tau, long[] Sigma) NestedHeadAssignment(double[] cost, ModelTraits t)
    {
        int h = t.QueryHeads, k = t.GroupSize, g = t.KvHeads;
        int[] Inner(int ra, int rb)
        {
            var c = new double[k * k];
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) c[i * k + j] = cost[(ra * k + i) * h + rb * k + j];
            return LinearAssignment.Minimize(c, k);
        }
        var gc = new double[g * g];
        for (int ra = 0; ra < g; ra++)
            for (int rb = 0; rb < g; rb++)
            {
                var p = Inner(ra, rb);
                double s = 0;
                for (int i = 0; i < k; i++) s += cost[(ra * k + i) * h + rb * k + p[i]];
                gc[ra * g + rb] = s;
            }
        var tau = LinearAssignment.Minimize(gc, g).Select(x => (long)x).ToArray();
        var sigma = new long[h];
        for (int r = 0; r < g; r++)
        {
            var p = Inner(r, (int)tau[r]);
            for (int i = 0; i < k; i++) sigma[r * k + i] = r * k + p[i];   // after τ, group r holds B's group τ[r]
        }
        return (tau, sigma);
    }

    private static (LayerView, bool) AlignBlockRotary(LayerView a, LayerView b, ModelTraits t, AlignmentMode mode)
    {
        using var scope = NewDisposeScope();
        var w = b.Map(x => x.alias());
        bool changed = false;
        bool full = mode == AlignmentMode.Full;
        int h = t.QueryHeads, g = t.KvHeads, k = t.GroupSize, hd = t.HeadDim;
        if (full) w = Apply(w, new NormGainAction("norm-gain", Ratio(a.Norm1.Gain, w.Norm1.Gain), Ratio(a.Norm2.Gain, w.Norm2.Gain)), t);
        double[] cost;
        if (full) cost = QueryHeadCosts(a, w, t);
        else
        {
            var fa = RmsHeadFeatures(a, t, false);
            var fb = RmsHeadFeatures(w, t, false);
            Tensor Flat((Tensor Q, Tensor K, Tensor V, Tensor O) f) => cat([f.Q.reshape(h, -1), f.K.reshape(h, -1), f.V.reshape(h, -1), f.O.reshape(h, -1)], 1);
            var xa = Flat(fa);
            var xb = Flat(fb);
            cost = (xa.square().sum([1]).unsqueeze(1) + xb.square().sum([1]).unsqueeze(0) - 2 * matmul(xa, xb.t())).contiguous().data<double>().ToArray();
        }
        var (tau, sigma) = NestedHeadAssignment(cost, t);
        if (tau.Select((v, i) => v != i).Any(x => x)) { w = Apply(w, new GroupPermutationAction(tau), t); changed = true; }
        if (sigma.Select((v, i) => v != i).Any(x => x)) { w = Apply(w, new HeadPermutationAction(sigma, wholeHeads: k == 1), t); changed = true; }
        if (full)
        {
            // QK commutant per group and plane.
            var fa = RmsHeadFeatures(a, t, true);
            var fb = RmsHeadFeatures(w, t, true);
            int h2 = hd / 2;
            var re = new double[g * h2];
            var im = new double[g * h2];
            for (int r = 0; r < g; r++)
                for (int j = 0; j < h2; j++)
                {
                    var (zr, zi) = PlaneScalar(fa, fb, r, j, k, h2);
                    re[r * h2 + j] = zr;
                    im[r * h2 + j] = zi;
                }
            w = Apply(w, new RotaryCommutantAction(tensor(re, ScalarType.Float64).view(g, h2), tensor(im, ScalarType.Float64).view(g, h2)), t);
            // VO per group: V_r·C, C⁻¹·O_i for the group's query heads.
            fb = RmsHeadFeatures(w, t, true);
            var cs = new Tensor[g];
            for (int r = 0; r < g; r++)
            {
                var ob = cat(Enumerable.Range(r * k, k).Select(i => fb.O[i].t()).ToArray(), 0);
                var oa = cat(Enumerable.Range(r * k, k).Select(i => fa.O[i].t()).ToArray(), 0);
                cs[r] = BasisLeastSquares(fb.V[r * k], fa.V[r * k], ob, oa);
            }
            var c = stack(cs);
            w = Apply(w, new VoAction("vo", c, linalg.inv(c)), t);
        }
        // MLP units.
        Tensor UpExt(LayerView v) => v.UpBias is null ? (full ? v.Norm2.Gain.unsqueeze(1) * v.Up : v.Up) : cat([full ? v.Norm2.Gain.unsqueeze(1) * v.Up : v.Up, v.UpBias.unsqueeze(0)], 0);
        Tensor GateExt(LayerView v)
        {
            var gt = full ? v.Norm2.Gain.unsqueeze(1) * v.Gate! : v.Gate!;
            return v.GateBias is null ? gt : cat([gt, v.GateBias.unsqueeze(0)], 0);
        }
        Tensor sim = matmul(GateExt(a).t(), GateExt(w));
        sim = full ? sim + matmul(UpExt(a).t(), UpExt(w)) * matmul(a.Down, w.Down.t()) : sim + matmul(UpExt(a).t(), UpExt(w)) + matmul(a.Down, w.Down.t());
        var pi = Assign(sim, t.Inner, minimize: false);
        if (pi.Select((v, i) => v != i).Any(x => x)) { w = Apply(w, new MlpPermutationAction(pi), t); changed = true; }
        if (full)
        {
            // Unit scale: s minimizing ‖s·u_B − u_A‖² + ‖d_B/s − d_A‖² per unit; candidates: each side's least squares and their geometric mean.
            var ua = UpExt(a); var ub = UpExt(w);
            var da = a.Down; var db = w.Down;
            var s1 = (ua * ub).sum([0]) / ub.square().sum([0]);
            var dd = (da * db).sum([1]);
            var s2 = db.square().sum([1]) / dd;
            var s3 = s1.sign() * (s1.abs() * s2.abs()).sqrt();
            Tensor J(Tensor s) => (ub * s.unsqueeze(0) - ua).square().sum([0]) + (db / s.unsqueeze(1) - da).square().sum([1]);
            var best = ones_like(s1);
            var jb = J(best);
            foreach (var cand in new[] { s1, s2, s3 })
            {
                var ok = cand.isfinite().logical_and(cand.ne(0));
                var cs = where(ok, cand, ones_like(cand));
                var jc = J(cs);
                var take = ok.logical_and(jc.lt(jb));
                best = where(take, cs, best);
                jb = where(take, jc, jb);
            }
            w = Apply(w, new UnitScaleAction(best), t);
        }
        return (w.Map(x => x.contiguous().clone()).DetachFromDisposeScope(), changed);
    }

    /// <summary>
    /// The complex z minimizing Σ_i |q_B,i·z − q_A,i|² + |k_B/conj(z) − k_A|² for group r, plane j (q: the group's
    /// query heads' plane as complex vectors, k: the group's key plane). Candidates: 1, the query side's least squares,
    /// the key side's, and their geometric mean; the best is kept.
    /// </summary>
    private static (double Re, double Im) PlaneScalar((Tensor Q, Tensor K, Tensor V, Tensor O) fa, (Tensor Q, Tensor K, Tensor V, Tensor O) fb, int r, int j, int k, int h2)
    {
        using var scope = NewDisposeScope();
        Tensor Plane(Tensor x, int col) => x.select(-1, col);
        var qaR = cat(Enumerable.Range(r * k, k).Select(i => Plane(fa.Q[i], j)).ToArray());
        var qaI = cat(Enumerable.Range(r * k, k).Select(i => Plane(fa.Q[i], j + h2)).ToArray());
        var qbR = cat(Enumerable.Range(r * k, k).Select(i => Plane(fb.Q[i], j)).ToArray());
        var qbI = cat(Enumerable.Range(r * k, k).Select(i => Plane(fb.Q[i], j + h2)).ToArray());
        var kaR = Plane(fa.K[r * k], j); var kaI = Plane(fa.K[r * k], j + h2);
        var kbR = Plane(fb.K[r * k], j); var kbI = Plane(fb.K[r * k], j + h2);
        double D(Tensor x, Tensor y) => x.dot(y).item<double>();
        // conj(b)·a = (bR·aR + bI·aI) + i(bR·aI − bI·aR)
        double nq = D(qbR, qbR) + D(qbI, qbI), nk = D(kbR, kbR) + D(kbI, kbI);
        var z1 = new System.Numerics.Complex((D(qbR, qaR) + D(qbI, qaI)) / nq, (D(qbR, qaI) - D(qbI, qaR)) / nq);
        var w2 = new System.Numerics.Complex((D(kbR, kaR) + D(kbI, kaI)) / nk, (D(kbR, kaI) - D(kbI, kaR)) / nk);
        var z2 = System.Numerics.Complex.Conjugate(System.Numerics.Complex.Reciprocal(w2));
        var z3 = System.Numerics.Complex.FromPolarCoordinates(Math.Sqrt(z1.Magnitude * z2.Magnitude), Math.Atan2(z1.Imaginary + z2.Imaginary, z1.Real + z2.Real));
        double qa2 = D(qaR, qaR) + D(qaI, qaI), ka2 = D(kaR, kaR) + D(kaI, kaI);
        double cqR = D(qbR, qaR) + D(qbI, qaI), cqI = D(qbR, qaI) - D(qbI, qaR);
        double ckR = D(kbR, kaR) + D(kbI, kaI), ckI = D(kbR, kaI) - D(kbI, kaR);
        double J(System.Numerics.Complex z)
        {
            var w = System.Numerics.Complex.Reciprocal(System.Numerics.Complex.Conjugate(z));
            // |b z − a|² = |z|²|b|² − 2 Re(z · conj(b)·a... ) + |a|²  with conj(b)·a = c: Re(conj(z)·c)
            double jq = z.Magnitude * z.Magnitude * nq - 2 * (z.Real * cqR + z.Imaginary * cqI) + qa2;
            double jk = w.Magnitude * w.Magnitude * nk - 2 * (w.Real * ckR + w.Imaginary * ckI) + ka2;
            return jq + jk;
        }
        var best = System.Numerics.Complex.One;
        double jb = J(best);
        foreach (var z in new[] { z1, z2, z3 })
        {
            if (!double.IsFinite(z.Real) || !double.IsFinite(z.Imaginary) || z.Magnitude == 0) continue;
            double jz = J(z);
            if (jz < jb) { jb = jz; best = z; }
        }
        return (best.Real, best.Imaginary);
    }
}
