using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

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

    /// <summary>
    /// Canonicalizes one layer (any dtype in; float64 out; the input is not modified) in the residual frame
    /// <paramref name="frame"/> of step 4b (null: the identity). See <see cref="LayerCanonicalizer"/>.
    /// </summary>
    public static LayerWeights CanonicalizeLayer(LayerWeights input, Gpt2Config c, LayerReport report, ResidualFrame? frame = null, CanonicalPrecision? precision = null)
    {
        using var k = new LayerCanonicalizer(c);
        if (frame is not null) k.Frame = frame;
        if (precision is not null) k.Precision = precision;
        k.Run(input, report);
        return k.Output.Clone();
    }

    /// <summary>
    /// The global steps: family 10 (wte ← wte − 1·mean_v(wte) with that mean added to every wpe row, then every
    /// wpe row centred) and step 4b, which fixes the residual frame (returned for the layers). See <see cref="CanonicalGlobals"/>.
    /// </summary>
    public static (GlobalWeights Globals, ResidualFrame Frame) CanonicalizeGlobals(GlobalWeights input, CanonicalReport? report = null, bool untied = false, CanonicalPrecision? precision = null) =>
        CanonicalGlobals.Canonicalize(input, untied, precision ?? report?.Precision ?? CanonicalPrecision.Float64, report);

    /// <summary>
    /// Canonicalizes a whole model held in memory (float64 out): the globals first (their residual frame moves
    /// every layer), then each layer. <paramref name="untied"/> treats a tied head as lm_head = wte (the untied
    /// form, used when comparing a tied with an untied checkpoint).
    /// </summary>
    public static (List<LayerWeights> Layers, GlobalWeights Globals, CanonicalReport Report) Canonicalize(
        IReadOnlyList<LayerWeights> layers, GlobalWeights globals, Gpt2Config c, CanonicalFormKind form = CanonicalFormKind.Full,
        CanonicalPrecision? precision = null, bool untied = false)
    {
        var p = precision ?? CanonicalPrecision.Float64;
        var report = new CanonicalReport { Form = form, Precision = p };
        var outLayers = new List<LayerWeights>();
        if (form == CanonicalFormKind.Paper)
        {
            for (int l = 0; l < layers.Count; l++)
            {
                var lr = new LayerReport { Layer = l };
                outLayers.Add(PaperForm.CanonicalizeLayer(layers[l], c, lr, p));
                report.Layers.Add(lr);
            }
            return (outLayers, PaperForm.CanonicalizeGlobals(globals), report);
        }
        var (g, frame) = CanonicalizeGlobals(globals, report, untied, p);
        using (frame)
        using (var k = new LayerCanonicalizer(c) { Frame = frame, Precision = p })
        {
            for (int l = 0; l < layers.Count; l++)
            {
                var lr = new LayerReport { Layer = l };
                k.Run(layers[l], lr);
                outLayers.Add(k.Output.Clone());
                report.Layers.Add(lr);
            }
        }
        return (outLayers, g, report);
    }

    // ---- helpers shared with PaperForm ----

    internal static LayerWeights Float64(LayerWeights w) => LayerWeights.FromFunc(s => w.Named().First(p => p.Suffix == s).Tensor.to_type(ScalarType.Float64));

    /// <summary>[rows, h·dk] → [h, rows, dk]: head i's block of columns.</summary>
    internal static Tensor HeadsOfColumns(Tensor m, long h, long dk) => m.view(m.shape[0], h, dk).permute(1, 0, 2).contiguous();

    /// <summary>[h, rows, dk] → [rows, h·dk].</summary>
    internal static Tensor ColumnsOfHeads(Tensor t) => t.permute(1, 0, 2).reshape(t.shape[1], t.shape[0] * t.shape[2]);

    /// <summary>Sorts heads by descending (Σ S_QK, Σ S_VO, S_QK…, S_VO…); fills the report's fingerprints and counts.</summary>
    internal static int[] SortHeads(Tensor sq, Tensor sv, Func<Tensor[]> headData, LayerReport report, CanonicalPrecision p)
    {
        double tol = p.Tie;   // near-degeneracy reports at the storage precision
        int h = (int)sq.shape[0], r = (int)sq.shape[1];
        var sqa = CanonicalMath.ToArray(sq);
        var sva = CanonicalMath.ToArray(sv);
        var (qn, qz, qnotes) = CanonicalMath.Degeneracies(sqa, h, r, tol, $"layer {report.Layer} QK head");
        var (vn, vz, vnotes) = CanonicalMath.Degeneracies(sva, h, r, tol, $"layer {report.Layer} VO head");
        report.QkNearDegenerate += qn;
        report.QkZeroed += qz;
        report.VoNearDegenerate += vn;
        report.VoZeroed += vz;
        foreach (var n in qnotes.Concat(vnotes)) report.Note(n);

        var keys = HeadKeys(sqa, sva, h, r);
        double[][]? data = null;
        double[][] Data() => data ??= HeadDataArrays(headData, h);
        int Fallback(int a, int b) => CanonicalMath.DataCompare(Data()[a], Data()[b], p.Sort);
        var (order, _) = CanonicalMath.TolerantSort(keys, p.Sort, Fallback);
        // Near-ties at the storage precision: decisions whose margin rounding alone could reverse.
        var scale = CanonicalMath.KeyScales(keys);
        for (int pos = 0; pos + 1 < h; pos++)
        {
            int a = order[pos], b = order[pos + 1];
            double? margin = CanonicalMath.DecisionMargin(keys[a], keys[b], scale, p.Sort, () => CanonicalMath.DataMargin(Data()[a], Data()[b], p.Sort));
            if (margin is double mg && mg > p.Tie) continue;
            report.NearTiedHeads++;
            if (margin is null) report.UnbrokenTies++;
            report.Note($"layer {report.Layer}: heads {a} and {b} (canonical {pos}, {pos + 1}) have {(margin is null ? "tied fingerprints and data: unbroken" : $"fingerprints within {p.Tie:G2} (margin {margin:G2})")}");
        }
        report.HeadOrder = order;
        report.Heads = order.Select(i => new HeadFingerprint(i, sqa.AsSpan(i * r, r).ToArray(), sva.AsSpan(i * r, r).ToArray())).ToArray();
        return order;
    }

    /// <summary>Head sort keys: (Σ S_QK, Σ S_VO, S_QK…, S_VO…) per head, from singular values [h·r] each.</summary>
    private static double[][] HeadKeys(double[] sqa, double[] sva, int h, int r)
    {
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
        return keys;
    }

    private static double[][] HeadDataArrays(Func<Tensor[]> headData, int h)
    {
        var tensors = headData();
        return Enumerable.Range(0, h).Select(i => tensors.SelectMany(t => CanonicalMath.ToArray(t[i])).ToArray()).ToArray();
    }

    /// <summary>
    /// True when the heads as stored (position = index) are in an order the form could have produced from values
    /// within storage rounding of them (<see cref="CanonicalMath.FirstInadmissible"/>); <paramref name="headData"/> gives the stored factors.
    /// </summary>
    internal static bool HeadsAdmissible(Tensor sq, Tensor sv, Func<Tensor[]> headData, CanonicalPrecision p)
    {
        int h = (int)sq.shape[0], r = (int)sq.shape[1];
        var keys = HeadKeys(CanonicalMath.ToArray(sq), CanonicalMath.ToArray(sv), h, r);
        // Rounding moves every singular value of a head by at most ~2u·Σ S (Weyl, with ‖W̃_Q‖_F‖W_K‖_F = Σ S_QK).
        var scale = CanonicalMath.KeyScales(keys);
        var noise = new double[keys[0].Length];
        for (int k = 0; k < noise.Length; k++)
        {
            double sum = k == 0 || (k >= 2 && k < 2 + r) ? scale[0] : scale[1];
            noise[k] = scale[k] == 0 ? 0 : p.Noise * sum / scale[k];
        }
        double[][]? data = null;
        return CanonicalMath.FirstInadmissible(keys, noise, p, (a, b) =>
        {
            data ??= HeadDataArrays(headData, h);
            return CanonicalMath.RelativeDiffs(data[a], data[b]);
        }) < 0;
    }

    /// <summary>Sorts MLP units by descending (‖c_fc column‖, c_fc bias, ‖c_proj row‖), ties by their data.</summary>
    internal static int[] SortUnits(Tensor fcW, Tensor fcB, Tensor projW, LayerReport report, CanonicalPrecision p) =>
        SortUnits(CanonicalMath.ToArray(linalg.vector_norm(fcW, dims: [0])), CanonicalMath.ToArray(fcB),
            CanonicalMath.ToArray(linalg.vector_norm(projW, dims: [1])),
            () => (CanonicalMath.ToArray(fcW.t()), CanonicalMath.ToArray(projW)), (int)fcW.shape[0], (int)projW.shape[1], report, p);

    /// <summary>
    /// True when the MLP units as stored are in an order the form could have produced within storage rounding (keys
    /// and tie data as in <see cref="SortUnits(double[], double[], double[], Func{ValueTuple{double[], double[]}}, int, int, LayerReport, CanonicalPrecision)"/>).
    /// </summary>
    internal static bool UnitsAdmissible(double[] norms, double[] bias, double[] pnorms, Func<(double[] Cols, double[] Rows)> tieData, int dIn, int dOut, CanonicalPrecision p)
    {
        int f = norms.Length;
        var keys = new double[f][];
        for (int i = 0; i < f; i++) keys[i] = [norms[i], bias[i], pnorms[i]];
        return CanonicalMath.FirstInadmissible(keys, [p.Noise, p.Noise, p.Noise], p, (a, b) =>
        {
            var (cols, rows) = tieData();
            return [.. CanonicalMath.RelativeDiffs(cols.AsSpan(a * dIn, dIn), cols.AsSpan(b * dIn, dIn)),
                    .. CanonicalMath.RelativeDiffs(rows.AsSpan(a * dOut, dOut), rows.AsSpan(b * dOut, dOut))];
        }) < 0;
    }

    /// <summary>
    /// Sorts MLP units by descending (c_fc column norm, c_fc bias, c_proj row norm); units tied on all three are
    /// ordered by their data, <paramref name="tieData"/> giving the c_fc columns [F·dIn] and the c_proj rows [F·dOut]
    /// as they will be written (computed only when needed).
    /// </summary>
    internal static int[] SortUnits(double[] norms, double[] bias, double[] pnorms, Func<(double[] Cols, double[] Rows)> tieData, int dIn, int dOut, LayerReport report, CanonicalPrecision p)
    {
        int f = norms.Length;
        var keys = new double[f][];
        for (int i = 0; i < f; i++) keys[i] = [norms[i], bias[i], pnorms[i]];
        (double[] Cols, double[] Rows)? data = null;
        (double[] Cols, double[] Rows) Data() => data ??= tieData();
        int Fallback(int a, int b)
        {
            var (colData, rowData) = Data();
            int c = CanonicalMath.DataCompare(colData.AsSpan(a * dIn, dIn), colData.AsSpan(b * dIn, dIn), p.Sort);
            return c != 0 ? c : CanonicalMath.DataCompare(rowData.AsSpan(a * dOut, dOut), rowData.AsSpan(b * dOut, dOut), p.Sort);
        }
        double? DataMargin(int a, int b)
        {
            var (colData, rowData) = Data();
            return CanonicalMath.DataMargin(colData.AsSpan(a * dIn, dIn), colData.AsSpan(b * dIn, dIn), p.Sort)
                   ?? CanonicalMath.DataMargin(rowData.AsSpan(a * dOut, dOut), rowData.AsSpan(b * dOut, dOut), p.Sort);
        }
        var (order, _) = CanonicalMath.TolerantSort(keys, p.Sort, Fallback);
        // Near-ties at the storage precision: adjacent units whose deciding key (or data entry) differs by less than
        // rounding to the storage dtype can move, so that rounding alone could swap them (issue 11: gpt2's layer 11
        // units 575 and 576 swapped with "near_tied_units: 0" reported).
        var scale = CanonicalMath.KeyScales(keys);
        for (int pos = 0; pos + 1 < f; pos++)
        {
            int a = order[pos], b = order[pos + 1];
            double? margin = CanonicalMath.DecisionMargin(keys[a], keys[b], scale, p.Sort, () => DataMargin(a, b));
            if (margin is double mg && mg > p.Tie) continue;
            report.NearTiedUnits++;
            if (margin is null) report.UnbrokenTies++;
            if (report.NearTiedUnits <= 10 || margin is null)
                report.Note($"layer {report.Layer}: MLP units {a} and {b} (canonical {pos}, {pos + 1}) {(margin is null ? "are equal on keys and data: unbroken" : $"are ordered by a margin of {margin:G2} ≤ {p.Tie:G2}, within {p.Storage} rounding")}");
        }
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

