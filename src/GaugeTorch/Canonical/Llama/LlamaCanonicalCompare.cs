using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Llama;

/// <summary>Options of <see cref="LlamaCanonicalCompare.Compare"/>.</summary>
public sealed record LlamaCompareOptions
{
    /// <summary>Largest distance between the canonical forms still called equivalent; null: derived from the inputs' measured rounding.</summary>
    public double? Tolerance { get; init; }
    /// <summary>Tokens for the function comparison (empty: not compared).</summary>
    public int[] Tokens { get; init; } = [];
    public IProgress<(int Done, int Total)>? Progress { get; init; }
}

/// <summary>Distances of one layer between two canonical forms, per canonical KV group and for the MLP (relative Frobenius).</summary>
public sealed record LlamaLayerComparison(int Layer, double[] QkDistances, double[] VoDistances, double MlpDistance, double BiasDistance, double NormDistance)
{
    public double QkDistance => QkDistances.DefaultIfEmpty(0).Max();
    public double VoDistance => VoDistances.DefaultIfEmpty(0).Max();
    public double Distance => new[] { QkDistance, VoDistance, MlpDistance, BiasDistance, NormDistance }.Max();
}

/// <summary>The result of <see cref="LlamaCanonicalCompare.Compare"/>: distances, tolerances, the verdict (the same rules as GPT-2's compare).</summary>
public sealed class LlamaComparison : ComparisonVerdict
{
    public List<LlamaLayerComparison> Layers { get; } = [];
    public LlamaCanonicalReport ReportA { get; init; } = new();
    public LlamaCanonicalReport ReportB { get; init; } = new();

    protected override double LargestInLayers => Layers.Count == 0 ? 0 : Layers.Max(l => l.Distance);

    public string LargestWhere
    {
        get
        {
            double best = -1;
            string where = "";
            foreach (var l in Layers)
            {
                for (int g = 0; g < l.QkDistances.Length; g++)
                {
                    if (l.QkDistances[g] > best) { best = l.QkDistances[g]; where = $"layer {l.Layer} group {g} QK (A: group {ReportA.Layers[l.Layer].GroupOrder[g]}, B: group {ReportB.Layers[l.Layer].GroupOrder[g]})"; }
                    if (l.VoDistances[g] > best) { best = l.VoDistances[g]; where = $"layer {l.Layer} group {g} VO (A: group {ReportA.Layers[l.Layer].GroupOrder[g]}, B: group {ReportB.Layers[l.Layer].GroupOrder[g]})"; }
                }
                if (l.MlpDistance > best) { best = l.MlpDistance; where = $"layer {l.Layer} MLP"; }
                if (l.BiasDistance > best) { best = l.BiasDistance; where = $"layer {l.Layer} output biases"; }
                if (l.NormDistance > best) { best = l.NormDistance; where = $"layer {l.Layer} norm gains"; }
            }
            foreach (var (k, v) in Globals)
                if (v > best) { best = v; where = k; }
            return where;
        }
    }
}

/// <summary>
/// Decides whether two Llama / Qwen2 / Mistral checkpoints are the same function up to gauge: both are brought to the
/// LLaMA-family canonical form (the untied form when either head is untied) layer by layer in float64 and compared in
/// canonical order: per KV group the QK factors directly and the VO composite in factored form
/// (<see cref="CanonicalCompare.CompositeDistances"/>, independent of the basis inside near-degenerate singular
/// subspaces), the MLP units, biases and gains. The verdict also compares the row-centred logits. Both tolerances
/// follow GPT-2's compare exactly: <see cref="ComparisonVerdict.RoundingSafety"/> × the measured rounding of the two
/// inputs, with the floors <see cref="ComparisonVerdict.Float64WeightFloor"/> and <see cref="ComparisonVerdict.Float64FunctionFloor"/>.
/// </summary>
public static class LlamaCanonicalCompare
{
    public static LlamaComparison Compare(Checkpoint a, Checkpoint b, LlamaCompareOptions o)
    {
        using var _ = no_grad();
        var ta0 = a.Traits;
        var tb0 = b.Traits;
        LlamaCanonicalForm.RequireFamily(ta0, a.Directory);
        LlamaCanonicalForm.RequireFamily(tb0, b.Directory);
        if (ta0 with { Tied = true, Architecture = "" } != tb0 with { Tied = true, Architecture = "" })
            throw new ArgumentException($"{a.Directory} and {b.Directory} have different architectures ({ta0.Describe()} vs {tb0.Describe()}, or different rotary, norm or bias settings): not comparable");
        bool untied = !a.Tied || !b.Tied;
        var t = ta0 with { Tied = !untied };
        var pa = LlamaCanonicalPrecision.For(a.StorageDType, a.StorageDType) with { KeepCanonicalInput = false };
        var pb = LlamaCanonicalPrecision.For(b.StorageDType, b.StorageDType) with { KeepCanonicalInput = false };
        var result = new LlamaComparison { ReportA = new() { Precision = pa }, ReportB = new() { Precision = pb }, HeadForm = untied ? "untied" : "tied" };
        var sa = a.StorageDType.ToScalarType();
        var sb = b.StorageDType.ToScalarType();
        var tokens = o.Tokens.Take(t.MaxPositions).ToArray();
        result.FunctionTokens = tokens.Length;
        var streamA = new LayerStream(a);
        var streamB = new LayerStream(b);

        var ga = ReadGlobals(streamA, untied);
        var gb = ReadGlobals(streamB, untied);
        LlamaFrame? fa = null, fb = null, rfa = null, rfb = null;
        Tensor? xa = null, xb = null, xra = null, xrb = null;
        try
        {
            FiniteWeights.RequireGlobals(a, ga);
            FiniteWeights.RequireGlobals(b, gb);
            double roundA, roundB;
            using (var scope = NewDisposeScope())
            {
                var (ca, fra) = LlamaCanonicalForm.Globals(ga, t, pa, result.ReportA.Frame);
                var (cb, frb) = LlamaCanonicalForm.Globals(gb, t, pb, result.ReportB.Frame);
                fa = fra;
                fb = frb;
                result.Globals["embed"] = LlamaCanonicalForm.Rel(ca.Embed, cb.Embed);
                result.Globals["final_norm"] = LlamaCanonicalForm.Rel(ca.FinalNorm.Gain, cb.FinalNorm.Gain);
                if (untied) result.Globals["head"] = LlamaCanonicalForm.Rel(ca.Head!, cb.Head!);
                (roundA, rfa) = GlobalRounding(ca, t, sa, pa);
                (roundB, rfb) = GlobalRounding(cb, t, sb, pb);
            }
            double ua = LlamaCanonicalPrecision.UnitRoundoff(a.StorageDType), ub = LlamaCanonicalPrecision.UnitRoundoff(b.StorageDType);
            (Tensor Cos, Tensor Sin)? rope = null;
            if (tokens.Length > 0)
            {
                using var scope = NewDisposeScope();
                var tok = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
                xa = ga.Embed.index_select(0, tok).to_type(ScalarType.Float64).DetachFromDisposeScope();
                xb = gb.Embed.index_select(0, tok).to_type(ScalarType.Float64).DetachFromDisposeScope();
                xra = PerturbedRows(ga.Embed, tokens, ua, 1000).DetachFromDisposeScope();
                xrb = PerturbedRows(gb.Embed, tokens, ub, 2000).DetachFromDisposeScope();
                var r = Forward.RopeTables(t, 0, tokens.Length)!.Value;
                rope = (r.Cos.DetachFromDisposeScope(), r.Sin.DetachFromDisposeScope());
            }
            try
            {
                for (int l = 0; l < t.Layers; l++)
                {
                    using var scope = NewDisposeScope();
                    var la = streamA.Read(l, ScalarType.Float64);
                    var lb = streamB.Read(l, ScalarType.Float64);
                    FiniteWeights.RequireLayer(a, l, la);
                    FiniteWeights.RequireLayer(b, l, lb);
                    var ra = new LlamaLayerReport { Layer = l };
                    var rb = new LlamaLayerReport { Layer = l };
                    var ka = LlamaCanonicalForm.Layer(la, t, fa!, pa, ra);
                    var kb = LlamaCanonicalForm.Layer(lb, t, fb!, pb, rb);
                    result.ReportA.Layers.Add(ra);
                    result.ReportB.Layers.Add(rb);
                    result.Layers.Add(CompareLayers(l, ka, kb, t));
                    roundA = Math.Max(roundA, LayerRounding(l, ka, t, sa, rfa!, pa));
                    roundB = Math.Max(roundB, LayerRounding(l, kb, t, sb, rfb!, pb));
                    if (xa is not null)
                    {
                        Step(ref xa, la, t, rope);
                        Step(ref xb!, lb, t, rope);
                        using (var pla = Perturbed(la, ua, 1000 + 64 * (l + 1))) Step(ref xra!, pla, t, rope);
                        using (var plb = Perturbed(lb, ub, 2000 + 64 * (l + 1))) Step(ref xrb!, plb, t, rope);
                    }
                    streamA.Release(l);
                    streamB.Release(l);
                    o.Progress?.Report((l + 1, t.Layers + 1));
                }
            }
            finally
            {
                if (rope is { } r) { r.Cos.Dispose(); r.Sin.Dispose(); }
            }
            result.SetWeightTolerance(o.Tolerance, roundA, a.StorageDType, roundB, b.StorageDType);
            if (xa is not null)
            {
                using var scope = NewDisposeScope();
                var ya = Forward.RowCentre(LlamaCanonicalCheckpoint.Logits(xa, ga.FinalNorm, ga.HeadOrEmbed, t));
                var yb = Forward.RowCentre(LlamaCanonicalCheckpoint.Logits(xb!, gb.FinalNorm, gb.HeadOrEmbed, t));
                var yra = Forward.RowCentre(PerturbedLogits(xra!, ga, t, ua, 1000));
                var yrb = Forward.RowCentre(PerturbedLogits(xrb!, gb, t, ub, 2000));
                double eps = Math.Pow(2, -52);
                double na = ya.norm().item<double>(), nb = yb.norm().item<double>();
                double fra = (yra - ya).norm().item<double>() / (na + eps);
                double frb = (yrb - yb).norm().item<double>() / (nb + eps);
                result.SetFunction((ya - yb).norm().item<double>() / (na + eps), fra, frb);
            }
        }
        finally
        {
            ga.Dispose(); gb.Dispose();
            fa?.Dispose(); fb?.Dispose(); rfa?.Dispose(); rfb?.Dispose();
            xa?.Dispose(); xb?.Dispose(); xra?.Dispose(); xrb?.Dispose();
        }
        o.Progress?.Report((t.Layers + 1, t.Layers + 1));
        return result;
    }

    /// <summary>The built-in text as token ids through GPT-2's BPE, folded into the vocabulary (id mod V), at most the model's positions.</summary>
    public static int[] BuiltInTokens(ModelTraits t) =>
        GaugeTorch.Architectures.Gpt2.Gpt2Tokenizer.Encode(GaugeTorch.Architectures.Gpt2.Gpt2Tokenizer.BuiltInText).Take(t.MaxPositions).Select(i => i % t.Vocab).ToArray();

    /// <summary>The globals as stored: a tied embedding compactly (float32, exact for F32/F16/BF16), else float64; a tied input brought to the untied form gets its embedding as head.</summary>
    private static GlobalView ReadGlobals(LayerStream s, bool untied)
    {
        var ck = s.Checkpoint;
        var arch = ck.Architecture;
        var embType = untied || ck.StorageDType == DType.F64 ? ScalarType.Float64 : ScalarType.Float32;
        using var scope = NewDisposeScope();
        var g = arch.GlobalsToView(n => s.ReadTensor(n, n == arch.EmbeddingName ? embType : ScalarType.Float64), ck.Tied);
        if (untied && g.Head is null) g.Head = g.Embed.clone();
        return g.MoveToOuterDisposeScope();
    }

    /// <summary>How far one rounding to <paramref name="storage"/> moves canonical globals (recanonicalized), and the frame that recanonicalization finds.</summary>
    private static (double, LlamaFrame) GlobalRounding(GlobalView canon, ModelTraits t, ScalarType storage, LlamaCanonicalPrecision p)
    {
        using var scope = NewDisposeScope();
        var rounded = canon.Map(x => x.to_type(storage).to_type(x.dtype));
        var (again, frame) = LlamaCanonicalForm.Globals(rounded, t, p, new LlamaFrameReport());
        double r = canon.Named().Zip(again.Named()).Max(x => LlamaCanonicalForm.Rel(x.First.Tensor, x.Second.Tensor));
        return (r, frame);
    }

    /// <summary>How far one rounding to <paramref name="storage"/> moves a canonical layer (recanonicalized in the rounded globals' frame), in compare's measures.</summary>
    private static double LayerRounding(int layer, LayerView canon, ModelTraits t, ScalarType storage, LlamaFrame frame, LlamaCanonicalPrecision p)
    {
        using var scope = NewDisposeScope();
        var rounded = canon.Map(x => x.to_type(storage).to_type(ScalarType.Float64));
        var again = LlamaCanonicalForm.Layer(rounded, t, frame, p, new LlamaLayerReport { Layer = layer });
        return CompareLayers(layer, canon, again, t).Distance;
    }

    /// <summary>Compares two canonical layers in canonical order.</summary>
    public static LlamaLayerComparison CompareLayers(int layer, LayerView x, LayerView y, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        int ng = t.KvHeads, k = t.GroupSize, hd = t.HeadDim;
        long d = t.Hidden;
        Tensor WithBias(Tensor w, Tensor? b) => b is null ? w : cat([w, b.unsqueeze(1)], 1);
        Tensor Qk(LayerView v, int g) => cat([WithBias(v.Q, v.QBias).narrow(0, g * k, k).flatten(), WithBias(v.K, v.KBias)[g].flatten()]);
        var qk = Enumerable.Range(0, ng).Select(g => LlamaCanonicalForm.Rel(Qk(x, g), Qk(y, g))).ToArray();
        Tensor Vt(LayerView v) => WithBias(v.V, v.VBias);
        Tensor Os(LayerView v) => v.O.transpose(1, 2).reshape(ng, k * d, hd);
        var vo = CanonicalCompare.CompositeDistances(Vt(x), Os(x), Vt(y), Os(y));
        double mlp = MlpDistance(x, y);
        var biases = new[] { (x.OBias, y.OBias), (x.DownBias, y.DownBias) }.Where(p => p.Item1 is not null).Select(p => LlamaCanonicalForm.Rel(p.Item1!, p.Item2!)).DefaultIfEmpty(0).Max();
        double norms = Math.Max(LlamaCanonicalForm.Rel(x.Norm1.Gain, y.Norm1.Gain), LlamaCanonicalForm.Rel(x.Norm2.Gain, y.Norm2.Gain));
        return new LlamaLayerComparison(layer, qk, vo, mlp, biases, norms);
    }

    /// <summary>
    /// The MLP distance: the units as rows [gate row, bias, up row, bias, down column], compared in canonical order,
    /// taking B's swap of any adjacent pair that matches A better (up to four passes). Units whose sort keys differ by
    /// less than the inputs' rounding (an F32 checkpoint of Llama-3.2-1B shape has hundreds of unit pairs within the
    /// F32 tie tolerance per layer) can come out in either order; a permutation is a gauge, so either is legitimate.
    /// </summary>
    private static double MlpDistance(LayerView x, LayerView y)
    {
        using var scope = NewDisposeScope();
        Tensor Units(LayerView v) => cat(new[] { v.Gate!.t(), v.GateBias?.unsqueeze(1), v.Up.t(), v.UpBias?.unsqueeze(1), v.Down }.OfType<Tensor>().ToList(), 1);
        var ua = Units(x);
        var ub = Units(y);
        int f = (int)ua.shape[0];
        var order = Enumerable.Range(0, f).ToArray();
        for (int pass = 0; pass < 4 && f > 1; pass++)
        {
            using var passScope = NewDisposeScope();
            var ubo = ub.index_select(0, tensor(order.Select(i => (long)i).ToArray(), ScalarType.Int64));
            var straight = linalg.vector_norm(ua - ubo, dims: [1]).data<double>().ToArray();
            var down = linalg.vector_norm(ua.narrow(0, 0, f - 1) - ubo.narrow(0, 1, f - 1), dims: [1]).data<double>().ToArray();
            var up = linalg.vector_norm(ua.narrow(0, 1, f - 1) - ubo.narrow(0, 0, f - 1), dims: [1]).data<double>().ToArray();
            bool swapped = false;
            for (int q = 0; q + 1 < f; q++)
            {
                if (down[q] + up[q] >= straight[q] + straight[q + 1]) continue;
                (order[q], order[q + 1]) = (order[q + 1], order[q]);
                swapped = true;
                q++;
            }
            if (!swapped) break;
        }
        return LlamaCanonicalForm.Rel(ua, ub.index_select(0, tensor(order.Select(i => (long)i).ToArray(), ScalarType.Int64)));
    }

    private static void Step(ref Tensor x, LayerView w, ModelTraits t, (Tensor Cos, Tensor Sin)? rope)
    {
        var next = Forward.Block(x, w, t, rope).DetachFromDisposeScope();
        x.Dispose();
        x = next;
    }

    /// <summary>x·(1 + u·r), r uniform in [−1, 1] (seeded): a random relative error of the size of a storage rounding.</summary>
    private static Tensor Perturbed(Tensor x, double u, long seed)
    {
        using var scope = NewDisposeScope();
        var x64 = x.to_type(ScalarType.Float64);
        var r = rand(x.shape, ScalarType.Float64, generator: new Generator((ulong)seed)) * 2 - 1;
        return (x64 + x64 * r * u).MoveToOuterDisposeScope();
    }

    private static LayerView Perturbed(LayerView w, double u, long seed)
    {
        int i = 0;
        return w.Map(x => Perturbed(x, u, seed + i++));
    }

    /// <summary>The embedding rows of <paramref name="tokens"/>, each perturbed by its own seed (a repeated token sees the same row).</summary>
    private static Tensor PerturbedRows(Tensor embed, int[] tokens, double u, long seed)
    {
        using var scope = NewDisposeScope();
        var rows = tokens.Select(id => Perturbed(embed[id], u, seed * 1_000_003 + 17 + id)).ToList();
        return stack(rows, 0).MoveToOuterDisposeScope();
    }

    /// <summary>Logits through the final norm and head, both perturbed; the head in chunks of 8,192 rows.</summary>
    private static Tensor PerturbedLogits(Tensor x, GlobalView g, ModelTraits t, double u, long seed)
    {
        using var scope = NewDisposeScope();
        var n = Forward.RmsNorm(x, Perturbed(g.FinalNorm.Gain, u, seed * 64 + 3), t.NormEps);
        var head = g.HeadOrEmbed;
        long v = head.shape[0];
        const long chunk = 8192;
        var parts = new List<Tensor>();
        for (long s = 0, i = 0; s < v; s += chunk, i++)
        {
            using var part = Perturbed(head.narrow(0, s, Math.Min(chunk, v - s)), u, seed * 64 + 5 + 64 * i);
            parts.Add(matmul(n, part.t()));
        }
        return cat(parts, 1).MoveToOuterDisposeScope();
    }
}
