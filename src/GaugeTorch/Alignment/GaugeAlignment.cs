using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using static TorchSharp.torch;

namespace GaugeTorch.Alignment;

/// <summary>How much of the group an alignment searches.</summary>
public enum AlignmentMode
{
    /// <summary>The complete group (docs/merging.md): residual frame, heads, per-head bases, MLP units, norms and the additive families.</summary>
    Full,
    /// <summary>Permutations only (Git Re-Basin weight matching on raw weights): residual coordinates, heads, MLP units.</summary>
    PermutationsOnly,
}

public sealed record AlignmentOptions
{
    public AlignmentMode Mode { get; init; } = AlignmentMode.Full;
    /// <summary>Untie both models first (exact: the head becomes a copy of the embedding) so the residual rotation is aligned too.</summary>
    public bool Untie { get; init; }
    /// <summary>Rounds of coordinate descent (residual frame ↔ blocks); it stops early when a round changes nothing.</summary>
    public int MaxRounds { get; init; } = 4;
}

/// <summary>The distance ‖B − A‖_F of one part (a block or the globals), before and after, with ‖A‖_F.</summary>
public sealed record PartDistance(string Part, double Before, double After, double ReferenceNorm)
{
    public double RelativeBefore => Before / ReferenceNorm;
    public double RelativeAfter => After / ReferenceNorm;
}

/// <summary>What <see cref="GaugeAlignment.Align"/> found and did.</summary>
public sealed class AlignmentResult : IDisposable
{
    /// <summary>B moved by the group element found (float64; untied when the inputs were untied or --untie).</summary>
    public required ModelWeights Aligned { get; init; }
    /// <summary>A as aligned to (float64; untied like <see cref="Aligned"/>).</summary>
    public required ModelWeights Reference { get; init; }
    /// <summary>B as given, in float64 (untied like <see cref="Aligned"/>), for function checks.</summary>
    public required ModelWeights Original { get; init; }
    public required IReadOnlyList<PartDistance> Parts { get; init; }
    public required int Rounds { get; init; }
    public required AlignmentMode Mode { get; init; }
    /// <summary>True when the head was untied (by the option or because one input was untied).</summary>
    public required bool Untied { get; init; }
    /// <summary>The residual sign found (tied models; +1 otherwise).</summary>
    public double ResidualSign { get; init; } = 1;
    /// <summary>How many residual coordinates the residual step moved (tied) or 1 − tr(Q)/d (untied, the rotation found).</summary>
    public double ResidualMoved { get; init; }

    public double TotalBefore => Math.Sqrt(Parts.Sum(p => p.Before * p.Before));
    public double TotalAfter => Math.Sqrt(Parts.Sum(p => p.After * p.After));
    public double TotalReference => Math.Sqrt(Parts.Sum(p => p.ReferenceNorm * p.ReferenceNorm));

    public void Dispose()
    {
        Aligned.Dispose();
        Reference.Dispose();
        Original.Dispose();
    }
}

/// <summary>
/// Data-free alignment of a model B to a model A of the same shapes (issue 13; docs/merging.md): B is moved by an
/// element of its gauge group so that its weights come as close to A's as the method finds, in float64, and its
/// function is unchanged because every move is an action of a catalog family (<see cref="SymmetryCatalog"/>).
/// <para>
/// Full alignment, per round of coordinate descent: (1) the residual frame: for a tied head a signed permutation by
/// linear assignment on a similarity summed over every tensor that reads or writes the residual (the embedding and
/// positions, the final norm and, after the first round, every block's folded readers and centred writers); for an
/// untied head the residual rotation with Q·1 = ±1 by orthogonal Procrustes on the same tensors; (2) the global
/// additive and gain families in closed form; (3) per block: the norms' gains and biases in closed form, heads by
/// linear assignment on distances between their gauge-invariant composites [W̃_Q; b̃_Q]·W̃_Kᵀ and W̃_V·W_O (W̃ = the
/// reader folded with its norm gain and centred, so the composites do not see families 4–9), each head's GL(d_k) and
/// GL(d_v) by least squares, MLP units by linear assignment on their folded inputs and centred outputs, then the reader
/// mean, key bias, value bias and writer mean in closed form. The residual step of later rounds sees the blocks in
/// A's head and unit order, as Git Re-Basin's weight matching alternates its permutations.
/// </para>
/// </summary>
public static partial class GaugeAlignment
{
    /// <summary>Aligns <paramref name="b"/> to <paramref name="a"/> (neither is modified).</summary>
    public static AlignmentResult Align(ModelWeights a, ModelWeights b, AlignmentOptions? options = null)
    {
        var o = options ?? new AlignmentOptions();
        ModelCompatibility.RequireSameShapes(a.Traits, b.Traits, "A", "B");
        var t0 = a.Traits;
        using var _ = no_grad();
        bool untie = o.Untie || !a.Traits.Tied || !b.Traits.Tied;
        var A = Copy64(a, untie);
        var B = Copy64(b, untie);
        var original = Copy64(b, untie);
        var t = A.Traits;
        var before = Distances(A, B);

        double sign = 1, moved = 0;
        int rounds = 0;
        for (int round = 0; round < Math.Max(1, o.MaxRounds); round++)
        {
            rounds = round + 1;
            bool changed;
            if (IsRotary(t) && !(o.Mode == AlignmentMode.Full && !t.Tied))
            {
                var (index, signs) = SignedResidualAssignment(A, B, o.Mode, includeBlocks: round > 0);
                changed = index.Select((v, i) => v != i).Any(x => x) || signs.Any(s => s != 1);
                if (changed)
                {
                    ApplyResidual(B, new SignedResidualPermutationAction(index, signs));
                    moved += index.Where((v, i) => v != i).Count();
                }
            }
            else if (IsRotary(t) && o.Mode == AlignmentMode.Full)
            {
                using var q = RmsProcrustes(A, B, includeBlocks: round > 0);
                double dev = 1 - q.diagonal().sum().item<double>() / t.Hidden;
                changed = dev > 1e-12;
                if (changed || round == 0) { ApplyResidual(B, new ResidualRotationAction(q)); moved = round == 0 ? dev : moved; }
            }
            else if (o.Mode == AlignmentMode.Full && !t.Tied)
            {
                var q = ProcrustesRotation(A, B, includeBlocks: round > 0);
                double dev = 1 - q.diagonal().sum().item<double>() / t.Hidden;
                changed = dev > 1e-12;
                if (changed || round == 0) { ApplyResidual(B, new ResidualRotationAction(q)); moved = round == 0 ? dev : moved; }
            }
            else
            {
                var (index, s) = ResidualAssignment(A, B, o.Mode, includeBlocks: round > 0);
                bool identity = s == 1 && index.Select((v, i) => v == i).All(x => x);
                changed = !identity;
                if (changed)
                {
                    using var idx = tensor(index);
                    ApplyResidual(B, new ResidualPermutationAction(idx, s));
                    sign *= s;
                    moved += index.Where((v, i) => v != i).Count();
                }
            }
            if (o.Mode == AlignmentMode.Full) { if (IsRotary(t)) AlignRmsGlobals(A, B); else AlignGlobals(A, B); }
            bool blocksChanged = false;
            for (int l = 0; l < t.Layers; l++)
            {
                var (next, c) = IsRotary(t) ? AlignBlockRotary(A.Layers[l], B.Layers[l], t, o.Mode)
                    : o.Mode == AlignmentMode.Full ? AlignBlockFull(A.Layers[l], B.Layers[l], t) : AlignBlockPermutations(A.Layers[l], B.Layers[l], t);
                B.Layers[l].Dispose();
                B.Layers[l] = next;
                blocksChanged |= c;
            }
            if (round > 0 && !changed && !blocksChanged) break;
            if (o.Mode == AlignmentMode.PermutationsOnly && round > 0 && !changed) break;
        }
        var after = Distances(A, B);
        var parts = before.Zip(after, (x, y) => new PartDistance(x.Part, x.Distance, y.Distance, x.Norm)).ToList();
        return new AlignmentResult
        {
            Aligned = B, Reference = A, Original = original, Parts = parts, Rounds = rounds, Mode = o.Mode, Untied = untie,
            ResidualSign = sign, ResidualMoved = moved,
        };
    }

    /// <summary>A float64 copy (contiguous, new tensors); untied: the head becomes a copy of the embedding when absent.</summary>
    public static ModelWeights Copy64(ModelWeights m, bool untie)
    {
        using var scope = NewDisposeScope();
        var layers = m.Layers.Select(l => l.Map(x => x.to_type(ScalarType.Float64).clone()).DetachFromDisposeScope()).ToList();
        var g = m.Globals.Map(x => x.to_type(ScalarType.Float64).clone());
        if (untie && g.Head is null) g.Head = g.Embed.clone();
        g.DetachFromDisposeScope();
        return new ModelWeights(layers, g, m.Traits with { Tied = m.Traits.Tied && !untie });
    }

    // ---------------------------------------------------------------- distances

    private static List<(string Part, double Distance, double Norm)> Distances(ModelWeights a, ModelWeights b)
    {
        var r = new List<(string, double, double)>();
        using var scope = NewDisposeScope();
        r.Add(("globals", Dist(a.Globals.Named(), b.Globals.Named()), Norm(a.Globals.Named())));
        for (int l = 0; l < a.Layers.Count; l++)
            r.Add(($"layer {l}", Dist(a.Layers[l].Named(), b.Layers[l].Named()), Norm(a.Layers[l].Named())));
        return r;
    }

    private static double Dist(IEnumerable<(string Role, Tensor Tensor)> a, IEnumerable<(string Role, Tensor Tensor)> b)
    {
        var bd = b.ToDictionary(p => p.Role, p => p.Tensor);
        double s = 0;
        foreach (var (role, x) in a) s += (x - bd[role]).square().sum().item<double>();
        return Math.Sqrt(s);
    }

    private static double Norm(IEnumerable<(string Role, Tensor Tensor)> a) => Math.Sqrt(a.Sum(p => p.Tensor.square().sum().item<double>()));

    // ---------------------------------------------------------------- applying actions

    private static void ApplyResidual<TAction>(ModelWeights m, TAction action) where TAction : ILayerAction, IGlobalAction
    {
        for (int l = 0; l < m.Layers.Count; l++)
        {
            var next = ApplyLayer(m.Layers[l], action, m.Traits);
            m.Layers[l].Dispose();
            m.Layers[l] = next;
        }
        ApplyGlobal(m, action);
    }

    private static LayerView ApplyLayer(LayerView w, ILayerAction action, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        return new LayerTransform([action]).Apply(w, t).Map(x => x.contiguous().clone()).DetachFromDisposeScope();
    }

    private static void ApplyGlobal(ModelWeights m, IGlobalAction action)
    {
        using var scope = NewDisposeScope();
        GlobalView next;
        using (var state = new GlobalState(m.Globals, m.Traits))
        {
            new GlobalTransform([action]).Apply(state);
            next = state.Materialize().Map(x => x.contiguous().clone());
        }
        next.DetachFromDisposeScope();
        m.Globals.Dispose();
        m.Globals = next;
    }

    // ---------------------------------------------------------------- the residual frame

    /// <summary>
    /// The residual-indexed features of a model, each [n, d] with the residual index last, and whether the residual
    /// sign multiplies it. Full: the embedding centred over the vocabulary (family 10), positions centred both ways,
    /// γ_f (unsigned) and β_f (signed); with blocks: each norm's gain (signed), bias (unsigned), folded centred readers
    /// (C·diag(γ)·W)ᵀ (signed) and the writers with rows centred (signed). Permutations only: the raw tensors.
    /// </summary>
    /// <summary>
    /// The residual similarity of paired features: S[i, j] = Σ_k ⟨A_k[:, i], B_k[:, j]⟩ over the features whose sign
    /// flips with the coordinate's (signed) and over the rest (unsigned), each [d, d].
    /// </summary>
    private static (Tensor Unsigned, Tensor Signed) Similarities(List<(Tensor X, bool Signed)> fa, List<(Tensor X, bool Signed)> fb, int d)
    {
        var su = zeros(d, d, ScalarType.Float64);
        var ss = zeros(d, d, ScalarType.Float64);
        for (int k = 0; k < fa.Count; k++)
        {
            var s = matmul(fa[k].X.t(), fb[k].X);
            if (fa[k].Signed) ss += s; else su += s;
        }
        return (su, ss);
    }

    private static List<(Tensor X, bool Signed)> ResidualFeatures(ModelWeights m, AlignmentMode mode, bool includeBlocks)
    {
        var f = new List<(Tensor, bool)>();
        var g = m.Globals;
        bool full = mode == AlignmentMode.Full;
        f.Add((full ? g.Embed - g.Embed.mean([0], keepdim: true) : g.Embed, true));
        if (g.Positions is not null) f.Add((full ? DoubleCentre(g.Positions) : g.Positions, true));
        f.Add((g.FinalNorm.Gain.unsqueeze(0), false));
        if (g.FinalNorm.Bias is not null) f.Add((g.FinalNorm.Bias.unsqueeze(0), true));
        if (!includeBlocks) return f;
        foreach (var w in m.Layers)
        {
            foreach (var (norm, reader) in new[] { (w.Norm1, ViewOps.Reader1(w)), (w.Norm2, w.Up) })
            {
                f.Add((norm.Gain.unsqueeze(0), true));
                if (norm.Bias is not null) f.Add((norm.Bias.unsqueeze(0), false));
                f.Add((full ? FoldCentre(reader, norm.Gain).t() : reader.t(), true));
            }
            var o = ViewOps.FlatO(w);
            f.Add((full ? o - o.mean([1], keepdim: true) : o, true));
            f.Add((full ? w.Down - w.Down.mean([1], keepdim: true) : w.Down, true));
            if (!full)
            {
                if (w.OBias is not null) f.Add((w.OBias.unsqueeze(0), true));
                if (w.DownBias is not null) f.Add((w.DownBias.unsqueeze(0), true));
            }
        }
        return f;
    }

    private static Tensor DoubleCentre(Tensor x)
    {
        var y = x - x.mean([0], keepdim: true);
        return y - y.mean([1], keepdim: true);
    }

    /// <summary>C·diag(γ)·W: the reader as the normalized vector sees it, its 1-component (never read) removed.</summary>
    private static Tensor FoldCentre(Tensor w, Tensor gain)
    {
        var y = gain.unsqueeze(1) * w;
        return y - y.mean([0], keepdim: true);
    }

    /// <summary>
    /// The signed residual permutation x ↦ σ·x·P maximizing Σ_features ⟨A, σ·B·P⟩: one linear assignment per sign on
    /// S_σ = S_unsigned + σ·S_signed, S[i, j] = Σ ⟨A[:, i], B[:, j]⟩. Returns (index, σ) with (x·P)[i] = x[index[i]].
    /// </summary>
    private static (long[] Index, double Sign) ResidualAssignment(ModelWeights a, ModelWeights b, AlignmentMode mode, bool includeBlocks)
    {
        using var scope = NewDisposeScope();
        int d = a.Traits.Hidden;
        var fa = ResidualFeatures(a, mode, includeBlocks);
        var fb = ResidualFeatures(b, mode, includeBlocks);
        var (su, ss) = Similarities(fa, fb, d);
        var best = (Index: Array.Empty<long>(), Sign: 1.0, Score: double.NegativeInfinity);
        foreach (double sign in mode == AlignmentMode.Full ? new[] { 1.0, -1.0 } : [1.0])
        {
            var sim = (su + sign * ss).contiguous();
            var data = sim.data<double>().ToArray();
            var assign = LinearAssignment.Maximize(data, d);
            double score = 0;
            for (int i = 0; i < d; i++) score += data[i * d + assign[i]];
            if (score > best.Score) best = (assign.Select(x => (long)x).ToArray(), sign, score);
        }
        return (best.Index, best.Sign);
    }

    /// <summary>
    /// The orthogonal Q with Q·1 = ±1 minimizing Σ ‖B_f·Q − A_f‖² over the rotation-covariant features (embedding and
    /// positions centred both ways, the head folded with γ_f and centred both ways; with blocks: folded centred
    /// readers transposed and centred writers): Q = H·U·Vᵀ·Hᵀ ± 11ᵀ/d, with H Helmert's basis of 1's complement and
    /// U S Vᵀ the SVD of Hᵀ·(Σ B_fᵀ A_f)·H.
    /// </summary>
    private static Tensor ProcrustesRotation(ModelWeights a, ModelWeights b, bool includeBlocks)
    {
        using var scope = NewDisposeScope();
        int d = a.Traits.Hidden;
        var fa = RotationFeatures(a, includeBlocks);
        var fb = RotationFeatures(b, includeBlocks);
        var m = zeros(d, d, ScalarType.Float64);
        for (int k = 0; k < fa.Count; k++) m += matmul(fb[k].t(), fa[k]);
        var h = CanonicalMath.HelmertBasis(d).to_type(ScalarType.Float64);
        var core = matmul(matmul(h.t(), m), h);
        var (u, _, vh) = linalg.svd(core, fullMatrices: false);
        double s = m.sum().item<double>() >= 0 ? 1 : -1;
        var q = matmul(matmul(h, matmul(u, vh)), h.t()) + s / d;
        return q.contiguous().MoveToOuterDisposeScope();
    }

    private static List<Tensor> RotationFeatures(ModelWeights m, bool includeBlocks)
    {
        var g = m.Globals;
        var f = new List<Tensor> { DoubleCentre(g.Embed) };
        if (g.Positions is not null) f.Add(DoubleCentre(g.Positions));
        f.Add(DoubleCentre(g.HeadOrEmbed * g.FinalNorm.Gain.unsqueeze(0)));
        if (!includeBlocks) return f;
        foreach (var w in m.Layers)
        {
            f.Add(FoldCentre(ViewOps.Reader1(w), w.Norm1.Gain).t());
            f.Add(FoldCentre(w.Up, w.Norm2.Gain).t());
            var o = ViewOps.FlatO(w);
            f.Add(o - o.mean([1], keepdim: true));
            f.Add(w.Down - w.Down.mean([1], keepdim: true));
        }
        return f;
    }

    // ---------------------------------------------------------------- globals

    /// <summary>Families 10 and, untied, 12–15 in closed form (each the exact least-squares choice of its parameters).</summary>
    private static void AlignGlobals(ModelWeights a, ModelWeights b)
    {
        var ga = a.Globals;
        if (b.Globals.Positions is not null && ga.Positions is not null)
        {
            using var scope = NewDisposeScope();
            var u = (ga.Embed - b.Globals.Embed).mean([0]);
            var pos = b.Globals.Positions - u.unsqueeze(0);
            var c = (ga.Positions - pos).mean([1]);
            ApplyGlobal(b, new EmbeddingOffsetAction(u, c));
        }
        if (a.Traits.Tied) return;
        using (var scope = NewDisposeScope())
            ApplyGlobal(b, new TokenMeanAction((ga.Embed - b.Globals.Embed).mean([1])));
        using (var scope = NewDisposeScope())
            ApplyGlobal(b, new FinalGainAction(Ratio(ga.FinalNorm.Gain, b.Globals.FinalNorm.Gain)));
        if (ga.FinalNorm.Bias is not null)
            using (var scope = NewDisposeScope())
            {
                var tb = ga.FinalNorm.Bias - b.Globals.FinalNorm.Bias!;
                // β_f + t must keep a non-zero product with 1/γ_f (the family divides by it); skip when it would not.
                if (Math.Abs(ga.FinalNorm.Bias.dot(b.Globals.FinalNorm.Gain.reciprocal()).item<double>()) > 1e-300)
                    ApplyGlobal(b, new FinalBiasAction(tb));
            }
        using (var scope = NewDisposeScope())
            ApplyGlobal(b, new UnembedOffsetAction((ga.Head! - b.Globals.Head!).mean([0])));
    }

    /// <summary>s = a/b where both are non-zero and finite, else 1.</summary>
    private static Tensor Ratio(Tensor a, Tensor b)
    {
        var r = a / b;
        return where(r.isfinite().logical_and(r.ne(0)), r, ones_like(r));
    }

    // ---------------------------------------------------------------- blocks, full

    private static (LayerView, bool) AlignBlockFull(LayerView a, LayerView b, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var w = b.Map(x => x.alias());
        bool changed = false;
        // Families 6 and 7: norm gains, then norm biases.
        w = Apply(w, new NormGainAction("ln-gain", Ratio(a.Norm1.Gain, w.Norm1.Gain), Ratio(a.Norm2.Gain, w.Norm2.Gain)), t);
        if (a.Norm1.Bias is not null && w.Norm1.Bias is not null && w.QBias is not null && w.UpBias is not null)
            w = Apply(w, new NormBiasAction(a.Norm1.Bias - w.Norm1.Bias, a.Norm2.Bias! - w.Norm2.Bias!), t);
        // Family 3: heads by their composites.
        var sigma = HeadAssignment(a, w, t);
        if (sigma.Select((v, i) => v != i).Any(x => x)) { w = Apply(w, new HeadPermutationAction(sigma, wholeHeads: true), t); changed = true; }
        // Families 1 and 2: per-head bases.
        var fa = HeadFeatures(a, t);
        var fb = HeadFeatures(w, t);
        int h = t.QueryHeads;
        var qx = new Tensor[h];
        var vx = new Tensor[h];
        for (int i = 0; i < h; i++)
        {
            qx[i] = BasisLeastSquares(fb.Q[i], fa.Q[i], fb.K[i], fa.K[i]);
            vx[i] = BasisLeastSquares(fb.V[i], fa.V[i], fb.O[i].t(), fa.O[i].t());
        }
        var qa = stack(qx);
        var va = stack(vx);
        w = Apply(w, new QkAction("qk", qa, linalg.inv(qa).transpose(1, 2).contiguous()), t);
        w = Apply(w, new VoAction("vo", va, linalg.inv(va)), t);
        // Family 3: MLP units.
        var pi = UnitAssignment(a, w, full: true);
        if (pi.Select((v, i) => v != i).Any(x => x)) { w = Apply(w, new MlpPermutationAction(pi), t); changed = true; }
        // Family 8: reader mean (W + (1/γ)cᵀ), least squares per column.
        if (w.QBias is not null && w.UpBias is not null && w.Norm1.Bias is not null)
        {
            var c1 = MeanCoefficients(ViewOps.Reader1(a), ViewOps.Reader1(w), w.Norm1.Gain);
            var c2 = MeanCoefficients(a.Up, w.Up, w.Norm2.Gain);
            Tensor? c3 = w.Gate is null ? null : MeanCoefficients(a.Gate!, w.Gate, w.Norm2.Gain);
            w = Apply(w, new ReaderMeanAction(c1, c2, c3), t);
        }
        // Families 4 and 5: key bias and value bias.
        if (w.KBias is not null && a.KBias is not null) w = Apply(w, new KeyBiasAction((a.KBias - w.KBias).reshape(-1)), t);
        if (w.VBias is not null && a.VBias is not null && w.OBias is not null) w = Apply(w, new ValueBiasAction((a.VBias - w.VBias).reshape(-1)), t);
        // Family 9: writer mean (W + a1ᵀ, b + κ1).
        if (w.OBias is not null && w.DownBias is not null)
        {
            var ao = (ViewOps.FlatO(a) - ViewOps.FlatO(w)).mean([1]);
            var am = (a.Down - w.Down).mean([1]);
            w = Apply(w, new WriterMeanAction(ao, (a.OBias! - w.OBias).mean().item<double>(), am, (a.DownBias! - w.DownBias).mean().item<double>()), t);
        }
        return (w.Map(x => x.contiguous().clone()).DetachFromDisposeScope(), changed);
    }

    private static LayerView Apply(LayerView w, ILayerAction action, ModelTraits t) => new LayerTransform([action]).Apply(w, t);

    /// <summary>c = (W_A − W_B)ᵀ(1/γ)/‖1/γ‖²: the reader-mean shift that brings each column of B's reader closest to A's.</summary>
    private static Tensor MeanCoefficients(Tensor wa, Tensor wb, Tensor gain)
    {
        var inv = gain.reciprocal();
        return matmul(inv.unsqueeze(0), wa - wb).squeeze(0) / inv.dot(inv);
    }

    /// <summary>Per head: [W̃_Q; b̃_Q] [H, d+1, hd], W̃_K [H, d, hd], W̃_V [H, d, hd], W_O centred [H, hd, d] (query heads; KV per query head).</summary>
    private static (Tensor Q, Tensor K, Tensor V, Tensor O) HeadFeatures(LayerView w, ModelTraits t)
    {
        var g = w.Norm1.Gain;
        Tensor Fold(Tensor heads)   // [n, d, hd]
        {
            var y = g.view(1, -1, 1) * heads;
            return y - y.mean([1], keepdim: true);
        }
        var q = Fold(w.Q);
        if (w.QBias is not null)
        {
            var bt = w.QBias + (w.Norm1.Bias is null ? zeros_like(w.QBias) : matmul(w.Norm1.Bias.view(1, 1, -1), w.Q).squeeze(1));
            q = cat([q, bt.unsqueeze(1)], 1);
        }
        var k = ViewOps.PerQueryHead(Fold(w.K), t);
        var v = ViewOps.PerQueryHead(Fold(w.V), t);
        var o = w.O - w.O.mean([2], keepdim: true);
        return (q, k, v, o);
    }

    /// <summary>
    /// σ minimizing Σ_i ‖QK_A,i − QK_B,σ(i)‖² + ‖VO_A,i − VO_B,σ(i)‖² (GAUGE.md §5 steps 5–6's composites), the inner
    /// products computed from hd×hd Gram products without forming any d×d composite.
    /// </summary>
    private static long[] HeadAssignment(LayerView a, LayerView b, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        int h = t.QueryHeads;
        var fa = HeadFeatures(a, t);
        var fb = HeadFeatures(b, t);
        static Tensor Cross(Tensor x, Tensor y) => einsum("ink,jnl->ijkl", x, y);            // [h, h, hd, hd]: x_iᵀ y_j
        static Tensor RowCross(Tensor x, Tensor y) => einsum("ikn,jln->ijkl", x, y);         // x_i y_jᵀ
        var qk = (Cross(fa.Q, fb.Q) * Cross(fa.K, fb.K)).sum([2, 3]);
        var qkA = (Cross(fa.Q, fa.Q) * Cross(fa.K, fa.K)).sum([2, 3]).diagonal();
        var qkB = (Cross(fb.Q, fb.Q) * Cross(fb.K, fb.K)).sum([2, 3]).diagonal();
        var vo = (Cross(fa.V, fb.V) * RowCross(fa.O, fb.O)).sum([2, 3]);
        var voA = (Cross(fa.V, fa.V) * RowCross(fa.O, fa.O)).sum([2, 3]).diagonal();
        var voB = (Cross(fb.V, fb.V) * RowCross(fb.O, fb.O)).sum([2, 3]).diagonal();
        var cost = qkA.unsqueeze(1) + qkB.unsqueeze(0) - 2 * qk + voA.unsqueeze(1) + voB.unsqueeze(0) - 2 * vo;
        return Assign(cost.contiguous(), h, minimize: true);
    }

    private static long[] Assign(Tensor matrix, int n, bool minimize)
    {
        var data = matrix.to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
        var r = minimize ? LinearAssignment.Minimize(data, n) : LinearAssignment.Maximize(data, n);
        return r.Select(x => (long)x).ToArray();
    }

    /// <summary>
    /// MLP units: π maximizing Σ_u ⟨unit_A,u, unit_B,π(u)⟩ over their features: full, the folded centred input column
    /// C·diag(γ₂)·W_up[:, u], its folded bias b̃ = b + β₂·W_up[:, u] and the centred output row; permutations only,
    /// the raw column, bias and row.
    /// </summary>
    private static long[] UnitAssignment(LayerView a, LayerView b, bool full)
    {
        using var scope = NewDisposeScope();
        Tensor Features(LayerView w)
        {
            var parts = new List<Tensor>();
            if (full)
            {
                parts.Add(FoldCentre(w.Up, w.Norm2.Gain).t());
                if (w.Gate is not null) parts.Add(FoldCentre(w.Gate, w.Norm2.Gain).t());
                if (w.UpBias is not null)
                    parts.Add((w.UpBias + (w.Norm2.Bias is null ? zeros_like(w.UpBias) : matmul(w.Norm2.Bias.unsqueeze(0), w.Up).squeeze(0))).unsqueeze(1));
                parts.Add(w.Down - w.Down.mean([1], keepdim: true));
            }
            else
            {
                parts.Add(w.Up.t());
                if (w.Gate is not null) parts.Add(w.Gate.t());
                if (w.UpBias is not null) parts.Add(w.UpBias.unsqueeze(1));
                if (w.GateBias is not null) parts.Add(w.GateBias.unsqueeze(1));
                parts.Add(w.Down);
            }
            return cat(parts, 1);                                                    // [F, n]
        }
        var s = matmul(Features(a), Features(b).t());
        return Assign(s, (int)a.Up.shape[1], minimize: false);
    }

    /// <summary>
    /// X [k, k] minimizing J(X) = ‖P₁X − T₁‖² + ‖P₂X⁻ᵀ − T₂‖² (a per-head basis: the query side moves by X, the key
    /// side by X⁻ᵀ). There is no closed form in general: the candidates are the identity and the two one-sided least
    /// squares solutions (each exact when B is A moved by a basis change), the best of them is refined by gradient
    /// descent with a backtracking step, alternating the two sides' pull through the gradient.
    /// </summary>
    public static Tensor BasisLeastSquares(Tensor p1, Tensor t1, Tensor p2, Tensor t2, int iterations = 60)
    {
        using var scope = NewDisposeScope();
        long k = p1.shape[1];
        double scale = t1.square().sum().item<double>() + t2.square().sum().item<double>() + 1e-300;
        double J(Tensor x)
        {
            var xi = linalg.inv(x);
            double v = (matmul(p1, x) - t1).square().sum().item<double>() + (matmul(p2, xi.t()) - t2).square().sum().item<double>();
            return double.IsFinite(v) ? v : double.PositiveInfinity;
        }
        var candidates = new List<Tensor> { eye(k, dtype: ScalarType.Float64) };
        var x1 = linalg.lstsq(p1, t1).Solution;
        candidates.Add(x1);
        var y2 = linalg.lstsq(p2, t2).Solution;
        if (Math.Abs(linalg.det(y2).item<double>()) > 0) candidates.Add(linalg.inv(y2).t());
        Tensor best = candidates[0];
        double jb = double.PositiveInfinity;
        foreach (var c in candidates)
        {
            if (!c.isfinite().all().item<bool>() || linalg.cond(c).item<double>() > 1e12) continue;
            double j = J(c);
            if (j < jb) { jb = j; best = c; }
        }
        double eta = 1.0 / (p1.square().sum().item<double>() + p2.square().sum().item<double>() + 1e-300);
        for (int it = 0; it < iterations && jb > 1e-26 * scale; it++)
        {
            var xi = linalg.inv(best);
            var r1 = matmul(p1, best) - t1;
            var r2 = matmul(p2, xi.t()) - t2;
            var grad = 2 * matmul(p1.t(), r1) - 2 * matmul(matmul(xi.t(), matmul(r2.t(), p2)), xi.t());
            bool accepted = false;
            for (int tries = 0; tries < 30; tries++)
            {
                var next = best - eta * grad;
                double jn = linalg.cond(next).item<double>() > 1e12 ? double.PositiveInfinity : J(next);
                if (jn < jb) { best = next; jb = jn; eta *= 2; accepted = true; break; }
                eta /= 2;
            }
            if (!accepted) break;
        }
        return best.contiguous().MoveToOuterDisposeScope();
    }

    // ---------------------------------------------------------------- blocks, permutations only

    private static (LayerView, bool) AlignBlockPermutations(LayerView a, LayerView b, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var w = b.Map(x => x.alias());
        bool changed = false;
        int h = t.QueryHeads;
        if (t.KvHeads == h)
        {
            Tensor Heads(LayerView v)
            {
                var parts = new List<Tensor> { v.Q.reshape(h, -1), v.K.reshape(h, -1), v.V.reshape(h, -1), v.O.reshape(h, -1) };
                if (v.QBias is not null) parts.AddRange([v.QBias, v.KBias!, v.VBias!]);
                return cat(parts, 1);
            }
            var sigma = Assign(matmul(Heads(a), Heads(w).t()), h, minimize: false);
            if (sigma.Select((v, i) => v != i).Any(x => x)) { w = Apply(w, new HeadPermutationAction(sigma, wholeHeads: true), t); changed = true; }
        }
        var pi = UnitAssignment(a, w, full: false);
        if (pi.Select((v, i) => v != i).Any(x => x)) { w = Apply(w, new MlpPermutationAction(pi), t); changed = true; }
        return (w.Map(x => x.contiguous().clone()).DetachFromDisposeScope(), changed);
    }
}
