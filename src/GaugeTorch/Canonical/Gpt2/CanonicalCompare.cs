using GaugeTorch.SafeTensors;
using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

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

/// <summary>Options of <see cref="CanonicalCompare.Compare"/>.</summary>
public sealed record CompareOptions
{
    /// <summary>Largest distance between the canonical forms still called equivalent; null: derived from the inputs' measured rounding.</summary>
    public double? Tolerance { get; init; }
    /// <summary>Tokens for the function comparison; null: the built-in text (ids folded into a small vocabulary); empty: not compared.</summary>
    public int[]? Tokens { get; init; }
    /// <summary>Layers done / total (the globals count as one more step).</summary>
    public IProgress<(int Done, int Total)>? Progress { get; init; }
}

/// <summary>The result of <see cref="CanonicalCompare.Compare"/>: distances, tolerances and the verdict.</summary>
public sealed class ComparisonResult : ComparisonVerdict
{
    public List<LayerComparison> Layers { get; } = [];
    public CanonicalReport ReportA { get; init; } = new();
    public CanonicalReport ReportB { get; init; } = new();

    protected override double LargestInLayers => Layers.Count == 0 ? 0 : Layers.Max(l => l.Distance);

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
/// (GAUGE.md §5, with step 4b: the tied form when both heads are tied, else the untied form) layer by layer in
/// float64 and compared. Heads are compared through their QK and VO composites
/// (computed in factored form: ‖X_A Y_Aᵀ − X_B Y_Bᵀ‖_F = ‖R₁R₂ᵀ‖_F with QRs of [X_A, −X_B] and [Y_A, Y_B]), which
/// does not depend on the sign or basis choices inside near-degenerate singular subspaces. Heads are matched
/// greedily by fingerprint and canonical-data distance (a head permutation is itself a gauge, so any matching is
/// legitimate; for distinct heads it is the canonical order). MLP units are compared in canonical order, taking the
/// swap of any adjacent pair of B's units that matches A better (up to four passes); longer chains of near-tied units can still be
/// mismatched (see docs/canonical-form.md).
/// <para>The verdict also compares the function: the row-centred logits of both checkpoints on a text, in float64.
/// Both tolerances are derived from the measured rounding of the inputs (<see cref="RoundingSafety"/>), not from a
/// table per dtype: two checkpoints whose differences are within a few times what storing each of them costs are
/// called equivalent.</para>
/// </summary>
public static class CanonicalCompare
{
    /// <summary>The shared rule's constants (<see cref="ComparisonVerdict"/>).</summary>
    public const double RoundingSafety = ComparisonVerdict.RoundingSafety;
    public const double Float64WeightFloor = ComparisonVerdict.Float64WeightFloor;
    public static readonly double Float64FunctionFloor = ComparisonVerdict.Float64FunctionFloor;

    public static ComparisonResult Compare(Gpt2Checkpoint a, Gpt2Checkpoint b, IProgress<(int Done, int Total)>? progress = null) =>
        Compare(a, b, new CompareOptions { Progress = progress });

    public static ComparisonResult Compare(Gpt2Checkpoint a, Gpt2Checkpoint b, CompareOptions o)
    {
        var c = a.Config;
        var cb = b.Config;
        if (c.NLayer != cb.NLayer || c.NEmbd != cb.NEmbd || c.NHead != cb.NHead || c.NInner != cb.NInner || c.VocabSize != cb.VocabSize || c.NPositions != cb.NPositions)
            throw new ArgumentException($"{a.Directory} and {b.Directory} have different architectures (L, d, h, F, V, P = {c.NLayer}, {c.NEmbd}, {c.NHead}, {c.NInner}, {c.VocabSize}, {c.NPositions} vs {cb.NLayer}, {cb.NEmbd}, {cb.NHead}, {cb.NInner}, {cb.VocabSize}, {cb.NPositions}): not comparable");
        var pa = CanonicalPrecision.For(a.StorageDType, a.StorageDType);
        var pb = CanonicalPrecision.For(b.StorageDType, b.StorageDType);
        var result = new ComparisonResult
        {
            ReportA = new CanonicalReport { Form = CanonicalFormKind.Full, Precision = pa },
            ReportB = new CanonicalReport { Form = CanonicalFormKind.Full, Precision = pb },
        };
        bool untied = !a.Tied || !b.Tied;
        result.HeadForm = untied ? "untied" : "tied";
        var sa = a.StorageDType.ToScalarType();
        var sb = b.StorageDType.ToScalarType();
        var tokens = o.Tokens ?? BuiltInTokens(c);
        using var tok = tokens.Length == 0 ? null : tensor(tokens.Take(c.NPositions).Select(i => (long)i).ToArray(), ScalarType.Int64);
        result.FunctionTokens = tok is null ? 0 : (int)tok.shape[0];

        // Globals first: step 4b fixes each side's residual frame there. Non-finite weights anywhere are refused.
        using var ga = a.LoadGlobals(ScalarType.Float64);
        using var gb = b.LoadGlobals(ScalarType.Float64);
        CanonicalGlobals.RequireFinite(a, ga, wteChecked: true);
        CanonicalGlobals.RequireFinite(b, gb, wteChecked: true);
        (GlobalWeights, ResidualFrame) Globals(Gpt2Checkpoint ck, GlobalWeights g, CanonicalPrecision p, CanonicalReport r)
        {
            try
            {
                return CanonicalGlobals.Canonicalize(g, untied, p, r);
            }
            catch (NonFiniteTensorException e)
            {
                throw CanonicalGlobals.Located(ck, e.Suffix);
            }
        }
        var (cga, fa) = Globals(a, ga, pa, result.ReportA);
        var (cgb, fb) = Globals(b, gb, pb, result.ReportB);
        using var frameA = fa;
        using var frameB = fb;

        double roundA, roundB;
        ResidualFrame? rframeA, rframeB;
        try
        {
            using (var scope = NewDisposeScope())
            {
                result.Globals[Gpt2Keys.Wte] = Rel(cga.Wte, cgb.Wte);
                result.Globals[Gpt2Keys.Wpe] = Rel(cga.Wpe, cgb.Wpe);
                result.Globals[Gpt2Keys.LnFWeight] = Rel(cga.LnFW, cgb.LnFW);
                result.Globals[Gpt2Keys.LnFBias] = Rel(cga.LnFB, cgb.LnFB);
                if (untied) result.Globals[Gpt2Keys.LmHead] = Rel(cga.Head, cgb.Head);
            }
            // Each input's measured rounding: how far one rounding to its storage dtype moves its canonical form. The
            // globals are canonicalized again from their rounded canonical form (recomputed); the frame that gives (the
            // identity for a tied head; for an untied head wte's principal axes, which move by ~u·λ₁/gap) then rotates
            // each rounded canonical layer, and compare's own distances measure the result.
            (roundA, rframeA) = GlobalRounding(cga, sa, untied, pa);
            (roundB, rframeB) = GlobalRounding(cgb, sb, untied, pb);
        }
        finally
        {
            // The canonical globals are not needed any more (the function uses the inputs as stored): 643 MB each on gpt2-xl.
            cga.Dispose();
            cgb.Dispose();
        }
        using var roundingFrameA = rframeA;
        using var roundingFrameB = rframeB;

        // The function: each input as stored, and each input with every stored value moved by a random relative
        // error of the size of its storage rounding (uniform in ±u; its measured function rounding, in its own
        // coordinates: a badly conditioned point of the orbit suffers more from the same rounding than its canonical
        // form), streamed layer by layer in float64 beside the canonicalization.
        double ua = CanonicalPrecision.UnitRoundoff(a.StorageDType), ub = CanonicalPrecision.UnitRoundoff(b.StorageDType);
        Tensor? xa = null, xb = null, xra = null, xrb = null;
        if (tok is not null)
        {
            xa = Gpt2Functional.Embed(tok, ga.Wte, ga.Wpe).DetachFromDisposeScope();
            xb = Gpt2Functional.Embed(tok, gb.Wte, gb.Wpe).DetachFromDisposeScope();
            xra = PerturbedEmbed(tok, ga, ua, 1000).DetachFromDisposeScope();
            xrb = PerturbedEmbed(tok, gb, ub, 2000).DetachFromDisposeScope();
        }
        try
        {
            // One reusable canonicalizer per side, reading each layer in place from the memory maps.
            using var canonA = new LayerCanonicalizer(c) { Frame = fa, Precision = pa };
            using var canonB = new LayerCanonicalizer(c) { Frame = fb, Precision = pb };
            // The function's float64 layers (each input as stored, and its perturbation) in buffers reused for every
            // layer: reading a layer into fresh tensors cost 0.25 s per side on gpt2-xl (page faults on zero-filled memory).
            // One buffer serves both sides in turn, perturbed in place after its stored forward (7.0–8.2 GB peak with
            // three of them on gpt2-xl).
            using var stored = tok is null ? null : LayerCanonicalizer.Float64Buffers(c);
            for (int l = 0; l < c.NLayer; l++)
            {
                using var scope = NewDisposeScope();
                PhaseClock.Start();
                var ra = new LayerReport { Layer = l };
                var rb = new LayerReport { Layer = l };
                canonA.Run(a, l, ra);
                canonB.Run(b, l, rb);
                result.ReportA.Layers.Add(ra);
                result.ReportB.Layers.Add(rb);
                // Each side's factors, matching data, composite norms and MLP units are prepared once and shared by
                // the comparison and by that side's rounding measurement.
                using (var prepA = PreparedLayer.Of(canonA.Output, c))
                using (var prepB = PreparedLayer.Of(canonB.Output, c))
                {
                    PhaseClock.Mark("compare: prepare");
                    result.Layers.Add(CompareLayer(prepA, prepB, ra, rb, c));
                    PhaseClock.Mark("compare: layer");
                    // Freed before the forwards below: on gpt2-xl each float64 layer is 240 MB.
                    roundA = LayerRounding(prepA, canonA.Output, sa, rframeA, ra, c, roundA);
                    roundB = LayerRounding(prepB, canonB.Output, sb, rframeB, rb, c, roundB);
                    PhaseClock.Mark("compare: layer rounding");
                }
                if (tok is not null)
                {
                    ReadLayer(a, l, stored!);
                    Step(ref xa!, stored!, c);
                    PhaseClock.Mark("function: read + forward A");
                    Perturb(stored!, ua, 1000 + l + 1);
                    Step(ref xra!, stored!, c);
                    PhaseClock.Mark("function: perturb + forward A");
                    ReadLayer(b, l, stored!);
                    Step(ref xb!, stored!, c);
                    PhaseClock.Mark("function: read + forward B");
                    Perturb(stored!, ub, 2000 + l + 1);
                    Step(ref xrb!, stored!, c);
                    PhaseClock.Mark("function: perturb + forward B");
                }
                LayerCanonicalizer.ReleaseMapped(a, l);
                LayerCanonicalizer.ReleaseMapped(b, l);
                o.Progress?.Report((l + 1, c.NLayer + 1));
            }
            result.SetWeightTolerance(o.Tolerance, roundA, a.StorageDType, roundB, b.StorageDType);
            if (tok is not null)
            {
                using var scope = NewDisposeScope();
                var ya = Gpt2Functional.RowCentre(Gpt2Functional.Head(xa!, ga, c));
                var yb = Gpt2Functional.RowCentre(Gpt2Functional.Head(xb!, gb, c));
                var yra = Gpt2Functional.RowCentre(PerturbedHead(xra!, ga, c, ua, 1000));
                var yrb = Gpt2Functional.RowCentre(PerturbedHead(xrb!, gb, c, ub, 2000));
                double eps = Math.Pow(2, -52);
                double na = ya.norm().item<double>(), nb = yb.norm().item<double>();
                double fra = (yra - ya).norm().item<double>() / (na + eps);
                double frb = (yrb - yb).norm().item<double>() / (nb + eps);
                result.SetFunction((ya - yb).norm().item<double>() / (na + eps), fra, frb);
            }
        }
        finally
        {
            xa?.Dispose(); xb?.Dispose(); xra?.Dispose(); xrb?.Dispose();
        }
        o.Progress?.Report((c.NLayer + 1, c.NLayer + 1));
        return result;
    }

    /// <summary>
    /// The globals' share of an input's measured rounding: the largest relative distance between its canonical
    /// globals <paramref name="canon"/> and the canonical form (recomputed) of their rounding to <paramref name="storage"/>,
    /// and the residual frame that recomputation finds (null when it is the identity).
    /// </summary>
    private static (double Rounding, ResidualFrame? Frame) GlobalRounding(GlobalWeights canon, ScalarType storage, bool untied, CanonicalPrecision p)
    {
        using var scope = NewDisposeScope();
        using var rounded = Rounded(canon, storage);
        var (g, frame) = CanonicalGlobals.Canonicalize(rounded, untied, p with { KeepCanonicalInput = false });
        using (g)
        {
            double r = canon.Named().Zip(g.Named()).Max(x => Rel(x.First.Tensor, x.Second.Tensor));
            if (frame.IsIdentity)
            {
                frame.Dispose();
                return (r, null);
            }
            return (r, frame);
        }
    }

    /// <summary>
    /// The larger of <paramref name="floor"/> (the rounding measured so far) and the layer's share of the measured
    /// rounding: compare's distance between a canonical layer and its rounding to <paramref name="storage"/>, moved
    /// into the recomputed frame (<see cref="RoundingDistance"/>).
    /// </summary>
    private static double LayerRounding(PreparedLayer prepared, LayerWeights canon, ScalarType storage, ResidualFrame? frame, LayerReport report, Gpt2Config c, double floor)
    {
        using var scope = NewDisposeScope();
        using var stored = canon.To(storage);
        using var rounded = stored.To(ScalarType.Float64);
        stored.Dispose();
        using var moved = InFrame(rounded, frame);
        using var other = PreparedLayer.Of(moved ?? rounded, c);
        PhaseClock.Mark("rounding: round + frame + prepare");
        return RoundingDistance(prepared, other, report, c, floor);
    }

    /// <summary>A canonical layer (LayerNorms 1 and 0) moved into <paramref name="frame"/>: readers Fᵀ·W, writers W·F; null for no frame.</summary>
    private static LayerWeights? InFrame(LayerWeights w, ResidualFrame? frame)
    {
        if (frame is null) return null;
        using var scope = NewDisposeScope();
        return new LayerWeights
        {
            Ln1W = w.Ln1W.clone(), Ln1B = w.Ln1B.clone(), AttnW = frame.Reader(w.AttnW), AttnB = w.AttnB.clone(),
            AttnProjW = frame.Writer(w.AttnProjW), AttnProjB = frame.WriterVector(w.AttnProjB),
            Ln2W = w.Ln2W.clone(), Ln2B = w.Ln2B.clone(), FcW = frame.Reader(w.FcW), FcB = w.FcB.clone(),
            MlpProjW = frame.Writer(w.MlpProjW), MlpProjB = frame.WriterVector(w.MlpProjB),
        }.MoveToOuterDisposeScope();
    }

    /// <summary>The built-in text as token ids (ids beyond a small test model's vocabulary folded into it, mod V), at most P of them.</summary>
    public static int[] BuiltInTokens(Gpt2Config c) =>
        Gpt2Tokenizer.Encode(Gpt2Tokenizer.BuiltInText).Take(c.NPositions).Select(t => t % c.VocabSize).ToArray();

    private static void Step(ref Tensor x, LayerWeights w, Gpt2Config c)
    {
        var next = Gpt2Functional.Block(x, w, c).DetachFromDisposeScope();
        x.Dispose();
        x = next;
    }

    /// <summary>x·(1 + u·r) with r uniform in [−1, 1] (seeded): a random relative error of the size of a storage rounding.</summary>
    private static Tensor Perturbed(Tensor x, double u, long seed)
    {
        using var scope = NewDisposeScope();
        var r = rand(x.shape, ScalarType.Float64, generator: new Generator((ulong)seed)) * 2 - 1;
        return (x + x * r * u).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Every tensor of <paramref name="w"/> perturbed in place as by <see cref="Perturbed(Tensor, double, long)"/>
    /// (tensor i of <see cref="LayerWeights.Named"/> with seed·64 + i): uniform_(−1, 1) draws the bits of rand·2 − 1
    /// from the same generator, and x + (r·x)·u those of x + x·r·u.
    /// </summary>
    private static void Perturb(LayerWeights w, double u, long seed)
    {
        int i = 0;
        foreach (var (_, x) in w.Named())
        {
            using var g = new Generator((ulong)(seed * 64 + i++));
            using var r = empty_like(x).uniform_(-1, 1, generator: g);
            x.add_(r.mul_(x).mul_(u));
        }
    }

    /// <summary>Layer <paramref name="layer"/> of <paramref name="ck"/> as stored, converted to float64 into <paramref name="destination"/> (from the memory map).</summary>
    private static void ReadLayer(Gpt2Checkpoint ck, int layer, LayerWeights destination)
    {
        var mapped = LayerCanonicalizer.Mapped(ck, layer);
        int i = 0;
        foreach (var (_, t) in destination.Named())
        {
            CanonicalKernels.ToFloat64(mapped[i].Data, mapped[i].DType, t.numel(), NativeTensorAccess.DataPointer(t));
            i++;
        }
    }

    /// <summary>
    /// The embedding of <paramref name="tok"/> [T] with the stored wte and wpe perturbed (<see cref="Perturbed(Tensor, double, long)"/>):
    /// only the rows used, each token's row by its own seed, so that a repeated token sees the same perturbed row.
    /// </summary>
    private static Tensor PerturbedEmbed(Tensor tok, GlobalWeights g, double u, long seed)
    {
        using var scope = NewDisposeScope();
        var ids = tok.data<long>().ToArray();
        var rows = cat(ids.Select(id => Perturbed(g.Wte[id], u, seed * 1_000_003 + 17 + id)).ToList(), 0).view(ids.Length, -1);
        var pos = Perturbed(g.Wpe.narrow(0, 0, ids.Length), u, seed * 64 + 2);
        return (rows + pos).MoveToOuterDisposeScope();
    }

    /// <summary>The logits [T, V] of hidden states <paramref name="x"/> through ln_f and the head, all perturbed; the head in chunks of 8,192 vocabulary rows.</summary>
    private static Tensor PerturbedHead(Tensor x, GlobalWeights g, Gpt2Config c, double u, long seed)
    {
        using var scope = NewDisposeScope();
        var n = Gpt2Functional.LayerNorm(x, Perturbed(g.LnFW, u, seed * 64 + 3), Perturbed(g.LnFB, u, seed * 64 + 4), c.LayerNormEpsilon);
        var head = g.Head;
        long v = head.shape[0];
        const long chunk = 8192;
        var parts = new List<Tensor>();
        for (long start = 0, i = 0; start < v; start += chunk, i++)
        {
            using var part = Perturbed(head.narrow(0, start, Math.Min(chunk, v - start)), u, seed * 64 + 5 + 64 * i);
            parts.Add(matmul(n, part.t()));
        }
        return cat(parts, 1).MoveToOuterDisposeScope();
    }

    /// <summary>Globals rounded to a storage dtype and back to float64.</summary>
    private static GlobalWeights Rounded(GlobalWeights g, ScalarType storage)
    {
        using var scope = NewDisposeScope();
        Tensor R(Tensor t) => t.to_type(storage).to_type(ScalarType.Float64);
        return new GlobalWeights { Wte = R(g.Wte), Wpe = R(g.Wpe), LnFW = R(g.LnFW), LnFB = R(g.LnFB), LmHead = g.LmHead is null ? null : R(g.LmHead) }.MoveToOuterDisposeScope();
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
        using var pa = PreparedLayer.Of(ka, c);
        using var pb = PreparedLayer.Of(kb, c);
        return CompareLayer(pa, pb, ra, rb, c);
    }

    /// <summary>
    /// One side of a layer comparison, prepared once and shared by every comparison it takes part in (A with B, and
    /// A with its own rounding): the per-head factors X = W̃_Q [h, d+1, dk], Y = W_K, V = W_V [h, d, dk] and
    /// O = W_Oᵀ [h, d, dk] (a view of the layer's c_proj weight), the matching data and its norm, the MLP unit
    /// vectors [F, d + 1 + d] (c_fc column, bias, c_proj row), and the per-head composite norms ‖X Yᵀ‖ and ‖V Oᵀ‖
    /// (QR route, on first use). The values are exactly those the comparison computed for each pair before.
    /// </summary>
    private sealed class PreparedLayer : IDisposable
    {
        public required Tensor X, Y, V, O, Data, Units, AttnProjB, MlpProjB;
        public required double DataScale;
        public required long Heads;
        private double[]? _qkNorms, _voNorms;

        public double[] QkNorms => _qkNorms ??= CompositeNorms(X, Y);
        public double[] VoNorms => _voNorms ??= CompositeNorms(V, O);

        public static PreparedLayer Of(LayerWeights k, Gpt2Config c)
        {
            using var scope = NewDisposeScope();
            long d = c.NEmbd, h = c.NHead, dk = c.HeadDim;
            var x = CanonicalForm.HeadsOfColumns(cat([k.AttnW.narrow(1, 0, d), k.AttnB.narrow(0, 0, d).unsqueeze(0)], 0), h, dk);
            var y = CanonicalForm.HeadsOfColumns(k.AttnW.narrow(1, d, d), h, dk);
            var v = CanonicalForm.HeadsOfColumns(k.AttnW.narrow(1, 2 * d, d), h, dk);
            var ot = k.AttnProjW.view(h, dk, d).transpose(1, 2);
            var data = cat([x.reshape(h, -1), y.reshape(h, -1), v.reshape(h, -1), ot.reshape(h, -1)], 1);
            var units = cat([k.FcW.t(), k.FcB.unsqueeze(1), k.MlpProjW], 1);
            var p = new PreparedLayer
            {
                X = x.DetachFromDisposeScope(), Y = y.DetachFromDisposeScope(), V = v.DetachFromDisposeScope(), O = ot.DetachFromDisposeScope(),
                Data = data.DetachFromDisposeScope(), Units = units.DetachFromDisposeScope(),
                AttnProjB = k.AttnProjB.alias().DetachFromDisposeScope(), MlpProjB = k.MlpProjB.alias().DetachFromDisposeScope(),
                DataScale = Math.Max(data.norm().item<double>(), 1e-300), Heads = h,
            };
            return p;
        }

        public void Dispose()
        {
            X.Dispose(); Y.Dispose(); V.Dispose(); O.Dispose(); Data.Dispose(); Units.Dispose(); AttnProjB.Dispose(); MlpProjB.Dispose();
        }
    }

    private static LayerComparison CompareLayer(PreparedLayer pa, PreparedLayer pb, LayerReport ra, LayerReport rb, Gpt2Config c)
    {
        using var scope = NewDisposeScope();
        int h = (int)pa.Heads;
        var match = MatchHeads(pa, pb, ra, rb);
        var perm = tensor(match.Select(j => (long)j).ToArray(), ScalarType.Int64);
        PhaseClock.Mark("cmp: match");
        var qk = Distances(DifferenceNorms(pa.X, pa.Y, pb.X.index_select(0, perm), pb.Y.index_select(0, perm)), pa.QkNorms, Permuted(pb.QkNorms, match));
        PhaseClock.Mark("cmp: QK");
        var vo = Distances(DifferenceNorms(pa.V, pa.O, pb.V.index_select(0, perm), pb.O.index_select(0, perm)), pa.VoNorms, Permuted(pb.VoNorms, match));
        PhaseClock.Mark("cmp: VO");
        var heads = new List<HeadComparison>();
        for (int i = 0; i < h; i++)
            heads.Add(new HeadComparison(ra.Layer, i, ra.Heads[i].OriginalIndex, rb.Heads[match[i]].OriginalIndex, qk[i], vo[i], ra.Heads[i], rb.Heads[match[i]]));

        double mlp = MlpDistance(pa.Units, pb.Units);
        PhaseClock.Mark("cmp: MLP");
        return new LayerComparison(ra.Layer, mlp, Rel(pa.AttnProjB, pb.AttnProjB), Rel(pa.MlpProjB, pb.MlpProjB), heads);
    }

    /// <summary>Greedy matching of B's heads to A's on fingerprint distance plus canonical-factor distance: match[i] is B's head for A's head i.</summary>
    private static int[] MatchHeads(PreparedLayer pa, PreparedLayer pb, LayerReport ra, LayerReport rb)
    {
        using var scope = NewDisposeScope();
        int h = (int)pa.Heads;
        var cost = CanonicalMath.ToArray(cdist(pa.Data.unsqueeze(0), pb.Data.unsqueeze(0)).squeeze(0));
        double dataScale = pa.DataScale;
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
        return match;
    }

    /// <summary>
    /// <see cref="MatchHeads"/> of a layer with its own rounding, without the [h × h] distance matrix (0.3 s on
    /// gpt2-xl) where the result is known to be the identity: the pair (i, i) costs its data distance alone (the
    /// fingerprints are the same report's), every pair (i, j ≠ i) at least its fingerprint distance; when each head's
    /// own pair costs less than half the cheapest other pair of its row or column, greedy matching takes every (i, i)
    /// before any other pair of i. Otherwise the full matching.
    /// </summary>
    private static int[] RoundingMatch(PreparedLayer pa, PreparedLayer pr, LayerReport report)
    {
        using var scope = NewDisposeScope();
        int h = (int)pa.Heads;
        var own = CanonicalMath.ToArray(linalg.vector_norm(pa.Data - pr.Data, dims: [1]));
        var cheapestOther = Enumerable.Repeat(double.PositiveInfinity, h).ToArray();
        for (int i = 0; i < h; i++)
            for (int j = 0; j < h; j++)
                if (i != j)
                {
                    double fp = FingerprintDistance(report.Heads[i], report.Heads[j]);
                    cheapestOther[i] = Math.Min(cheapestOther[i], fp);
                    cheapestOther[j] = Math.Min(cheapestOther[j], fp);
                }
        for (int i = 0; i < h; i++)
            if (!(2 * own[i] / pa.DataScale < cheapestOther[i])) return MatchHeads(pa, pr, report, report);
        return Enumerable.Range(0, h).ToArray();
    }

    private static double[] Permuted(double[] v, int[] match) => match.Select(j => v[j]).ToArray();

    private static double[] Distances(double[] diff, double[] na, double[] nb) =>
        diff.Select((v, i) => v == 0 ? 0 : v / Math.Max(na[i], nb[i])).ToArray();

    /// <summary>
    /// The rounding measurement's distance, max(<paramref name="floor"/>, compare's distance between <paramref name="pa"/>
    /// and its rounding <paramref name="pr"/>), with the very numbers compare computes, but the QR route (the cost:
    /// 0.5 s per comparison on gpt2-xl, twice per layer) only for the heads that can matter to the maximum. Every
    /// other head is bounded from above by its Gram-route estimate
    /// (<see cref="DifferenceBounds"/>): when the bound stays below the largest exact distance so far it cannot
    /// raise the maximum, and is skipped. Heads, MLP units and biases are matched and measured as in
    /// <see cref="CompareLayer(LayerWeights, LayerWeights, LayerReport, LayerReport, Gpt2Config)"/>.
    /// </summary>
    private static double RoundingDistance(PreparedLayer pa, PreparedLayer pr, LayerReport report, Gpt2Config c, double floor)
    {
        using var scope = NewDisposeScope();
        var match = RoundingMatch(pa, pr, report);
        var perm = tensor(match.Select(j => (long)j).ToArray(), ScalarType.Int64);
        double m = floor;
        m = Math.Max(m, MlpDistance(pa.Units, pr.Units));
        m = Math.Max(m, Rel(pa.AttnProjB, pr.AttnProjB));
        m = Math.Max(m, Rel(pa.MlpProjB, pr.MlpProjB));
        PhaseClock.Mark("rounding: match + MLP");
        m = MaxOverHeads(pa.X, pa.Y, pr.X.index_select(0, perm), pr.Y.index_select(0, perm), pa.QkNorms, m);
        m = MaxOverHeads(pa.V, pa.O, pr.V.index_select(0, perm), pr.O.index_select(0, perm), pa.VoNorms, m);
        PhaseClock.Mark("rounding: heads");
        return m;
    }

    /// <summary>
    /// max(<paramref name="m"/>, the head distances between (xa, ya) and (xb, yb) as <see cref="CompositeDistances"/>
    /// computes them), computing the exact value only for heads whose upper bound reaches the running maximum.
    /// </summary>
    private static double MaxOverHeads(Tensor xa, Tensor ya, Tensor xb, Tensor yb, double[] na, double m)
    {
        using var scope = NewDisposeScope();
        int h = (int)xa.shape[0];
        var bound = DifferenceBounds(xa, ya, xb, yb);
        PhaseClock.Mark("rounding: bounds");
        var done = new bool[h];
        while (true)
        {
            // The head with the largest bound whose distance could still exceed m (a zero norm: no bound).
            int best = -1;
            double bestBound = double.NegativeInfinity;
            for (int i = 0; i < h; i++)
            {
                if (done[i]) continue;
                double q = na[i] > 0 ? bound[i] / na[i] : double.PositiveInfinity;
                if (!(q < m) && q > bestBound) { best = i; bestBound = q; }
            }
            if (best < 0) return m;
            done[best] = true;
            double diff = PaddedNorm(cat([xa[best], -xb[best]], 1), cat([ya[best], yb[best]], 1), best, h);
            if (diff == 0) continue;
            double nb = PaddedNorm(xb[best], yb[best], best, h);
            m = Math.Max(m, diff / Math.Max(na[best], nb));
            PhaseClock.Mark("rounding: exact head");
        }
    }

    /// <summary>
    /// ‖x yᵀ‖_F as <see cref="CompositeNorms"/> computes it for batch position <paramref name="position"/> of an
    /// [<paramref name="batch"/>, ·, ·] batch: the same R factors (QR of one matrix gives the bits of its place in a
    /// batch) in a batch of the same shape (zeros elsewhere), so that the product and its reduction run as there.
    /// </summary>
    private static double PaddedNorm(Tensor x, Tensor y, int position, int batch)
    {
        using var scope = NewDisposeScope();
        var r1 = linalg.qr(x.unsqueeze(0), linalg.QRMode.R).R;
        var r2 = linalg.qr(y.unsqueeze(0), linalg.QRMode.R).R;
        var b1 = zeros(batch, r1.shape[1], r1.shape[2], ScalarType.Float64);
        var b2 = zeros(batch, r2.shape[1], r2.shape[2], ScalarType.Float64);
        b1[position].copy_(r1[0]);
        b2[position].copy_(r2[0]);
        return matmul(b1, b2.transpose(1, 2)).square().sum([1, 2]).sqrt()[position].item<double>();
    }

    /// <summary>
    /// Per head an upper bound on ‖X_A Y_Aᵀ − X_B Y_Bᵀ‖_F as <see cref="CompositeDistances"/> computes it (QR route),
    /// from k×k Grams (batched GEMMs, a fraction of the QRs' cost). With ΔX = X_B − X_A and ΔY = Y_B − Y_A,
    /// X_A Y_Aᵀ − X_B Y_Bᵀ = −(X_A ΔYᵀ + ΔX Y_Bᵀ), whose squared norm is
    /// ⟨X_AᵀX_A, ΔYᵀΔY⟩ + ⟨ΔXᵀΔX, Y_BᵀY_B⟩ + 2 tr(X_AᵀΔX · Y_BᵀΔY): no cancellation of large terms when ΔX and ΔY
    /// are small (a rounding). Bounded with generous constants: the Grams' error c·u·(‖X_A‖‖ΔY‖ + ‖ΔX‖‖Y_B‖)² with
    /// c = 8(m + k²), and the QR route's own error m·2k·u·‖[X_A, X_B]‖‖[Y_A, Y_B]‖ (m rows, k columns).
    /// </summary>
    private static double[] DifferenceBounds(Tensor xa, Tensor ya, Tensor xb, Tensor yb)
    {
        using var scope = NewDisposeScope();
        double m = xa.shape[1], k = xa.shape[2];
        const double u = 1.1102230246251565e-16;   // 2⁻⁵³
        var dx = xb - xa;
        var dy = yb - ya;
        Tensor Gram(Tensor p, Tensor q) => matmul(p.transpose(1, 2), q);
        var e2 = (Gram(xa, xa) * Gram(dy, dy)).sum([1, 2]) + (Gram(dx, dx) * Gram(yb, yb)).sum([1, 2])
                 + 2 * (Gram(xa, dx) * Gram(yb, dy).transpose(1, 2)).sum([1, 2]);
        Tensor F(Tensor t) => t.square().sum([1, 2]).sqrt();
        var spread = F(xa) * F(dy) + F(dx) * F(yb);
        var gramError = 8 * (m + k * k) * u * spread.square();
        var qrError = 64 * u * (F(xa) + F(xb)) * (F(ya) + F(yb));
        var bound = (e2.clamp_min(0) + gramError).sqrt() * (1 + 1e-6) + qrError;
        return CanonicalMath.ToArray(bound);
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
    public static double[] CompositeDistances(Tensor xa, Tensor ya, Tensor xb, Tensor yb) =>
        Distances(DifferenceNorms(xa, ya, xb, yb), CompositeNorms(xa, ya), CompositeNorms(xb, yb));

    /// <summary>Per head ‖X_A Y_Aᵀ − X_B Y_Bᵀ‖_F = ‖R₁R₂ᵀ‖_F with R₁, R₂ from QRs of [X_A, −X_B] and [Y_A, Y_B].</summary>
    private static double[] DifferenceNorms(Tensor xa, Tensor ya, Tensor xb, Tensor yb)
    {
        using var scope = NewDisposeScope();
        return CompositeNorms(cat([xa, -xb], 2), cat([ya, yb], 2));
    }

    /// <summary>
    /// Per head ‖x yᵀ‖_F = ‖R₁R₂ᵀ‖_F from the R factors of x and y (Householder QR; only R is formed: the same R as
    /// with Q, in 58 % of the time on gpt2-xl's [25, 1601, 128] factor pairs).
    /// </summary>
    private static double[] CompositeNorms(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        var r1 = linalg.qr(x, linalg.QRMode.R).R;
        var r2 = linalg.qr(y, linalg.QRMode.R).R;
        return CanonicalMath.ToArray(matmul(r1, r2.transpose(1, 2)).square().sum([1, 2]).sqrt());
    }

    /// <summary>The MLP distance of unit vectors [F, d + 1 + d] (c_fc column, bias, c_proj row; <see cref="PreparedLayer.Units"/>).</summary>
    private static double MlpDistance(Tensor ua, Tensor ub)
    {
        using var scope = NewDisposeScope();
        int f = (int)ua.shape[0];
        var order = Enumerable.Range(0, f).ToArray();
        bool swapped = false;
        // Units whose sort keys are closer than the inputs' rounding (e.g. two c_fc column norms 1e-7 apart in an F32
        // export, far above the 1e-8 tie tolerance) can be ordered differently in A and B: a permutation is a gauge,
        // so take B's swap of any adjacent pair that matches A better. Repeated passes undo short chains too.
        for (int pass = 0; pass < 4 && f > 1; pass++)
        {
            using var passScope = NewDisposeScope();
            // Before any swap B's order is the identity: no gathered copy (164 MB on gpt2-xl; the same values).
            var ubo = swapped ? ub.index_select(0, tensor(order.Select(i => (long)i).ToArray(), ScalarType.Int64)) : ub;
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
            swapped = true;
        }
        var ubm = swapped ? ub.index_select(0, tensor(order.Select(i => (long)i).ToArray(), ScalarType.Int64)) : ub;
        return Rel(ua, ubm);
    }
}
