using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge.Canonical;

/// <summary>One head of A matched with one head of B.</summary>
public sealed record HeadComparison(int Layer, int Position, int HeadA, int HeadB, double QkDistance, double VoDistance, HeadFingerprint A, HeadFingerprint B)
{
    public double Distance => Math.Max(QkDistance, VoDistance);
}

/// <summary>Distances of one layer: every component relative to the larger of its two norms; <see cref="Distance"/> is their maximum.</summary>
public sealed record LayerComparison(int Layer, double MlpDistance, double AttnBiasDistance, double MlpBiasDistance, IReadOnlyList<HeadComparison> Heads)
{
    public double MaxHeadDistance => Heads.Count == 0 ? 0 : Heads.Max(h => h.Distance);
    public double Distance => new[] { MaxHeadDistance, MlpDistance, AttnBiasDistance, MlpBiasDistance }.Max();
}

/// <summary>The result of <see cref="CanonicalCompare.Compare"/>.</summary>
public sealed class ComparisonResult
{
    public List<LayerComparison> Layers { get; } = [];
    /// <summary>wte, wpe, ln_f.weight, ln_f.bias (and lm_head when either head is untied): relative distances.</summary>
    public Dictionary<string, double> Globals { get; } = new(StringComparer.Ordinal);
    public CanonicalReport ReportA { get; init; } = new();
    public CanonicalReport ReportB { get; init; } = new();

    public double Largest => Math.Max(Layers.Count == 0 ? 0 : Layers.Max(l => l.Distance), Globals.Count == 0 ? 0 : Globals.Values.Max());

    /// <summary>Where the largest distance is, in words (layer/head with both original indices, or a tensor).</summary>
    public string LargestWhere
    {
        get
        {
            double best = -1;
            string where = "";
            foreach (var l in Layers)
            {
                foreach (var h in l.Heads)
                    if (h.Distance > best) { best = h.Distance; where = $"layer {l.Layer} head {h.HeadA} (B: head {h.HeadB}) {(h.QkDistance >= h.VoDistance ? "QK" : "VO")}"; }
                if (l.MlpDistance > best) { best = l.MlpDistance; where = $"layer {l.Layer} MLP"; }
                if (l.AttnBiasDistance > best) { best = l.AttnBiasDistance; where = $"layer {l.Layer} attn.c_proj.bias"; }
                if (l.MlpBiasDistance > best) { best = l.MlpBiasDistance; where = $"layer {l.Layer} mlp.c_proj.bias"; }
            }
            foreach (var (k, v) in Globals)
                if (v > best) { best = v; where = k; }
            return where;
        }
    }
}

/// <summary>
/// Decides whether two checkpoints are the same function up to gauge: both are brought to the full canonical form
/// (GAUGE.md §5) layer by layer in float64 and compared. Heads are compared through their QK and VO composites
/// (computed in factored form: ‖X_A Y_Aᵀ − X_B Y_Bᵀ‖_F = ‖R₁R₂ᵀ‖_F with QRs of [X_A, −X_B] and [Y_A, Y_B]), which
/// does not depend on the sign or basis choices inside near-degenerate singular subspaces. Heads are matched
/// greedily by fingerprint and canonical-data distance (a head permutation is itself a gauge, so any matching is
/// legitimate; for distinct heads it is the canonical order). MLP units are compared in canonical order, taking the
/// swap of any adjacent pair of B's units that matches A better (up to four passes); longer chains of near-tied units can still be
/// mismatched (see docs/canonical-form.md).
/// </summary>
public static class CanonicalCompare
{
    public static ComparisonResult Compare(Gpt2Checkpoint a, Gpt2Checkpoint b, IProgress<(int Done, int Total)>? progress = null)
    {
        var c = a.Config;
        var cb = b.Config;
        if (c.NLayer != cb.NLayer || c.NEmbd != cb.NEmbd || c.NHead != cb.NHead || c.NInner != cb.NInner || c.VocabSize != cb.VocabSize || c.NPositions != cb.NPositions)
            throw new ArgumentException($"{a.Directory} and {b.Directory} have different architectures (L, d, h, F, V, P = {c.NLayer}, {c.NEmbd}, {c.NHead}, {c.NInner}, {c.VocabSize}, {c.NPositions} vs {cb.NLayer}, {cb.NEmbd}, {cb.NHead}, {cb.NInner}, {cb.VocabSize}, {cb.NPositions}): not comparable");
        var result = new ComparisonResult { ReportA = new CanonicalReport { Form = CanonicalFormKind.Full }, ReportB = new CanonicalReport { Form = CanonicalFormKind.Full } };
        // One reusable canonicalizer per side, reading each layer in place from the memory maps.
        using var canonA = new LayerCanonicalizer(c);
        using var canonB = new LayerCanonicalizer(c);
        for (int l = 0; l < c.NLayer; l++)
        {
            using var scope = NewDisposeScope();
            var ra = new LayerReport { Layer = l };
            var rb = new LayerReport { Layer = l };
            canonA.Run(a, l, ra);
            canonB.Run(b, l, rb);
            result.ReportA.Layers.Add(ra);
            result.ReportB.Layers.Add(rb);
            result.Layers.Add(CompareLayer(canonA.Output, canonB.Output, ra, rb, c));
            LayerCanonicalizer.ReleaseMapped(a, l);
            LayerCanonicalizer.ReleaseMapped(b, l);
            progress?.Report((l + 1, c.NLayer + 1));
        }
        using (var scope = NewDisposeScope())
        {
            var ga = CanonicalForm.CanonicalizeGlobals(a.LoadGlobals(ScalarType.Float64), result.ReportA);
            var gb = CanonicalForm.CanonicalizeGlobals(b.LoadGlobals(ScalarType.Float64), result.ReportB);
            result.Globals[Gpt2Keys.Wte] = Rel(ga.Wte, gb.Wte);
            result.Globals[Gpt2Keys.Wpe] = Rel(ga.Wpe, gb.Wpe);
            result.Globals[Gpt2Keys.LnFWeight] = Rel(ga.LnFW, gb.LnFW);
            result.Globals[Gpt2Keys.LnFBias] = Rel(ga.LnFB, gb.LnFB);
            if (ga.LmHead is not null || gb.LmHead is not null) result.Globals[Gpt2Keys.LmHead] = Rel(ga.Head, gb.Head);
        }
        progress?.Report((c.NLayer + 1, c.NLayer + 1));
        return result;
    }

    /// <summary>‖x − y‖_F / max(‖x‖_F, ‖y‖_F); 0 when both are 0.</summary>
    public static double Rel(Tensor x, Tensor y)
    {
        double diff = (x - y).norm().item<double>();
        if (diff == 0) return 0;
        return diff / Math.Max(x.norm().item<double>(), y.norm().item<double>());
    }

    /// <summary>Compares two canonical (full form) layers.</summary>
    public static LayerComparison CompareLayer(LayerWeights ka, LayerWeights kb, LayerReport ra, LayerReport rb, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        long d = c.NEmbd, h = c.NHead, dk = c.HeadDim;
        // Per-head factors: X = W̃_Q [h, d+1, dk], Y = W_K [h, d, dk], V = W_V [h, d, dk], O = W_Oᵀ [h, d, dk].
        (Tensor X, Tensor Y, Tensor V, Tensor O) Factors(LayerWeights k) => (
            CanonicalForm.HeadsOfColumns(cat([k.AttnW.narrow(1, 0, d), k.AttnB.narrow(0, 0, d).unsqueeze(0)], 0), h, dk),
            CanonicalForm.HeadsOfColumns(k.AttnW.narrow(1, d, d), h, dk),
            CanonicalForm.HeadsOfColumns(k.AttnW.narrow(1, 2 * d, d), h, dk),
            k.AttnProjW.view(h, dk, d).transpose(1, 2));
        var fa = Factors(ka);
        var fb = Factors(kb);

        // Greedy matching on fingerprint distance plus canonical-factor distance.
        var dataA = cat([fa.X.reshape(h, -1), fa.Y.reshape(h, -1), fa.V.reshape(h, -1), fa.O.reshape(h, -1)], 1);
        var dataB = cat([fb.X.reshape(h, -1), fb.Y.reshape(h, -1), fb.V.reshape(h, -1), fb.O.reshape(h, -1)], 1);
        var cost = CanonicalMath.ToArray(cdist(dataA.unsqueeze(0), dataB.unsqueeze(0)).squeeze(0));
        double dataScale = Math.Max(dataA.norm().item<double>(), 1e-300);
        var match = new int[h];
        var usedA = new bool[h];
        var usedB = new bool[h];
        var pairs = new List<(double Cost, int I, int J)>();
        for (int i = 0; i < h; i++)
            for (int j = 0; j < h; j++)
            {
                double fp = FingerprintDistance(ra.Heads[i], rb.Heads[j]);
                double cd = cost[i * h + j] / dataScale;
                pairs.Add((fp + cd, i, j));
            }
        // On exact ties prefer the canonical position, so identical heads keep their order.
        foreach (var (_, i, j) in pairs.OrderBy(p => p.Cost).ThenBy(p => p.I == p.J ? 0 : 1))
        {
            if (usedA[i] || usedB[j]) continue;
            usedA[i] = usedB[j] = true;
            match[i] = j;
        }
        var perm = tensor(match.Select(j => (long)j).ToArray(), ScalarType.Int64);
        var qk = CompositeDistances(fa.X, fa.Y, fb.X.index_select(0, perm), fb.Y.index_select(0, perm));
        var vo = CompositeDistances(fa.V, fa.O, fb.V.index_select(0, perm), fb.O.index_select(0, perm));
        var heads = new List<HeadComparison>();
        for (int i = 0; i < h; i++)
            heads.Add(new HeadComparison(ra.Layer, i, ra.Heads[i].OriginalIndex, rb.Heads[match[i]].OriginalIndex, qk[i], vo[i], ra.Heads[i], rb.Heads[match[i]]));

        double mlp = MlpDistance(ka, kb);
        return new LayerComparison(ra.Layer, mlp, Rel(ka.AttnProjB, kb.AttnProjB), Rel(ka.MlpProjB, kb.MlpProjB), heads);
    }

    private static double FingerprintDistance(HeadFingerprint a, HeadFingerprint b)
    {
        double num = 0, den = 0;
        foreach (var (x, y) in a.QkSingularValues.Concat(a.VoSingularValues).Zip(b.QkSingularValues.Concat(b.VoSingularValues)))
        {
            num += (x - y) * (x - y);
            den += Math.Max(x * x, y * y);
        }
        return den == 0 ? 0 : Math.Sqrt(num / den);
    }

    /// <summary>Per head ‖X_A Y_Aᵀ − X_B Y_Bᵀ‖ / max(‖X_A Y_Aᵀ‖, ‖X_B Y_Bᵀ‖) without forming the products.</summary>
    public static double[] CompositeDistances(Tensor xa, Tensor ya, Tensor xb, Tensor yb)
    {
        using var scope = NewDisposeScope();
        static Tensor Norm(Tensor x, Tensor y)
        {
            var (_, r1) = linalg.qr(x);
            var (_, r2) = linalg.qr(y);
            return matmul(r1, r2.transpose(1, 2)).square().sum([1, 2]).sqrt();
        }
        var diff = Norm(cat([xa, -xb], 2), cat([ya, yb], 2));
        var na = Norm(xa, ya);
        var nb = Norm(xb, yb);
        var dd = CanonicalMath.ToArray(diff);
        var aa = CanonicalMath.ToArray(na);
        var bb = CanonicalMath.ToArray(nb);
        return dd.Select((v, i) => v == 0 ? 0 : v / Math.Max(aa[i], bb[i])).ToArray();
    }

    private static double MlpDistance(LayerWeights ka, LayerWeights kb)
    {
        using var scope = NewDisposeScope();
        // Unit vectors [F, d + 1 + d]: c_fc column, bias, c_proj row.
        var ua = cat([ka.FcW.t(), ka.FcB.unsqueeze(1), ka.MlpProjW], 1);
        var ub = cat([kb.FcW.t(), kb.FcB.unsqueeze(1), kb.MlpProjW], 1);
        int f = (int)ua.shape[0];
        var order = Enumerable.Range(0, f).ToArray();
        // Units whose sort keys are closer than the inputs' rounding (e.g. two c_fc column norms 1e-7 apart in an F32
        // export, far above the 1e-8 tie tolerance) can be ordered differently in A and B: a permutation is a gauge,
        // so take B's swap of any adjacent pair that matches A better. Repeated passes undo short chains too.
        for (int pass = 0; pass < 4 && f > 1; pass++)
        {
            using var passScope = NewDisposeScope();
            var perm = tensor(order.Select(i => (long)i).ToArray(), ScalarType.Int64);
            var ubo = ub.index_select(0, perm);
            var straight = CanonicalMath.ToArray(linalg.vector_norm(ua - ubo, dims: [1]));
            var down = CanonicalMath.ToArray(linalg.vector_norm(ua.narrow(0, 0, f - 1) - ubo.narrow(0, 1, f - 1), dims: [1]));  // A[p] vs B[p+1]
            var up = CanonicalMath.ToArray(linalg.vector_norm(ua.narrow(0, 1, f - 1) - ubo.narrow(0, 0, f - 1), dims: [1]));    // A[p+1] vs B[p]
            bool swappedAny = false;
            for (int p = 0; p + 1 < f; p++)
            {
                if (down[p] + up[p] >= straight[p] + straight[p + 1]) continue;
                (order[p], order[p + 1]) = (order[p + 1], order[p]);
                swappedAny = true;
                p++;   // the distances of p+1 are stale now; the next pass looks again
            }
            if (!swappedAny) break;
        }
        var ubm = ub.index_select(0, tensor(order.Select(i => (long)i).ToArray(), ScalarType.Int64));
        return Rel(ua, ubm);
    }
}
