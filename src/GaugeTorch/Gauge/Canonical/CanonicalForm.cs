using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge.Canonical;

/// <summary>
/// The canonical form of GAUGE.md §5 (<c>--form full</c>): a representative of the orbit of the whole gauge
/// catalog, computed layer by layer in float64. The result is a standard GPT-2 checkpoint with LayerNorm weights
/// 1 and biases 0 (ln_1, ln_2), b_K = 0 and b_V = 0, centred readers and writers, balanced per-head QK factors
/// (both Gram matrices equal diag(S_QK)), per-head VO factors U·S^{1/2}, S^{1/2}·Vᵀ, a fixed sign per singular
/// pair, and heads and MLP units in a canonical order.
/// </summary>
public static class CanonicalForm
{
    /// <summary>Relative gap below which singular values are reported as near-degenerate and heads/units as near-tied.</summary>
    public const double GapTolerance = 1e-8;

    /// <summary>Singular values at or below this × the head's largest are set to 0 (with zero factors).</summary>
    public const double RankTolerance = 1e-11;

    /// <summary>Canonicalizes one layer (any dtype in; float64 out; the input is not modified). See <see cref="LayerCanonicalizer"/>.</summary>
    public static LayerWeights CanonicalizeLayer(LayerWeights input, Gpt2Config c, LayerReport report)
    {
        using var k = new LayerCanonicalizer(c);
        k.Run(input, report);
        return k.Output.Clone();
    }

    /// <summary>
    /// The global step (family 10): wte ← wte − 1·mean_v(wte) with that mean added to every wpe row, then every wpe
    /// row centred. ln_f is kept. For an untied head (not in the tied catalog, see docs/canonical-form.md) also:
    /// ln_f's gain folded into lm_head where it is non-zero, lm_head ← lm_head − 1·mean_v(lm_head), and every wte
    /// row centred (wte is then read only through LayerNorms).
    /// </summary>
    public static GlobalWeights CanonicalizeGlobals(GlobalWeights input, CanonicalReport? report = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var wte = input.Wte.to_type(ScalarType.Float64);
        var wpe = input.Wpe.to_type(ScalarType.Float64);
        var lnW = input.LnFW.to_type(ScalarType.Float64);
        var lnB = input.LnFB.to_type(ScalarType.Float64);
        var mean = wte.mean([0], keepdim: true);
        wte = wte - mean;
        wpe = wpe + mean;
        wpe = wpe - wpe.mean([1], keepdim: true);
        Tensor? head = null;
        if (input.LmHead is not null)
        {
            head = input.LmHead.to_type(ScalarType.Float64);
            var nz = lnW != 0;
            var s = where(nz, lnW, ones_like(lnW));         // fold γ_f where non-zero: logits_v = (n∘γ+β)·h_v
            head = head * s.unsqueeze(0);
            lnB = lnB / s;
            lnW = where(nz, ones_like(lnW), lnW);
            head = head - head.mean([0], keepdim: true);
            wte = wte - wte.mean([1], keepdim: true);
            long zerosCount = (~nz).sum().item<long>();
            if (zerosCount > 0) report?.GlobalNotes.Add($"ln_f.weight has {zerosCount} zero entries (left unfolded)");
        }
        var g = new GlobalWeights { Wte = wte.contiguous(), Wpe = wpe.contiguous(), LnFW = lnW.contiguous(), LnFB = lnB.contiguous(), LmHead = head?.contiguous() };
        return g.MoveToOuterDisposeScope();
    }

    /// <summary>Canonicalizes a whole model held in memory (float64 out).</summary>
    public static (List<LayerWeights> Layers, GlobalWeights Globals, CanonicalReport Report) Canonicalize(
        IReadOnlyList<LayerWeights> layers, GlobalWeights globals, Gpt2Config c, CanonicalFormKind form = CanonicalFormKind.Full)
    {
        var report = new CanonicalReport { Form = form };
        var outLayers = new List<LayerWeights>();
        for (int l = 0; l < layers.Count; l++)
        {
            var lr = new LayerReport { Layer = l };
            outLayers.Add(Layer(form, layers[l], c, lr));
            report.Layers.Add(lr);
        }
        var g = form == CanonicalFormKind.Full ? CanonicalizeGlobals(globals, report) : PaperForm.CanonicalizeGlobals(globals);
        return (outLayers, g, report);
    }

    /// <summary>Canonicalizes one layer in the given form.</summary>
    public static LayerWeights Layer(CanonicalFormKind form, LayerWeights w, Gpt2Config c, LayerReport report) =>
        form == CanonicalFormKind.Full ? CanonicalizeLayer(w, c, report) : PaperForm.CanonicalizeLayer(w, c, report);

    /// <summary>Canonicalizes the globals in the given form.</summary>
    public static GlobalWeights Globals(CanonicalFormKind form, GlobalWeights g, CanonicalReport? report = null) =>
        form == CanonicalFormKind.Full ? CanonicalizeGlobals(g, report) : PaperForm.CanonicalizeGlobals(g);

    // ---- helpers shared with PaperForm ----

    internal static LayerWeights Float64(LayerWeights w) => LayerWeights.FromFunc(s => w.Named().First(p => p.Suffix == s).Tensor.to_type(ScalarType.Float64));

    /// <summary>[rows, h·dk] → [h, rows, dk]: head i's block of columns.</summary>
    internal static Tensor HeadsOfColumns(Tensor m, long h, long dk) => m.view(m.shape[0], h, dk).permute(1, 0, 2).contiguous();

    /// <summary>[h, rows, dk] → [rows, h·dk].</summary>
    internal static Tensor ColumnsOfHeads(Tensor t) => t.permute(1, 0, 2).reshape(t.shape[1], t.shape[0] * t.shape[2]);

    /// <summary>Sorts heads by descending (Σ S_QK, Σ S_VO, S_QK…, S_VO…); fills the report's fingerprints and counts.</summary>
    internal static int[] SortHeads(Tensor sq, Tensor sv, Func<Tensor[]> headData, LayerReport report)
    {
        int h = (int)sq.shape[0], r = (int)sq.shape[1];
        var sqa = CanonicalMath.ToArray(sq);
        var sva = CanonicalMath.ToArray(sv);
        var (qn, qz, qnotes) = CanonicalMath.Degeneracies(sqa, h, r, GapTolerance, $"layer {report.Layer} QK head");
        var (vn, vz, vnotes) = CanonicalMath.Degeneracies(sva, h, r, GapTolerance, $"layer {report.Layer} VO head");
        report.QkNearDegenerate += qn;
        report.QkZeroed += qz;
        report.VoNearDegenerate += vn;
        report.VoZeroed += vz;
        foreach (var n in qnotes.Concat(vnotes)) report.Note(n);

        var keys = new double[h][];
        for (int i = 0; i < h; i++)
        {
            var q = sqa.AsSpan(i * r, r);
            var v = sva.AsSpan(i * r, r);
            var k = new List<double> { Sum(q), Sum(v) };
            k.AddRange(q.ToArray());
            k.AddRange(v.ToArray());
            keys[i] = [.. k];
        }
        double[][]? data = null;
        int Fallback(int a, int b)
        {
            if (data is null)
            {
                var tensors = headData();
                data = Enumerable.Range(0, h).Select(i => tensors.SelectMany(t => CanonicalMath.ToArray(t[i])).ToArray()).ToArray();
            }
            return CanonicalMath.DataCompare(data[a], data[b], GapTolerance);
        }
        var (order, tied) = CanonicalMath.TolerantSort(keys, GapTolerance, Fallback);
        report.NearTiedHeads += tied.Count;
        foreach (int p in tied) report.Note($"layer {report.Layer}: heads {order[p]} and {order[p + 1]} (canonical {p}, {p + 1}) have tied fingerprints");
        report.HeadOrder = order;
        report.Heads = order.Select(i => new HeadFingerprint(i, sqa.AsSpan(i * r, r).ToArray(), sva.AsSpan(i * r, r).ToArray())).ToArray();
        return order;
    }

    /// <summary>Sorts MLP units by descending (‖c_fc column‖, c_fc bias, ‖c_proj row‖), ties by their data.</summary>
    internal static int[] SortUnits(Tensor fcW, Tensor fcB, Tensor projW, LayerReport report) =>
        SortUnits(CanonicalMath.ToArray(linalg.vector_norm(fcW, dims: [0])), CanonicalMath.ToArray(fcB),
            CanonicalMath.ToArray(linalg.vector_norm(projW, dims: [1])),
            () => (CanonicalMath.ToArray(fcW.t()), CanonicalMath.ToArray(projW)), (int)fcW.shape[0], (int)projW.shape[1], report);

    /// <summary>
    /// Sorts MLP units by descending (c_fc column norm, c_fc bias, c_proj row norm); units tied on all three are
    /// ordered by their data, <paramref name="tieData"/> giving the c_fc columns [F·dIn] and the c_proj rows [F·dOut]
    /// as they will be written (computed only when needed).
    /// </summary>
    internal static int[] SortUnits(double[] norms, double[] bias, double[] pnorms, Func<(double[] Cols, double[] Rows)> tieData, int dIn, int dOut, LayerReport report)
    {
        int f = norms.Length;
        var keys = new double[f][];
        for (int i = 0; i < f; i++) keys[i] = [norms[i], bias[i], pnorms[i]];
        (double[] Cols, double[] Rows)? data = null;
        int Fallback(int a, int b)
        {
            data ??= tieData();
            var (colData, rowData) = data.Value;
            int c = CanonicalMath.DataCompare(colData.AsSpan(a * dIn, dIn), colData.AsSpan(b * dIn, dIn), GapTolerance);
            return c != 0 ? c : CanonicalMath.DataCompare(rowData.AsSpan(a * dOut, dOut), rowData.AsSpan(b * dOut, dOut), GapTolerance);
        }
        var (order, tied) = CanonicalMath.TolerantSort(keys, GapTolerance, Fallback);
        report.NearTiedUnits += tied.Count;
        foreach (int p in tied.Take(10)) report.Note($"layer {report.Layer}: MLP units {order[p]} and {order[p + 1]} (canonical {p}, {p + 1}) have tied keys");
        report.UnitOrder = order;
        return order;
    }

    private static double Sum(ReadOnlySpan<double> x)
    {
        double s = 0;
        foreach (var v in x) s += v;
        return s;
    }
}

