using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>
/// The full canonical form (GAUGE.md §5) of one block, computed in float64 in buffers that are allocated once and
/// reused for every layer of the same shape, so that streaming gpt2-xl allocates nothing large per layer. The
/// buffers belong to this object (not to any dispose scope).
/// <see cref="Run"/> reads a layer of any dtype (F32 and F64 directly, others after one conversion), and
/// <see cref="Output"/> holds the canonical float64 tensors until the next run.
/// Steps, in order: (1) fold ln_1 / ln_2 into c_attn / c_fc, (2) centre the readers, (3) b_K ← 0 and b_V into
/// b_O, (4) centre the writers, (5–6) balanced QK and VO factors per head from Gram/Cholesky square roots
/// (<see cref="CanonicalMath.BalancingTransforms(Tensor, Tensor, Tensor, Tensor, double)"/>), (7) signs,
/// (8) head and MLP unit order. The elementwise steps are fused into a few passes (<see cref="CanonicalKernels"/>);
/// the factorizations and the products with the r×r transforms run in libtorch.
/// </summary>
public sealed class LayerCanonicalizer : IDisposable
{
    private readonly long _d, _h, _dk, _f;
    private readonly Gpt2Config _config;
    private readonly LayerWeights _in;   // float64 copies of the small tensors (and of big ones in other dtypes)
    private readonly Tensor _heads;      // [3h, d+1, dk]: W̃_Q = [W_Q; b_Q], [W_K; 0], [W_V; 0] per head, folded and centred
    private readonly LayerWeights _out;  // float64 canonical output
    private readonly double[] _attnSum, _attnSq, _attnB, _fcSum, _fcSq, _fcB, _rowMean, _rowSq;
    private readonly Tensor _gamma1, _beta1, _gamma2, _beta2;   // [d]: the LayerNorms as the fused folds apply them (σ·γ, or 1 and 0 after a rotation)

    public LayerCanonicalizer(Gpt2Config c)
    {
        _config = c;
        _d = c.NEmbd; _h = c.NHead; _dk = c.HeadDim; _f = c.NInner;
        _in = Float64Buffers(c, bigOnDemand: true);
        _out = Float64Buffers(c, bigOnDemand: true);
        _heads = zeros(3 * _h, _d + 1, _dk, ScalarType.Float64).DetachFromDisposeScope();
        _attnSum = new double[3 * _d]; _attnSq = new double[3 * _d]; _attnB = new double[3 * _d];
        _fcSum = new double[_f]; _fcSq = new double[_f]; _fcB = new double[_f];
        _rowMean = new double[_f]; _rowSq = new double[_f];
        _gamma1 = zeros(_d, ScalarType.Float64).DetachFromDisposeScope();
        _beta1 = zeros(_d, ScalarType.Float64).DetachFromDisposeScope();
        _gamma2 = zeros(_d, ScalarType.Float64).DetachFromDisposeScope();
        _beta2 = zeros(_d, ScalarType.Float64).DetachFromDisposeScope();
    }

    /// <summary>The residual frame of step 4b for the next runs (from <see cref="CanonicalGlobals"/>; not owned). Default: the identity.</summary>
    public ResidualFrame Frame { get; set; } = ResidualFrame.Identity();

    /// <summary>The precision whose rounding the tie thresholds cover, and whether canonical input is kept.</summary>
    public CanonicalPrecision Precision { get; set; } = CanonicalPrecision.Float64;

    /// <summary>
    /// Zeroed float64 tensors for one block, owned by the caller (not by any dispose scope). With
    /// <paramref name="bigOnDemand"/> the four weight matrices are empty placeholders until <see cref="BigBuffer"/> sizes them.
    /// </summary>
    public static LayerWeights Float64Buffers(Gpt2Config c, bool bigOnDemand = false)
    {
        long d = c.NEmbd, f = c.NInner;
        Tensor Z(params long[] shape) => zeros(bigOnDemand && shape.Length == 2 ? [0] : shape, ScalarType.Float64).DetachFromDisposeScope();
        return new LayerWeights
        {
            Ln1W = Z(d), Ln1B = Z(d), AttnW = Z(d, 3 * d), AttnB = Z(3 * d), AttnProjW = Z(d, d), AttnProjB = Z(d),
            Ln2W = Z(d), Ln2B = Z(d), FcW = Z(d, f), FcB = Z(f), MlpProjW = Z(f, d), MlpProjB = Z(d),
        };
    }

    /// <summary>
    /// A weight matrix of <paramref name="w"/> (c_attn, attn.c_proj, c_fc or mlp.c_proj), allocated on first use:
    /// streaming F32 or F64 checkpoints reads and writes those in place, so they are never needed there.
    /// </summary>
    private Tensor BigBuffer(LayerWeights w, int index)
    {
        var shape = Gpt2Keys.LayerShape(_config, Gpt2Keys.LayerSuffixes[index]);
        Tensor Fresh() => zeros(shape, ScalarType.Float64).DetachFromDisposeScope();
        switch (index)
        {
            case 2: if (w.AttnW.numel() == 0) { w.AttnW.Dispose(); w.AttnW = Fresh(); } return w.AttnW;
            case 4: if (w.AttnProjW.numel() == 0) { w.AttnProjW.Dispose(); w.AttnProjW = Fresh(); } return w.AttnProjW;
            case 8: if (w.FcW.numel() == 0) { w.FcW.Dispose(); w.FcW = Fresh(); } return w.FcW;
            case 10: if (w.MlpProjW.numel() == 0) { w.MlpProjW.Dispose(); w.MlpProjW = Fresh(); } return w.MlpProjW;
            default: throw new ArgumentOutOfRangeException(nameof(index));
        }
    }

    /// <summary>
    /// The canonical float64 tensors of the last <see cref="Run"/> (owned by this object; valid until the next run).
    /// Weight matrices that the run wrote to a target instead are stale (empty if never computed here).
    /// </summary>
    public LayerWeights Output => _out;

    /// <summary>The stored tensors of layer <paramref name="layer"/>, zero-copy inside the checkpoint's memory map.</summary>
    public static RawTensor[] Mapped(Gpt2Checkpoint ck, int layer) =>
        Gpt2Keys.LayerSuffixes.Select(suffix =>
        {
            var e = ck.Store.Entry(ck.Key(Gpt2Keys.Layer(layer, suffix)));
            return new RawTensor(ck.Store.MappedPointer(e), e.DType, e.Shape);
        }).ToArray();

    /// <summary>Drops the process's mappings of layer <paramref name="layer"/>'s pages once it has been read (see <see cref="SafeTensorFile.ReleaseMapped"/>).</summary>
    public static void ReleaseMapped(Gpt2Checkpoint ck, int layer)
    {
        foreach (var suffix in Gpt2Keys.LayerSuffixes) ck.Store.ReleaseMapped(ck.Store.Entry(ck.Key(Gpt2Keys.Layer(layer, suffix))));
    }

    /// <summary>
    /// Canonicalizes layer <paramref name="layer"/> of <paramref name="ck"/>, read in place from its memory map (see
    /// <see cref="Run(IReadOnlyList{RawTensor}, LayerReport, IReadOnlyList{RawTensor?}?)"/>); non-finite weights are
    /// reported with the file and tensor name.
    /// </summary>
    public void Run(Gpt2Checkpoint ck, int layer, LayerReport report, IReadOnlyList<RawTensor?>? targets = null)
    {
        try
        {
            Run(Mapped(ck, layer), report, targets);
        }
        catch (NonFiniteTensorException e)
        {
            throw e.In(ck, layer);
        }
    }

    /// <summary>Canonicalizes <paramref name="w"/> (any dtype; not modified) into <see cref="Output"/> and fills <paramref name="report"/>.</summary>
    public void Run(LayerWeights w, LayerReport report)
    {
        using var scope = NewDisposeScope();
        var contiguous = w.Named().Select(p => p.Tensor.cpu().contiguous()).ToList();
        Run(contiguous.Select(t => new RawTensor(NativeTensorAccess.DataPointer(t), DTypes.FromScalarType(t.dtype), t.shape)).ToArray(), report);
        GC.KeepAlive(contiguous);
    }

    /// <summary>
    /// Canonicalizes one layer given as raw tensors in <see cref="Gpt2Keys.LayerSuffixes"/> order (F64, F32, F16 or
    /// BF16; not modified) and fills <paramref name="report"/>. The canonical tensors go to <see cref="Output"/>
    /// (float64), except the big weights (c_attn, attn.c_proj, c_fc, mlp.c_proj) for which <paramref name="targets"/>
    /// names an F32 or F64 destination: those are written there directly, rounded once, and their
    /// <see cref="Output"/> tensors are left stale.
    /// </summary>
    public unsafe void Run(IReadOnlyList<RawTensor> w, LayerReport report, IReadOnlyList<RawTensor?>? targets = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long d = _d, h = _h, dk = _dk, f = _f;
        var p = Precision;
        var frame = Frame;
        bool permuted = frame.Kind == ResidualFrameKind.Permutation, rotated = frame.Kind == ResidualFrameKind.Rotation;
        int[]? rowDst = permuted ? frame.Inverse : null;      // reader row i → canonical row rowDst[i]
        int[]? colPerm = permuted ? frame.Perm : null;        // writer column j ← original column colPerm[j]
        double sign = permuted ? frame.Sign : 1.0;
        var inputs = _in.Named().ToList();
        if (w.Count != inputs.Count) throw new ArgumentException($"expected {inputs.Count} tensors, got {w.Count}");
        var shapes = Gpt2Keys.LayerSuffixes.Select(sfx => Gpt2Keys.LayerShape(_config, sfx)).ToArray();
        for (int i = 0; i < inputs.Count; i++)
            if (!w[i].Shape.SequenceEqual(shapes[i]))
                throw new ArgumentException($"{inputs[i].Suffix}: shape [{string.Join(", ", w[i].Shape)}], expected [{string.Join(", ", shapes[i])}]");
        // Small tensors (LayerNorms, biases) and W_O are converted to float64; the big readers and c_proj are read
        // in place when they are F32 or F64.
        KernelSource Big(int i)
        {
            var r = w[i];
            if (!rotated && r.DType is DType.F32 or DType.F64) return new(r.Data, r.DType == DType.F64);
            var scratch = BigBuffer(_in, i);
            CanonicalKernels.ToFloat64(r.Data, r.DType, scratch.numel(), Ptr(scratch));
            return new(Ptr(scratch), true);
        }
        KernelTarget Target(int i)
        {
            var t = targets?[i];
            if (t is null) return new(Ptr(BigBuffer(_out, i)), true);
            var r = t.Value;
            if (r.DType is not (DType.F32 or DType.F64) || !r.Shape.SequenceEqual(shapes[i]))
                throw new ArgumentException($"{inputs[i].Suffix}: target must be F32 or F64 [{string.Join(", ", shapes[i])}]");
            return new(r.Data, r.DType == DType.F64);
        }
        const int iAttnW = 2, iProjW = 4, iFcW = 8, iMlpProjW = 10;
        for (int i = 0; i < inputs.Count; i++)
            if (i is not (iAttnW or iFcW or iMlpProjW))
            {
                var dst = i == iProjW ? BigBuffer(_in, i) : inputs[i].Tensor;
                if (i == iProjW && permuted) CanonicalKernels.ToFloat64Columns(w[i].Data, w[i].DType, d, d, colPerm!, sign, Ptr(dst));   // W_O [d, d] → σ·W_O[:, P]
                else CanonicalKernels.ToFloat64(w[i].Data, w[i].DType, dst.numel(), Ptr(dst));
            }
        var attnSrc = Big(iAttnW);
        var fcSrc = Big(iFcW);
        var projSrc = Big(iMlpProjW);
        CheckFiniteSmall();
        // An input already canonical within its storage precision keeps its values (checked as the run goes; every
        // test below is cheap and the first one fails at once on any other input).
        bool keep = p.KeepCanonicalInput && frame.IsIdentity && IsExactly(_in.Ln1W, 1) && IsExactly(_in.Ln1B, 0) && IsExactly(_in.Ln2W, 1)
                    && IsExactly(_in.Ln2B, 0) && IsExactly(_in.AttnB.narrow(0, d, 2 * d), 0);
        PhaseClock.Mark("canon: load");

        // Step 4b (the residual frame; GAUGE.md §5), fused into the passes below: readers take Fᵀ on their rows and
        // writers F on their columns. A permutation and sign ride along in the kernels (row and column maps, σ folded
        // into γ); a rotation is applied here in float64 to the folded readers and to the writers.
        _gamma1.copy_(_in.Ln1W); _beta1.copy_(_in.Ln1B); _gamma2.copy_(_in.Ln2W); _beta2.copy_(_in.Ln2B);
        if (permuted)
        {
            _gamma1.mul_(sign); _gamma2.mul_(sign);
            _in.AttnProjB.copy_(frame.WriterVector(_in.AttnProjB));
            _in.MlpProjB.copy_(frame.WriterVector(_in.MlpProjB));
        }
        Tensor? attnBias = null, fcBias = null;
        if (rotated)
        {
            // b ← b + β·W with the unrotated W, then W ← Rᵀ·diag(γ)·W; the kernels then fold γ = 1, β = 0.
            Tensor RotateReader(int i, Tensor gamma, Tensor beta, out Tensor bias)
            {
                var wt = BigBuffer(_in, i);                    // [d, n], converted by Big()
                bias = matmul(beta, wt);
                using var folded = wt * gamma.unsqueeze(1);
                wt.copy_(frame.Reader(folded));
                return wt;
            }
            RotateReader(iAttnW, _gamma1, _beta1, out attnBias);
            RotateReader(iFcW, _gamma2, _beta2, out fcBias);
            var proj = BigBuffer(_in, iMlpProjW);              // [F, d]
            proj.copy_(frame.Writer(proj));
            _in.AttnProjW.copy_(frame.Writer(_in.AttnProjW));
            _in.AttnProjB.copy_(frame.WriterVector(_in.AttnProjB));
            _in.MlpProjB.copy_(frame.WriterVector(_in.MlpProjB));
            _gamma1.fill_(1.0); _beta1.zero_(); _gamma2.fill_(1.0); _beta2.zero_();
            PhaseClock.Mark("canon: rotate residual");
        }

        // Steps 1–2 for c_attn, fused: W ← diag(γ₁)W written into the heads layout, b ← b + β₁W (unscaled W),
        // column sums; then every column centred (rows 0..d−1 of each head block; the bias row stays).
        CanonicalKernels.FoldColumns(attnSrc, d, 3 * d, Ptr(_gamma1), Ptr(_beta1), Ptr(_heads), dk, (d + 1) * dk, dk, _attnSum, _attnSq, _attnB, rowDst);
        keep = keep && ColumnsCentred(_attnSum, _attnSq, d, p);
        using (var mean = tensor(_attnSum, ScalarType.Float64).div_(d).view(3 * h, 1, dk))
            _heads.narrow(1, 0, d).sub_(mean);
        using (var bAdd = tensor(_attnB, ScalarType.Float64)) _in.AttnB.add_(bAdd);
        if (attnBias is not null) _in.AttnB.add_(attnBias);
        _heads.narrow(0, 0, h).select(1, d).copy_(_in.AttnB.narrow(0, 0, d).view(h, dk));   // b_Q row; b_K ← 0 (step 3)
        // Steps 1–2 for c_fc (centring happens in the gather below; the key uses Σx² − d·mean²).
        CanonicalKernels.FoldColumns(fcSrc, d, f, Ptr(_gamma2), Ptr(_beta2), IntPtr.Zero, f, 0, f, _fcSum, _fcSq, _fcB);
        keep = keep && ColumnsCentred(_fcSum, _fcSq, d, p);
        using (var bAdd = tensor(_fcB, ScalarType.Float64)) _in.FcB.add_(bAdd);
        if (fcBias is not null) _in.FcB.add_(fcBias);
        // Step 3: b_V moved into b_O (with the uncentred W_O). Step 4: centre the writers.
        var bv = _in.AttnB.narrow(0, 2 * d, d);
        _in.AttnProjB.add_(matmul(bv, _in.AttnProjW));
        keep = keep && CanonicalGlobals.Centred(_in.AttnProjW, 1, p) && CanonicalGlobals.Centred(_in.AttnProjB.unsqueeze(0), 1, p)
               && CanonicalGlobals.Centred(_in.MlpProjB.unsqueeze(0), 1, p);
        _in.AttnProjW.sub_(_in.AttnProjW.mean([1], keepdim: true));
        _in.AttnProjB.sub_(_in.AttnProjB.mean());
        _in.MlpProjB.sub_(_in.MlpProjB.mean());
        CanonicalKernels.RowStats(projSrc, f, d, _rowMean, _rowSq);
        CheckFiniteBig();
        keep = keep && RowsCentred(_rowMean, _rowSq, d, p);
        PhaseClock.Mark("canon: fold + centre");

        // Steps 5–6: balanced factors. QK: A = W̃_Q, B = W_K. VO: A = W_V, B = W_Oᵀ.
        var q = _heads.narrow(0, 0, h);                       // [h, d+1, dk]
        var k = _heads.narrow(0, h, h);                       // [h, d+1, dk], last row 0
        var v = _heads.narrow(0, 2 * h, h);                   // [h, d+1, dv], last row 0
        var o = _in.AttnProjW.view(h, dk, d);                 // [h, dv, d]: W_O rows of head i
        var grams = CanonicalMath.Gram(_heads);               // [3h, dk, dk]
        var gramO = matmul(o, o.transpose(1, 2));             // [h, dv, dv]
        PhaseClock.Mark("canon: factors (Gram)");
        keep = keep && Balanced(grams.narrow(0, 0, h), grams.narrow(0, h, h), p) && Balanced(grams.narrow(0, 2 * h, h), gramO, p);
        var (tq, sq, tk, fq) = CanonicalMath.BalancingTransforms(grams.narrow(0, 0, h), q, grams.narrow(0, h, h), k, CanonicalForm.RankTolerance);
        var (tv, sv, to, fv) = CanonicalMath.BalancingTransforms(grams.narrow(0, 2 * h, h), v, gramO, o.transpose(1, 2), CanonicalForm.RankTolerance);
        report.HouseholderFallbacks += fq + fv;
        var qkv = matmul(_heads, cat([tq, tk, tv], 0));       // [3h, d+1, dk]: new W̃_Q, [W_K; 0], [W_V; 0]
        var newO = matmul(to.transpose(1, 2), o);             // [h, dv, d] = (W_Oᵀ T_O)ᵀ
        PhaseClock.Mark("canon: apply");

        // Step 7: signs from the largest entry of each column of the query and value factors (ties: third moment).
        var qkvPtr = Ptr(qkv);
        nint vOffset = (nint)(2 * h * (d + 1) * dk * sizeof(double));
        var signQ = Signs(CanonicalKernels.ColumnSignStats(qkvPtr, h, d + 1, dk, p.Sort), p, report);
        var signV = Signs(CanonicalKernels.ColumnSignStats(qkvPtr + vOffset, h, d + 1, dk, p.Sort), p, report);
        if (keep)
        {
            var heads = Ptr(_heads);
            double within = p.Sort + p.Noise;
            keep = CanonicalKernels.ColumnSignStats(heads, h, d + 1, dk, within).Concat(CanonicalKernels.ColumnSignStats(heads + vOffset, h, d + 1, dk, within))
                .All(s => CanonicalMath.SignAdmissible(s, p));
        }
        PhaseClock.Mark("canon: signs");

        // Step 8: head order (ties broken by the signed factors, computed only when needed).
        Tensor[] HeadData()
        {
            var sQ = tensor(signQ, ScalarType.Float64).view(h, 1, dk);
            var sV = tensor(signV, ScalarType.Float64).view(h, 1, dk);
            return [qkv.narrow(0, 0, h) * sQ, qkv.narrow(0, h, h).narrow(1, 0, d) * sQ, qkv.narrow(0, 2 * h, h).narrow(1, 0, d) * sV, newO.transpose(1, 2) * sV];
        }
        var order = CanonicalForm.SortHeads(sq, sv, HeadData, report, p);
        keep = keep && CanonicalForm.HeadsAdmissible(sq, sv, () => [q, k.narrow(1, 0, d), v.narrow(1, 0, d), o.transpose(1, 2)], p);
        CanonicalKernels.AssembleAttention(qkvPtr, Ptr(newO), h, d, dk, order, signQ, signV, Target(iAttnW), Ptr(_out.AttnB), Target(iProjW));
        _out.AttnProjB.copy_(_in.AttnProjB);
        _out.Ln1W.fill_(1.0); _out.Ln1B.zero_();
        _out.Ln2W.fill_(1.0); _out.Ln2B.zero_();
        PhaseClock.Mark("canon: assemble attention");

        // Step 8 (MLP): units by (‖c_fc column‖, bias, ‖c_proj row‖) of the centred data, ties by that data.
        var fcMean = new double[f];
        var fcNorm = new double[f];
        for (int j = 0; j < f; j++)
        {
            fcMean[j] = _fcSum[j] / d;
            fcNorm[j] = Math.Sqrt(Math.Max(0, _fcSq[j] - d * fcMean[j] * fcMean[j]));
        }
        var fcB = CanonicalMath.ToArray(_in.FcB);
        var projNorm = _rowSq.Select(Math.Sqrt).ToArray();
        var rowMean = _rowMean;
        var gamma2 = Ptr(_gamma2);
        (double[] Cols, double[] Rows)? tieData = null;
        (double[] Cols, double[] Rows) TieData()
        {
            if (tieData is { } cached) return cached;
            var rows = new double[f * d];
            var folded = new double[d * f];
            fixed (double* r = rows, c = folded)
            {
                CanonicalKernels.GatherRowsCentred(projSrc, f, d, Enumerable.Range(0, (int)f).ToArray(), rowMean, new KernelTarget((IntPtr)r, true), colPerm, sign);
                CanonicalKernels.GatherColumnsCentred(fcSrc, gamma2, d, f, Enumerable.Range(0, (int)f).ToArray(), fcMean, new KernelTarget((IntPtr)c, true), rowDst);
            }
            var cols = new double[f * d];                      // column-major: unit j's c_fc column at j·d
            for (long i = 0; i < d; i++)
                for (long j = 0; j < f; j++) cols[j * d + i] = folded[i * f + j];
            tieData = (cols, rows);
            return (cols, rows);
        }
        var unitOrder = CanonicalForm.SortUnits(fcNorm, fcB, projNorm, TieData, (int)d, (int)d, report, p);
        keep = keep && CanonicalForm.UnitsAdmissible(fcNorm, fcB, projNorm, TieData, (int)d, (int)d, p);
        PhaseClock.Mark("canon: unit keys + sort");
        CanonicalKernels.GatherColumnsCentred(fcSrc, gamma2, d, f, unitOrder, fcMean, Target(iFcW), rowDst);
        CanonicalKernels.GatherRowsCentred(projSrc, f, d, unitOrder, _rowMean, Target(iMlpProjW), colPerm, sign);
        using (var up = tensor(unitOrder.Select(i => (long)i).ToArray(), ScalarType.Int64)) _out.FcB.copy_(_in.FcB.index_select(0, up));
        _out.MlpProjB.copy_(_in.MlpProjB);
        PhaseClock.Mark("canon: permute units");

        if (keep) KeepInput(w, targets, report);
    }

    /// <summary>
    /// The layer was already canonical within its storage precision: its stored values replace the recomputed ones
    /// (in <see cref="Output"/> and in the targets), so that canonicalizing a canonical export reproduces its bytes.
    /// </summary>
    private unsafe void KeepInput(IReadOnlyList<RawTensor> w, IReadOnlyList<RawTensor?>? targets, LayerReport report)
    {
        var outs = _out.Named().ToList();
        for (int i = 0; i < w.Count; i++)
        {
            var src = w[i];
            long n = src.Shape.Aggregate(1L, (a, b) => a * b);
            if (targets?[i] is RawTensor t)
            {
                if (t.DType == src.DType) Buffer.MemoryCopy((void*)src.Data, (void*)t.Data, n * src.DType.Size(), n * src.DType.Size());
                else if (t.DType == DType.F64) CanonicalKernels.ToFloat64(src.Data, src.DType, n, t.Data);
                else throw new ArgumentException($"{outs[i].Suffix}: cannot keep {src.DType} values in a {t.DType} target");
            }
            else
            {
                var dst = outs[i].Tensor.numel() == n ? outs[i].Tensor : BigBuffer(_out, i);
                CanonicalKernels.ToFloat64(src.Data, src.DType, n, Ptr(dst));
            }
        }
        report.Kept = true;
        report.HeadOrder = Enumerable.Range(0, (int)_h).ToArray();
        report.UnitOrder = Enumerable.Range(0, (int)_f).ToArray();
        report.Heads = report.Heads.OrderBy(x => x.OriginalIndex).ToArray();
        report.Note($"layer {report.Layer}: already canonical within {Precision.Storage} precision: kept as stored");
    }

    private static bool IsExactly(Tensor t, double value) => (t == value).all().item<bool>();

    /// <summary>Columns of a reader with sums <paramref name="sum"/> and sums of squares <paramref name="sumSq"/> over d rows sum to 0 within rounding (see <see cref="CanonicalGlobals.Centred"/>).</summary>
    private static bool ColumnsCentred(double[] sum, double[] sumSq, long d, CanonicalPrecision p)
    {
        double root = Math.Sqrt(d);
        for (int j = 0; j < sum.Length; j++)
            if (Math.Abs(sum[j]) > p.Condition * root * Math.Sqrt(sumSq[j]) + p.Absolute * d) return false;
        return true;
    }

    /// <summary>Rows of a writer (means and centred sums of squares over d columns) sum to 0 within rounding.</summary>
    private static bool RowsCentred(double[] mean, double[] centredSq, long d, CanonicalPrecision p)
    {
        double root = Math.Sqrt(d);
        for (int r = 0; r < mean.Length; r++)
            if (Math.Abs(mean[r] * d) > p.Condition * root * Math.Sqrt(centredSq[r] + d * mean[r] * mean[r]) + p.Absolute * d) return false;
        return true;
    }

    /// <summary>
    /// The balanced condition of steps 5–6 within storage rounding, for Gram matrices G_A, G_B [h, r, r] of the two
    /// factors of each head: both equal and diagonal, and the diagonal (the singular values) descending. Rounding
    /// factors X by at most u|X| entrywise moves (XᵀX)_kl by at most 2u‖x_k‖‖x_l‖.
    /// </summary>
    private static bool Balanced(Tensor ga, Tensor gb, CanonicalPrecision p)
    {
        using var scope = NewDisposeScope();
        var na = ga.diagonal(0, 1, 2).clamp_min(0).sqrt();                  // [h, r]
        var nb = gb.diagonal(0, 1, 2).clamp_min(0).sqrt();
        var ba = na.unsqueeze(2) * na.unsqueeze(1);
        var bb = nb.unsqueeze(2) * nb.unsqueeze(1);
        double c = 2 * p.Condition;
        var eye = torch.eye(ga.shape[1], dtype: ScalarType.Float64).unsqueeze(0);
        if (!((ga * (1 - eye)).abs() <= ba * c + p.Absolute).all().item<bool>()) return false;
        if (!((gb * (1 - eye)).abs() <= bb * c + p.Absolute).all().item<bool>()) return false;
        var da = ga.diagonal(0, 1, 2);
        var db = gb.diagonal(0, 1, 2);
        if (!((da - db).abs() <= (da + db) * c + p.Absolute).all().item<bool>()) return false;
        var s = CanonicalMath.ToArray(da);
        long r = ga.shape[1];
        for (long i = 0; i < ga.shape[0]; i++)
        {
            double s1 = s[i * r];
            for (long j = 0; j + 1 < r; j++)
                if (s1 > 0 && (s[i * r + j] - s[i * r + j + 1]) / s1 + p.Noise < 0) return false;   // descending within rounding
        }
        return true;
    }

    /// <summary>Signs of the rule (see <see cref="CanonicalMath.SignRule"/>), counting its near-ties in the report.</summary>
    private static double[] Signs(ColumnSignStat[] stats, CanonicalPrecision p, LayerReport report)
    {
        var signs = new double[stats.Length];
        for (int i = 0; i < stats.Length; i++)
        {
            var (s, near, unbroken) = CanonicalMath.SignRule(stats[i], p.Sort, p.Tie);
            signs[i] = s;
            if (near) report.NearTiedSigns++;
            if (unbroken) report.UnbrokenTies++;
        }
        return signs;
    }

    private static IntPtr Ptr(Tensor t) => NativeTensorAccess.DataPointer(t);

    /// <summary>
    /// NaN or ±inf anywhere in the layer would poison every factorization: refuse it, naming the tensor. The
    /// LayerNorms, biases and W_O are checked as loaded (before anything is folded into them).
    /// </summary>
    private void CheckFiniteSmall()
    {
        foreach (var (suffix, t) in _in.Named())
            if (t.numel() > 0 && suffix is not ("attn.c_attn.weight" or "mlp.c_fc.weight" or "mlp.c_proj.weight") && !t.isfinite().all().item<bool>())
                throw new NonFiniteTensorException(suffix);
    }

    /// <summary>
    /// The big readers and c_proj, through the sums their fused passes already computed: a non-finite entry, or one
    /// whose square overflows float64, makes them non-finite.
    /// </summary>
    private void CheckFiniteBig()
    {
        static bool Finite(double[] a) => a.All(double.IsFinite);
        string? bad = !Finite(_attnSum) || !Finite(_attnSq) || !Finite(_attnB) ? "attn.c_attn.weight"
            : !Finite(_fcSum) || !Finite(_fcSq) || !Finite(_fcB) ? "mlp.c_fc.weight"
            : !Finite(_rowMean) || !Finite(_rowSq) ? "mlp.c_proj.weight"
            : null;
        if (bad is not null) throw new NonFiniteTensorException(bad);
    }

    public void Dispose()
    {
        _in.Dispose();
        _out.Dispose();
        _heads.Dispose();
        _gamma1.Dispose(); _beta1.Dispose(); _gamma2.Dispose(); _beta2.Dispose();
    }
}

/// <summary>A layer tensor (<see cref="Suffix"/>) with NaN or infinite values.</summary>
public sealed class NonFiniteTensorException(string suffix) : ArgumentException($"{suffix}: {Problem}")
{
    public const string Problem = "contains NaN, ±inf or values whose squares overflow float64 (a canonical form needs finite weights)";

    public string Suffix { get; } = suffix;

    /// <summary>The same error located in a checkpoint: its file and full tensor name.</summary>
    public SafeTensorsException In(Gpt2Checkpoint ck, int layer)
    {
        string key = ck.Key(Gpt2Keys.Layer(layer, Suffix));
        return new SafeTensorsException(ck.Store.Entry(key).File, key, Problem);
    }
}

/// <summary>A tensor's raw data in memory: pointer, stored dtype and shape (row-major, contiguous).</summary>
public readonly record struct RawTensor(IntPtr Data, DType DType, long[] Shape);
