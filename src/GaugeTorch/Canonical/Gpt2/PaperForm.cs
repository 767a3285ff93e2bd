using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>
/// The papers' weaker canonical form (<c>--form paper</c>): steps 5–8 of GAUGE.md §5 only. Biases are carried as
/// extra rows (W̃_Q = [W_Q; b_Q], W̃_K = [W_K; b_K], W̃_V = [W_V; b_V]); the QK factors are balanced
/// (U·S^{1/2}, V·S^{1/2}); W̃_V is orthonormal (U) and W_O = S·Vᵀ as in the paper's Proposition E.9; signs and
/// head/unit order as in the full form. LayerNorms, b_O and the embeddings are kept. Unique only on orbits of
/// families 1–3 (and only where the composites have full rank: zero singular values give zero columns of W̃_V).
/// </summary>
public static class PaperForm
{
    public static LayerWeights CanonicalizeLayer(LayerWeights input, Gpt2Config c, LayerReport report, CanonicalPrecision? precision = null)
    {
        var p = precision ?? CanonicalPrecision.Float64;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long d = c.NEmbd, h = c.NHead, dk = c.HeadDim;
        var w = CanonicalForm.Float64(input);
        var wq = w.AttnW.narrow(1, 0, d);
        var wk = w.AttnW.narrow(1, d, d);
        var wv = w.AttnW.narrow(1, 2 * d, d);
        var bq = w.AttnB.narrow(0, 0, d);
        var bk = w.AttnB.narrow(0, d, d);
        var bv = w.AttnB.narrow(0, 2 * d, d);

        var qt = CanonicalForm.HeadsOfColumns(cat([wq, bq.unsqueeze(0)], 0), h, dk);   // [h, d+1, dk]
        var kt = CanonicalForm.HeadsOfColumns(cat([wk, bk.unsqueeze(0)], 0), h, dk);
        var (newQ, sq, newK, fq) = CanonicalMath.BalancedFactors(qt, kt, CanonicalForm.RankTolerance, p.Sort);

        var vt = CanonicalForm.HeadsOfColumns(cat([wv, bv.unsqueeze(0)], 0), h, dk);   // [h, d+1, dv]
        var ot = w.AttnProjW.view(h, dk, d).transpose(1, 2);                              // [h, d, dv]
        var (xv, sv, yo, fv) = CanonicalMath.BalancedFactors(vt, ot, CanonicalForm.RankTolerance, p.Sort);
        report.HouseholderFallbacks += fq + fv;
        // Orthonormal W̃_V = U = X·S^{-1/2} and W_O = S·Vᵀ, i.e. W_Oᵀ = Y·S^{1/2} (zero columns where S = 0).
        var root = sv.sqrt().unsqueeze(1);
        var newV = xv * where(root > 0, root.reciprocal(), zeros_like(root));
        var newOt = yo * root;

        var order = CanonicalForm.SortHeads(sq, sv, () => [newQ, newK, newV, newOt], report, p);
        var perm = tensor(order.Select(i => (long)i).ToArray(), ScalarType.Int64);
        newQ = newQ.index_select(0, perm);
        newK = newK.index_select(0, perm);
        newV = newV.index_select(0, perm);
        newOt = newOt.index_select(0, perm);
        var q = CanonicalForm.ColumnsOfHeads(newQ);
        var k = CanonicalForm.ColumnsOfHeads(newK);
        var v = CanonicalForm.ColumnsOfHeads(newV);
        var attnW = cat([q.narrow(0, 0, d), k.narrow(0, 0, d), v.narrow(0, 0, d)], 1);
        var attnB = cat([q.select(0, d), k.select(0, d), v.select(0, d)], 0);
        var projW = newOt.transpose(1, 2).reshape(d, d);

        var unitOrder = CanonicalForm.SortUnits(w.FcW, w.FcB, w.MlpProjW, report, p);
        var up = tensor(unitOrder.Select(i => (long)i).ToArray(), ScalarType.Int64);
        var result = new LayerWeights
        {
            Ln1W = w.Ln1W.clone(), Ln1B = w.Ln1B.clone(),
            AttnW = attnW.contiguous(), AttnB = attnB.contiguous(),
            AttnProjW = projW.contiguous(), AttnProjB = w.AttnProjB.clone(),
            Ln2W = w.Ln2W.clone(), Ln2B = w.Ln2B.clone(),
            FcW = w.FcW.index_select(1, up).contiguous(), FcB = w.FcB.index_select(0, up).contiguous(),
            MlpProjW = w.MlpProjW.index_select(0, up).contiguous(), MlpProjB = w.MlpProjB.clone(),
        };
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The paper's form leaves the embeddings, ln_f and the head as they are (float64 copies).</summary>
    public static GlobalWeights CanonicalizeGlobals(GlobalWeights g) => new()
    {
        Wte = g.Wte.to_type(ScalarType.Float64).clone(),
        Wpe = g.Wpe.to_type(ScalarType.Float64).clone(),
        LnFW = g.LnFW.to_type(ScalarType.Float64).clone(),
        LnFB = g.LnFB.to_type(ScalarType.Float64).clone(),
        LmHead = g.LmHead?.to_type(ScalarType.Float64).clone(),
    };
}
