using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Llama;

/// <summary>
/// The canonical form of the LLaMA family (Llama, Qwen2, Mistral: RMSNorm, rotary positions, grouped-query attention,
/// SwiGLU), docs/canonical-form.md, on the architecture-neutral <see cref="LayerView"/> / <see cref="GlobalView"/> in
/// float64. It is unique on the orbit of every family of the LLaMA catalog (qk-rope, vo, head-perm, group-perm,
/// mlp-perm, mlp-scale, norm-gain; tied: residual-signed-perm; untied: final-gain, unembed-offset, residual-rotation),
/// idempotent, and preserves the function. In order:
/// <list type="number">
/// <item>Fold the norm gains into their readers (g₁ into q, k, v; g₂ into gate, up); untied: g_f into the head, then
/// centre the head over the vocabulary (unembed-offset).</item>
/// <item>Residual frame (<see cref="LlamaFrame"/>). Tied: coordinates by g_f descending (ties by the embedding
/// column norm), each coordinate signed so that its embedding column's largest-magnitude entry is positive.
/// Untied: E = U S Vᵀ, each pair signed by U's largest-magnitude entry, F = V.</item>
/// <item>With an o_proj bias and v biases (Llama attention_bias): the v biases move into the o_proj bias (attention
/// rows sum to 1, so b_V·O is a constant of every position), then b_V = 0.</item>
/// <item>QK per group and rotary plane j: the complex scalar z of the commutant that makes Σ_i |Q_c^i|² = |K_c|²,
/// Σ_t K_c,t² real and positive and the largest-|Re| entry of K_c positive (biases as extra entries).</item>
/// <item>VO per group: thin SVD of the composite [V; b_V]·[O_1 … O_k] from QRs of the factors, both factors
/// U S^{1/2} and V S^{1/2}, signs by U's largest-magnitude entry, values below the rank tolerance set to 0.</item>
/// <item>SwiGLU: each unit scaled so that |up[u]| = |down[:, u]| (up bias included), signed so that up[u]'s largest
/// entry is positive.</item>
/// <item>Order: MLP units by |gate[u]| (then |up[u]|), query heads within their group by (|q|, |o|), groups by
/// (|k|, |v|), all descending.</item>
/// </list>
/// Near-ties and near-degeneracies are reported (<see cref="LlamaLayerReport"/>): there the form is unique only up to
/// the residual freedom they leave.
/// </summary>
public static class LlamaCanonicalForm
{
    /// <summary>Throws unless the traits are the LLaMA family's (RMSNorm, rotary, SwiGLU).</summary>
    public static void RequireFamily(ModelTraits t, string where)
    {
        if (t.Norm != NormKind.RmsNorm || t.Positions != PositionKind.Rotary || t.Mlp != MlpKind.SwiGlu)
            throw new NotSupportedException($"{where}: the LLaMA-family canonical form needs RMSNorm, rotary positions and SwiGLU ({t.Architecture} is not such a model)");
        if (t.HeadDim % 2 != 0) throw new NotSupportedException($"{where}: head_dim {t.HeadDim} is odd; rotary planes need an even head_dim");
        if (!t.Tied && t.Vocab < t.Hidden)
            throw new NotSupportedException($"{where}: an untied head with vocabulary {t.Vocab} < hidden size {t.Hidden}: the embedding does not fix the residual rotation (rank < d)");
    }

    // ---------------------------------------------------------------- globals

    /// <summary>
    /// Steps 1–2 on the globals: the canonical globals and the residual frame every layer then takes. Tied: the
    /// embedding may be in any float dtype (a signed permutation is exact; nothing is widened to float64). Untied:
    /// float64. <paramref name="g"/> is not modified.
    /// </summary>
    public static (GlobalView Canon, LlamaFrame Frame) Globals(GlobalView g, ModelTraits t, LlamaCanonicalPrecision p, LlamaFrameReport r)
    {
        using var scope = NewDisposeScope();
        return t.Tied ? TiedGlobals(g, p, r) : UntiedGlobals(g, p, r);
    }

    private static (GlobalView, LlamaFrame) TiedGlobals(GlobalView g, LlamaCanonicalPrecision p, LlamaFrameReport r)
    {
        var e = g.Embed;
        // Column norms (float64 sums) and the largest positive and negative entry per column, in one pass over E in
        // its stored precision (2 GB in float64 on Llama-3.2-1B). The sign rule compares the two extremes; their gap is its margin.
        var frame = TiedFrame(LlamaKernels.ColumnStats(e), g.FinalNorm.Gain.to_type(ScalarType.Float64).data<double>().ToArray(), p, r);
        var canon = new GlobalView
        {
            Embed = frame.Writer(e),
            FinalNorm = new NormView { Gain = frame.Gain(g.FinalNorm.Gain) },
        };
        return (canon.MoveToOuterDisposeScope(), frame);
    }

    /// <summary>
    /// Step 2 for a tied head: the signed permutation from the embedding's column statistics (Σ x², max, min per
    /// column, float64) and the final gain g_f.
    /// </summary>
    internal static LlamaFrame TiedFrame((double[] SumSquares, double[] Max, double[] Min) stats, double[] gain, LlamaCanonicalPrecision p, LlamaFrameReport r)
    {
        r.Kind = "signed-permutation";
        var (sq, hi, lo) = stats;
        var maxPos = hi.Select(x => Math.Max(x, 0)).ToArray();
        var maxNeg = lo.Select(x => Math.Max(-x, 0)).ToArray();
        var best = maxPos.Zip(maxNeg, Math.Max).ToArray();
        var bestSign = maxPos.Zip(maxNeg, (a, b) => a >= b ? 1.0 : -1.0).ToArray();
        var second = maxPos.Zip(maxNeg, Math.Min).ToArray();
        var norms = sq.Select(Math.Sqrt).ToArray();
        var order = SortDescending(gain.Select(Math.Abs).ToArray(), norms, p, out int ties, out int unbroken, signedPrimary: gain);
        r.GainTies = ties;
        r.GainTiesUnbroken = unbroken;
        var perm = order.Select(i => (long)i).ToArray();
        var signsOut = perm.Select(j => bestSign[j] < 0 ? -1.0 : 1.0).ToArray();
        r.NearTiedSigns = perm.Count(j => best[j] > 0 && best[j] - second[j] <= p.Tie * best[j]);
        var frame = LlamaFrame.SignedPermutation(perm, signsOut);
        r.Identity = frame.IsIdentity;
        r.Kept = frame.IsIdentity;
        return frame;
    }

    private static (GlobalView, LlamaFrame) UntiedGlobals(GlobalView g, LlamaCanonicalPrecision p, LlamaFrameReport r)
    {
        r.Kind = "rotation";
        var e = g.Embed.to_type(ScalarType.Float64);
        var head = g.Head ?? throw new ArgumentException("an untied model needs its head");
        var h64 = head.to_type(ScalarType.Float64);
        var gf = g.FinalNorm.Gain.to_type(ScalarType.Float64);
        if (p.KeepCanonicalInput && UntiedIsCanonical(e, h64, gf, p))
        {
            // Already canonical within one storage rounding: keep the stored values, in the identity frame.
            r.Kept = r.Identity = true;
            var kept = new GlobalView { Embed = e.clone(), FinalNorm = new NormView { Gain = gf.clone() }, Head = h64.clone() };
            return (kept.MoveToOuterDisposeScope(), LlamaFrame.Identity());
        }
        var h = h64 * gf;                                                                            // fold g_f (final-gain)
        h = h - h.mean([0], keepdim: true);                                                          // unembed-offset
        var (u, s, vh) = linalg.svd(e, fullMatrices: false);
        var sv = s.data<double>().ToArray();
        for (int i = 0; i + 1 < sv.Length; i++)
            if (sv[i + 1] > 0 && sv[i] - sv[i + 1] <= p.Tie * sv[0]) r.EmbeddingNearDegenerate++;
        var (vals, idx) = u.abs().topk(2, dim: 0);
        var va = vals.data<double>().ToArray();
        long d = e.shape[1];
        var lead = u.gather(0, idx.narrow(0, 0, 1)).squeeze(0);
        var sign = where(lead < 0, full_like(lead, -1.0), ones_like(lead));
        for (long j = 0; j < d; j++)
            if (va[j] - va[d + j] <= p.Tie * va[j]) r.NearTiedSigns++;
        var rot = vh.t() * sign.unsqueeze(0);                                                         // V with its columns signed
        var canon = new GlobalView
        {
            Embed = matmul(e, rot),
            FinalNorm = new NormView { Gain = ones_like(gf) },
            Head = matmul(h, rot),
        };
        return (canon.MoveToOuterDisposeScope(), LlamaFrame.Rotate(rot));
    }

    /// <summary>
    /// The untied globals' conditions within <see cref="LlamaCanonicalPrecision.Check"/>: g_f = 1, the head centred over
    /// the vocabulary, EᵀE diagonal and descending, each embedding column's sign admissible.
    /// </summary>
    private static bool UntiedIsCanonical(Tensor e, Tensor h, Tensor gf, LlamaCanonicalPrecision p)
    {
        using var scope = NewDisposeScope();
        double tol = p.Check;
        if (!UnitGain(gf, tol)) return false;
        var mean = h.mean([0]).abs();
        var rms = h.square().mean([0]).sqrt();
        if (!(mean <= rms * tol).all().item<bool>()) return false;
        var gram = matmul(e.t(), e);
        var dg = gram.diagonal();
        double scale = dg.max().item<double>();
        long d = dg.shape[0];
        var off = gram - diag(dg);
        if (off.abs().max().item<double>() > tol * scale) return false;
        if (d > 1 && !(dg.narrow(0, 1, d - 1) <= dg.narrow(0, 0, d - 1) + tol * scale).all().item<bool>()) return false;
        return SignsAdmissible(e, 0, p.Noise);
    }

    // ---------------------------------------------------------------- layers

    /// <summary>
    /// Steps 1 and 3–7 on one float64 layer, in <paramref name="frame"/>; <paramref name="w"/> is not modified. With
    /// <see cref="LlamaCanonicalPrecision.KeepCanonicalInput"/>, an input that already satisfies every condition of the
    /// form within one storage rounding (<see cref="IsCanonical"/>) in the identity frame is kept as stored, so that
    /// canonicalizing a canonical export reproduces its bytes (re-rounding a float64 recomputation would change last bits).
    /// </summary>
    public static LayerView Layer(LayerView w, ModelTraits t, LlamaFrame frame, LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        using var scope = NewDisposeScope();
        if (p.KeepCanonicalInput && frame.IsIdentity && IsCanonical(w, t, p, out var sv))
        {
            r.Kept = true;
            r.HeadOrder = Enumerable.Range(0, t.QueryHeads).ToArray();
            r.GroupOrder = Enumerable.Range(0, t.KvHeads).ToArray();
            r.VoSingularValues = sv;
            return w.Clone().MoveToOuterDisposeScope();
        }
        return LayerCore(w, t, frame, p, r).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Whether a layer satisfies the conditions of the form within <see cref="LlamaCanonicalPrecision.Check"/> (relative):
    /// unit gains; v biases folded where an o_proj bias exists; per group and plane Σ_i |Q_c^i|² = |K_c|² and Σ_t K_t²
    /// real and non-negative; per group equal diagonal Gram matrices of [V; b_V] and the stacked O blocks, in descending
    /// order; |up[u]| = |down[:, u]|; and every sign rule and order admissible within <see cref="LlamaCanonicalPrecision.Noise"/>
    /// (a positive entry within noise of the largest magnitude; adjacent keys descending up to noise).
    /// </summary>
    public static bool IsCanonical(LayerView w, ModelTraits t, LlamaCanonicalPrecision p, out double[][] voSingularValues)
    {
        using var scope = NewDisposeScope();
        voSingularValues = [];
        int nh = t.QueryHeads, ng = t.KvHeads, k = t.GroupSize, hd = t.HeadDim, half = hd / 2;
        long d = t.Hidden;
        double tol = p.Check, noise = p.Noise;
        bool All(Tensor b) => b.all().item<bool>();
        if (!UnitGain(w.Norm1.Gain, tol) || !UnitGain(w.Norm2.Gain, tol)) return false;
        bool vbFolded = w.OBias is not null && w.VBias is not null;
        if (vbFolded && w.VBias!.abs().max().item<double>() != 0) return false;
        var qt = w.QBias is null ? w.Q : cat([w.Q, w.QBias.unsqueeze(1)], 1);
        var kt = w.KBias is null ? w.K : cat([w.K, w.KBias.unsqueeze(1)], 1);
        var qa = qt.narrow(2, 0, half); var qb = qt.narrow(2, half, half);
        var ka = kt.narrow(2, 0, half); var kb = kt.narrow(2, half, half);
        var sq = (qa.square() + qb.square()).sum(1).view(ng, k, half).sum(1);
        var sk = (ka.square() + kb.square()).sum(1);
        var re = (ka.square() - kb.square()).sum(1);
        var im = (ka * kb).sum(1) * 2;
        if (!All((sq - sk).abs() <= (sq + sk) * tol)) return false;
        if (!All(im.abs() <= sk * tol) || !All(re >= -sk * tol)) return false;
        if (!SignsAdmissible(ka, 1, noise)) return false;

        var vt = w.VBias is null || vbFolded ? w.V : cat([w.V, w.VBias.unsqueeze(1)], 1);
        var os = w.O.transpose(1, 2).reshape(ng, k * d, hd);
        var gv = matmul(vt.transpose(1, 2), vt);
        var go = matmul(os.transpose(1, 2), os);
        var dv = gv.diagonal(0, 1, 2);
        var dO = go.diagonal(0, 1, 2);
        var scale = dv.amax([1], keepdim: true).unsqueeze(2);                               // [G, 1, 1]
        var offMask = eye(hd, dtype: ScalarType.Bool).logical_not();
        if (!All((gv.abs() <= scale * tol).logical_or(offMask.logical_not())) || !All((go.abs() <= scale * tol).logical_or(offMask.logical_not()))) return false;
        if (!All((dv - dO).abs() <= scale.squeeze(2) * tol)) return false;
        if (hd > 1 && !All(dv.narrow(1, 1, hd - 1) <= dv.narrow(1, 0, hd - 1) + scale.squeeze(2) * tol)) return false;
        if (!SignsAdmissible(vt, 1, noise)) return false;

        var ut = w.UpBias is null ? w.Up : cat([w.Up, w.UpBias.unsqueeze(0)], 0);
        var gt = w.GateBias is null ? w.Gate! : cat([w.Gate!, w.GateBias.unsqueeze(0)], 0);
        var nu = linalg.vector_norm(ut, dims: [0]);
        var nd = linalg.vector_norm(w.Down, dims: [1]);
        if (!All((nu - nd).abs() <= (nu + nd) * tol)) return false;
        if (!SignsAdmissible(ut, 0, noise)) return false;
        if (!OrderAdmissible(Norms(gt.t()), noise)) return false;
        if (!OrderAdmissible(Norms(kt.reshape(ng, -1)), noise)) return false;
        var qn = Norms(qt.reshape(nh, -1));
        for (int g = 0; g < ng; g++)
            if (!OrderAdmissible(qn.Skip(g * k).Take(k).ToArray(), noise)) return false;
        var dva = dv.contiguous().data<double>().ToArray();
        voSingularValues = Enumerable.Range(0, ng).Select(g => dva.Skip(g * hd).Take(hd).ToArray()).ToArray();
        return true;
    }

    private static bool UnitGain(Tensor g, double tol) => (g - 1).abs().max().item<double>() <= tol;

    /// <summary>Along <paramref name="dim"/>, every non-zero vector has a positive entry within <paramref name="noise"/> (relative) of its largest magnitude.</summary>
    private static bool SignsAdmissible(Tensor x, long dim, double noise)
    {
        using var scope = NewDisposeScope();
        var mx = x.abs().amax([dim]);
        var pos = x.amax([dim]);
        return (pos >= mx * (1 - noise)).logical_or(mx == 0).all().item<bool>();
    }

    /// <summary>Adjacent keys descending up to <paramref name="noise"/> (relative to the larger).</summary>
    private static bool OrderAdmissible(double[] keys, double noise)
    {
        for (int i = 0; i + 1 < keys.Length; i++)
            if (keys[i + 1] - keys[i] > noise * Math.Max(Math.Abs(keys[i]), Math.Abs(keys[i + 1]))) return false;
        return true;
    }

    private static LayerView LayerCore(LayerView w, ModelTraits t, LlamaFrame frame, LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        using var scope = NewDisposeScope();
        long d = t.Hidden;
        var attn = Attention(w, t, frame, p, r);

        // The MLP works with its units as rows (gate and up [F, d], down [d, F] as nn.Linear stores them), so that the
        // fold, scales and the unit permutation run over contiguous rows and the result maps back without a copy.
        PhaseClock.Start();
        // A signed-permutation frame (tied) folds, permutes, scales and orders the MLP in one gather per matrix (step 6).
        var mlpMap = frame.ReaderColumns(w.Norm2.Gain);
        var gateU = mlpMap is null ? frame.ReaderRows(w.Gate!.t(), w.Norm2.Gain) : null;      // [F, d]
        var upU = mlpMap is null ? frame.ReaderRows(w.Up.t(), w.Norm2.Gain) : null;           // [F, d]
        var downS = mlpMap is null ? frame.WriterRows(w.Down.t()) : null;                     // [d, F]
        var db = w.DownBias is null ? null : frame.Writer(w.DownBias);
        PhaseClock.Mark("layer: fold + frame");

        // 6. SwiGLU unit scale and sign.
        Tensor? gt = null, ut = null, unitScale = null, gateOut = null, upOut = null, downOut = null, gbOut = null, ubOut = null;
        double[] balancedNorm = [];
        int[]? unitOrder = null;
        if (mlpMap is { } map)
            (gateOut, gbOut, upOut, ubOut, downOut, unitOrder) = FusedMlp(w, map, frame.WriterRowMap(d)!.Value, p, r);
        else
        {
            gt = w.GateBias is null ? gateU! : cat([gateU!, w.GateBias.unsqueeze(1)], 1);     // [F, d(+1)]
            ut = w.UpBias is null ? upU! : cat([upU!, w.UpBias.unsqueeze(1)], 1);            // [F, d(+1)]
            (unitScale, balancedNorm) = BalanceMlp(ut, downS!, p, r);
        }
        PhaseClock.Mark("layer: mlp");

        // 7. Unit order.
        if (unitOrder is null)
        {
            unitOrder = SortDescending(Norms(gt!), balancedNorm, p, out int uties, out _);
            r.NearTiedUnits = uties;
        }
        // The unit scale of step 6 applied with the permutation (one pass over up and down each).
        if (gateOut is null)
        {
            var unitIndex = unitOrder.Select(i => (long)i).ToArray();
            var sc = unitScale!.data<double>().ToArray();
            var scaleSorted = unitOrder.Select(i => sc[i]).ToArray();
            gt = LlamaKernels.GatherRows(gt!, unitIndex);
            ut = LlamaKernels.GatherRows(ut!, unitIndex, scaleSorted);
            downOut = LlamaKernels.GatherColumns(downS!, unitIndex, scaleSorted.Select(x => 1 / x).ToArray());
            gateOut = gt.narrow(1, 0, d);
            upOut = ut.narrow(1, 0, d);
            gbOut = w.GateBias is null ? null : gt.select(1, d).contiguous();
            ubOut = w.UpBias is null ? null : ut.select(1, d).contiguous();
        }
        PhaseClock.Mark("layer: order mlp");

        var result = new LayerView
        {
            Norm1 = attn.Norm1,
            Q = attn.Q, QBias = attn.QBias,
            K = attn.K, KBias = attn.KBias,
            V = attn.V, VBias = attn.VBias,
            O = attn.O, OBias = attn.OBias,
            Norm2 = new NormView { Gain = ones(d, dtype: ScalarType.Float64) },
            // Views of the unit-major results (the adapter's [out, in] layout): no copy on the way out.
            Gate = gateOut.t(), GateBias = gbOut,
            Up = upOut!.t(), UpBias = ubOut,
            Down = downOut!.t(), DownBias = db?.contiguous(),
        };
        PhaseClock.Mark("layer: assemble");

        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The attention half of a canonical layer (norm1 and q, k, v, o with their biases), in the view's layouts.</summary>
    internal sealed record AttentionPart(NormView Norm1, Tensor Q, Tensor? QBias, Tensor K, Tensor? KBias, Tensor V, Tensor? VBias, Tensor O, Tensor? OBias);

    /// <summary>
    /// Steps 1 and 3–5 and the head and group orders of step 7 on the attention half of a float64 layer, in
    /// <paramref name="frame"/> (the MLP half of <paramref name="w"/> is not read). The tensors belong to the caller's dispose scope.
    /// </summary>
    internal static AttentionPart Attention(LayerView w, ModelTraits t, LlamaFrame frame, LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        int nh = t.QueryHeads, ng = t.KvHeads, k = t.GroupSize, hd = t.HeadDim, half = hd / 2;
        long d = t.Hidden;

        // 1. Fold the gains (norm-gain), then 2. the residual frame.
        PhaseClock.Start();
        var q = frame.Reader(w.Q, w.Norm1.Gain);
        var kk = frame.Reader(w.K, w.Norm1.Gain);
        var v = frame.Reader(w.V, w.Norm1.Gain);
        var o = frame.Writer(w.O);
        PhaseClock.Mark("layer: fold + frame");
        var ob = w.OBias is null ? null : frame.Writer(w.OBias);
        var qb = w.QBias;
        var kb = w.KBias;
        var vb = w.VBias;

        // 3. v biases into the o_proj bias when there is one.
        bool vbFolded = false;
        if (ob is not null && vb is not null)
        {
            var perHead = vb.repeat_interleave(k, dim: 0);                                  // [H, hd]: head i's group bias
            ob = ob + matmul(perHead.unsqueeze(1), o).squeeze(1).sum([0]);                     // Σ_i b_V^{g(i)}·O[i]
            vb = zeros_like(vb);
            vbFolded = true;
        }

        // 4. QK commutant per group and plane.
        var qt = qb is null ? q : cat([q, qb.unsqueeze(1)], 1);                             // [H, d(+1), hd]
        var kt = kb is null ? kk : cat([kk, kb.unsqueeze(1)], 1);                           // [G, d(+1), hd]
        (qt, kt) = BalanceQk(qt, kt, ng, k, half, p, r);
        PhaseClock.Mark("layer: qk");

        // 5. VO per group.
        var vt = vb is null || vbFolded ? v : cat([v, vb.unsqueeze(1)], 1);                 // [G, d(+1), hd]
        var ostack = o.transpose(1, 2).reshape(ng, k * d, hd);                               // [G, k·d, hd]
        (vt, ostack, var voS) = BalanceVo(vt, ostack, p, r);
        PhaseClock.Mark("layer: vo");

        // 7. Orders.
        var qn = Norms(qt.reshape(nh, -1));
        var oc = ostack.reshape(ng * k, d, hd).transpose(1, 2);                              // [H, hd, d], canonical factors
        var on = Norms(oc.reshape(nh, -1));
        var groupOrder = SortDescending(Norms(kt.reshape(ng, -1)), Norms(vt.reshape(ng, -1)), p, out int gties, out _);
        r.NearTiedGroups = gties;
        var headOrder = new int[nh];
        for (int pos = 0; pos < ng; pos++)
        {
            int src = groupOrder[pos];
            var ids = Enumerable.Range(src * k, k).ToArray();
            var within = SortDescending(ids.Select(i => qn[i]).ToArray(), ids.Select(i => on[i]).ToArray(), p, out int hties, out _);
            r.NearTiedHeads += hties;
            for (int m = 0; m < k; m++) headOrder[pos * k + m] = ids[within[m]];
        }
        r.GroupOrder = groupOrder;
        r.HeadOrder = headOrder;
        r.VoSingularValues = groupOrder.Select(i => voS[i]).ToArray();

        PhaseClock.Mark("layer: order keys");
        var hp = tensor(headOrder.Select(i => (long)i).ToArray(), ScalarType.Int64);
        var gp = tensor(groupOrder.Select(i => (long)i).ToArray(), ScalarType.Int64);
        qt = qt.index_select(0, hp);
        oc = oc.index_select(0, hp);
        kt = kt.index_select(0, gp);
        vt = vt.index_select(0, gp);
        var part = new AttentionPart(
            new NormView { Gain = ones(d, dtype: ScalarType.Float64) },
            qt.narrow(1, 0, d).contiguous(), qb is null ? null : qt.select(1, d).contiguous(),
            kt.narrow(1, 0, d).contiguous(), kb is null ? null : kt.select(1, d).contiguous(),
            vt.narrow(1, 0, d).contiguous(),
            vb is null ? null : vbFolded ? zeros(ng, hd, dtype: ScalarType.Float64) : vt.select(1, d).contiguous(),
            oc.contiguous(), ob?.contiguous());
        PhaseClock.Mark("layer: order attention");
        return part;
    }

    /// <summary>Step 4 on qt [H, n, hd], kt [G, n', hd]: per group and plane the commutant element z.</summary>
    private static (Tensor Q, Tensor K) BalanceQk(Tensor qt, Tensor kt, int ng, int k, int half, LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        var qa = qt.narrow(2, 0, half);
        var qbp = qt.narrow(2, half, half);
        var ka = kt.narrow(2, 0, half);
        var kbp = kt.narrow(2, half, half);
        var sq = (qa.square() + qbp.square()).sum(1).view(ng, k, half).sum(1);              // [G, half] Σ_i |Q_c^i|²
        var sk = (ka.square() + kbp.square()).sum(1);                                       // [G, half] |K_c|²
        var re = (ka.square() - kbp.square()).sum(1);                                       // Re Σ_t K_t²
        var im = (ka * kbp).sum(1) * 2;                                                      // Im Σ_t K_t²
        var zero = (sq == 0).logical_or(sk == 0);
        var rho = where(zero, ones_like(sq), (sk / where(zero, ones_like(sq), sq)).pow(0.25));
        var phi = -atan2(im, re) / 2;
        var mag = (re.square() + im.square()).sqrt();
        r.QkZeroPlanes += (int)zero.sum().item<long>();
        r.QkPhaseDegenerate += (int)(mag <= sk * LlamaCanonicalPrecision.SortTolerance).logical_and(zero.logical_not()).sum().item<long>();
        // Sign: the largest-|Re| entry of the rotated key plane positive (else φ + π).
        var c = phi.cos().unsqueeze(1);
        var s = phi.sin().unsqueeze(1);
        var kre = ka * c - kbp * s;                                                         // [G, n', half] (before 1/ρ: a positive factor)
        var hi = kre.amax([1]);
        var lo = -kre.amin([1]);                                                             // [G, half]
        var flip = where(lo > hi, full_like(hi, -1.0), ones_like(hi));
        r.QkSignTies += (int)((hi - lo).abs() <= hi.maximum(lo) * p.Tie).logical_and(zero.logical_not()).sum().item<long>();
        var cs = (phi.cos() * flip).unsqueeze(1);                                            // [G, 1, half]
        var sn = (phi.sin() * flip).unsqueeze(1);
        var rk = rho.unsqueeze(1);
        var kOut = cat([(ka * cs - kbp * sn) / rk, (ka * sn + kbp * cs) / rk], 2);
        var cq = cs.repeat_interleave(k, dim: 0);
        var sq2 = sn.repeat_interleave(k, dim: 0);
        var rq = rk.repeat_interleave(k, dim: 0);
        var qOut = cat([(qa * cq - qbp * sq2) * rq, (qa * sq2 + qbp * cq) * rq], 2);
        return (qOut, kOut);
    }

    /// <summary>Step 5 on vt [G, n, hd] and the stacked output blocks [G, k·d, hd].</summary>
    private static (Tensor V, Tensor O, double[][] S) BalanceVo(Tensor vt, Tensor ostack, LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        // Thin SVD of the composite vt·ostackᵀ from the factors: square-root factors R with RᵀR = AᵀA (Cholesky of the
        // hd×hd Gram matrices; Householder QR for ill-conditioned groups: a 8,192×64 QR costs ~0.4 s here, a Gram GEMM
        // milliseconds), the SVD of the hd×hd core R₁R₂ᵀ = u s vᵀ, then U = vt·R₁⁻¹u and V = ostack·R₂⁻¹v.
        var (r1, f1) = SquareRoot(vt);
        var (r2, f2) = SquareRoot(ostack);
        r.HouseholderFallbacks += f1 + f2;
        var core = matmul(r1, r2.transpose(1, 2));
        var (u, s, vh) = linalg.svd(core, fullMatrices: false);
        var smax = s.narrow(1, 0, 1);
        var keep = s > smax * LlamaCanonicalPrecision.RankTolerance;
        r.VoZeroed += (int)keep.logical_not().sum().item<long>();
        s = where(keep, s, zeros_like(s));
        var uu = matmul(vt, linalg.solve_triangular(r1, u, upper: true));
        var vv = matmul(ostack, linalg.solve_triangular(r2, vh.transpose(1, 2), upper: true));
        // Sign: the entry of largest magnitude of each U column positive; its margin is the gap between the largest
        // positive and the largest negative magnitude.
        var hi = uu.amax([1], keepdim: true);
        var lo = -uu.amin([1], keepdim: true);
        var sign = where(lo > hi, full_like(hi, -1.0), ones_like(hi));                      // [G, 1, hd]
        r.NearTiedSigns += (int)((hi - lo).abs() <= hi.maximum(lo) * p.Tie).squeeze(1).logical_and(keep).sum().item<long>();
        var root = s.sqrt().unsqueeze(1) * sign;                                             // [G, 1, hd]
        var sa = s.data<double>().ToArray();
        int g = (int)s.shape[0], n = (int)s.shape[1];
        var svs = new double[g][];
        for (int i = 0; i < g; i++)
        {
            svs[i] = sa.Skip(i * n).Take(n).ToArray();
            for (int j = 0; j + 1 < n; j++)
                if (svs[i][j + 1] > 0 && svs[i][j] - svs[i][j + 1] <= p.Tie * svs[i][0]) r.VoNearDegenerate++;
        }
        return (uu * root, vv * root, svs);
    }

    /// <summary>
    /// Steps 1, 2, 6 and the unit order of 7 for the MLP in a signed-permutation frame, without intermediate matrices:
    /// the unit statistics (|gate[u]|, |up[u]| and its extremes, over each row as it will be written; |down[:, u]|)
    /// first, then one gather per matrix that folds g₂, applies the frame, the unit scale and the unit order. Returns
    /// gate [F, d], its bias, up [F, d], its bias, down [d, F] (the nn.Linear layouts) and the unit order.
    /// </summary>
    private static (Tensor Gate, Tensor? GateBias, Tensor Up, Tensor? UpBias, Tensor Down, int[] Order) FusedMlp(
        LayerView w, (long[] Index, double[] Scale) cols, (long[] Index, double[]? Sign) rows, LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        var gateS = w.Gate!.t();
        var upS = w.Up.t();
        var downS = w.Down.t();
        var (gSq, _, _) = LlamaKernels.RowStats(gateS, cols.Index, cols.Scale);
        var (uSq, uHi, uLo) = LlamaKernels.RowStats(upS, cols.Index, cols.Scale);
        var dSq = LlamaKernels.ColumnStats(downS).SumSquares;
        var gb = w.GateBias?.to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
        var ub = w.UpBias?.to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
        var plan = PlanMlp(gSq, uSq, uHi, uLo, dSq, gb, ub, p, r);
        var (order, idx, sorted) = (plan.Order, plan.Index, plan.Scale);
        var gate = LlamaKernels.GatherBoth(gateS, idx, null, cols.Index, cols.Scale);
        var up = LlamaKernels.GatherBoth(upS, idx, sorted, cols.Index, cols.Scale);
        var down = LlamaKernels.GatherBoth(downS, rows.Index, rows.Sign, idx, plan.InverseScale);
        Tensor? gateBias = gb is null ? null : tensor(order.Select(i => gb[i]).ToArray(), ScalarType.Float64);
        Tensor? upBias = ub is null ? null : tensor(order.Select((i, k) => ub[i] * sorted[k]).ToArray(), ScalarType.Float64);
        return (gate, gateBias, up, upBias, down, order);
    }

    /// <summary>
    /// Step 6 and the unit order of a signed-permutation frame's MLP: the unit order, its indices, the signed unit
    /// scale in that order and its inverse (the down columns'), from the unit statistics (Σ over each gate and up row
    /// as it will be written, that up row's extremes, Σ over each down column; biases separately).
    /// </summary>
    internal sealed record MlpPlan(int[] Order, long[] Index, double[] Scale, double[] InverseScale);

    internal static MlpPlan PlanMlp(double[] gSq, double[] uSq, double[] uHi, double[] uLo, double[] dSq, double[]? gb, double[]? ub,
        LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        int f = gSq.Length;
        var gNorm = new double[f];
        var scale = new double[f];
        var balanced = new double[f];
        for (int u = 0; u < f; u++)
        {
            double g2 = gSq[u], u2 = uSq[u], hi = uHi[u], lo = uLo[u];
            if (gb is not null) g2 += gb[u] * gb[u];
            if (ub is not null) { u2 += ub[u] * ub[u]; hi = Math.Max(hi, ub[u]); lo = Math.Min(lo, ub[u]); }
            gNorm[u] = Math.Sqrt(g2);
            double nu = Math.Sqrt(u2), nd = Math.Sqrt(dSq[u]);
            bool zero = nu == 0 || nd == 0;
            if (zero) r.ZeroUnits++;
            double s = zero ? 1 : Math.Sqrt(nd / nu);
            double pos = Math.Max(hi, 0), neg = Math.Max(-lo, 0);
            if (neg > pos) s = -s;
            if (!zero && Math.Abs(pos - neg) <= Math.Max(pos, neg) * p.Tie) r.NearTiedSigns++;
            scale[u] = s;
            balanced[u] = zero ? Math.Sqrt(nu * nu + nd * nd) : Math.Sqrt(nu * nd);
        }
        var order = SortDescending(gNorm, balanced, p, out int ties, out _);
        r.NearTiedUnits = ties;
        var idx = order.Select(i => (long)i).ToArray();
        var sorted = order.Select(i => scale[i]).ToArray();
        return new MlpPlan(order, idx, sorted, sorted.Select(x => 1 / x).ToArray());
    }

    /// <summary>Cholesky factor of a well-conditioned Gram matrix as the square root of A [b, m, r]: accepted when its diagonal spans at most 10³.</summary>
    public const double CholeskyAcceptance = 1e-3;

    /// <summary>R [b, r, r] upper triangular with RᵀR = AᵀA: the transposed Cholesky factor of the Gram matrix, or a Householder R where that is ill-conditioned (counted).</summary>
    private static (Tensor R, int Fallbacks) SquareRoot(Tensor a)
    {
        var gram = matmul(a.transpose(1, 2), a);
        var (l, info) = linalg.cholesky_ex(gram);
        var dg = l.diagonal(0, 1, 2).abs();
        var ok = (info == 0).logical_and(dg.amin([1]) >= dg.amax([1]) * CholeskyAcceptance).data<bool>().ToArray();
        var rr = l.transpose(1, 2).contiguous();
        var bad = Enumerable.Range(0, ok.Length).Where(i => !ok[i]).Select(i => (long)i).ToArray();
        if (bad.Length > 0)
        {
            var idx = tensor(bad, ScalarType.Int64);
            var qr = linalg.qr(a.index_select(0, idx), linalg.QRMode.R).R;
            // A rank-deficient group: lift zero pivots so the triangular solves stay finite (those directions have s = 0).
            var d = qr.diagonal(0, 1, 2);
            var tiny = d.abs() <= d.abs().amax([1], keepdim: true) * 1e-300 + 1e-300;
            qr = qr + diag_embed(where(tiny, ones_like(d), zeros_like(d)));
            rr.index_copy_(0, idx, qr);
        }
        return (rr, bad.Length);
    }

    /// <summary>
    /// Step 6 on ut [F, d(+1)] (rows: units, bias as the last column) and down [d, F] (columns: units): the signed scale
    /// s_u of each unit (|s·up[u]| = |down[:, u]/s|, up's largest entry positive) and the balanced norm √(|up||down|).
    /// </summary>
    private static (Tensor Scale, double[] BalancedNorm) BalanceMlp(Tensor ut, Tensor down, LlamaCanonicalPrecision p, LlamaLayerReport r)
    {
        var nu = linalg.vector_norm(ut, dims: [1]);
        var nd = linalg.vector_norm(down, dims: [0]);
        var zero = (nu == 0).logical_or(nd == 0);
        r.ZeroUnits += (int)zero.sum().item<long>();
        var scale = where(zero, ones_like(nu), (nd / where(zero, ones_like(nu), nu)).sqrt());
        var hi = ut.amax([1]);
        var lo = -ut.amin([1]);
        scale = where(lo > hi, -scale, scale);
        r.NearTiedSigns += (int)((hi - lo).abs() <= hi.maximum(lo) * p.Tie).logical_and(zero.logical_not()).sum().item<long>();
        var balanced = where(zero, (nu.square() + nd.square()).sqrt(), (nu * nd).sqrt());
        return (scale, balanced.data<double>().ToArray());
    }

    // ---------------------------------------------------------------- helpers

    private static double[] Norms(Tensor rows) => linalg.vector_norm(rows, dims: [1]).data<double>().ToArray();

    /// <summary>
    /// Indices in descending order of <paramref name="primary"/>; runs whose primary keys tie within the sort tolerance
    /// (relative to the largest |key|) are ordered by <paramref name="secondary"/>. Counts adjacent near-ties (at the
    /// report tolerance) of the primary key, and of both keys.
    /// </summary>
    public static int[] SortDescending(double[] primary, double[] secondary, LlamaCanonicalPrecision p, out int ties, out int unbroken, double[]? signedPrimary = null)
    {
        var key = signedPrimary ?? primary;
        int n = key.Length;
        double scale = primary.Length == 0 ? 0 : primary.Max(Math.Abs);
        double scale2 = secondary.Length == 0 ? 0 : secondary.Max(Math.Abs);
        var order = Enumerable.Range(0, n).OrderByDescending(i => key[i]).ThenBy(i => i).ToArray();
        double tol = LlamaCanonicalPrecision.SortTolerance * scale;
        for (int a = 0; a < n;)
        {
            int b = a + 1;
            while (b < n && key[order[b - 1]] - key[order[b]] <= tol) b++;
            if (b - a > 1)
            {
                var run = order[a..b].OrderByDescending(i => secondary[i]).ThenBy(i => i).ToArray();
                Array.Copy(run, 0, order, a, run.Length);
            }
            a = b;
        }
        ties = 0;
        unbroken = 0;
        for (int i = 0; i + 1 < n; i++)
        {
            if (Math.Abs(key[order[i]] - key[order[i + 1]]) > p.Tie * scale) continue;
            ties++;
            if (Math.Abs(secondary[order[i]] - secondary[order[i + 1]]) <= p.Tie * scale2) unbroken++;
        }
        return order;
    }

    /// <summary>‖x − y‖_F / max(‖x‖_F, ‖y‖_F); 0 when both are 0.</summary>
    public static double Rel(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        var x64 = x.to_type(ScalarType.Float64);
        var y64 = y.to_type(ScalarType.Float64);
        double diff = (x64 - y64).norm().item<double>();
        if (diff == 0) return 0;
        return diff / Math.Max(x64.norm().item<double>(), y64.norm().item<double>());
    }
}
