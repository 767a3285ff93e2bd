using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge.Canonical;

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
    }

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
            if (r.DType is DType.F32 or DType.F64) return new(r.Data, r.DType == DType.F64);
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
                CanonicalKernels.ToFloat64(w[i].Data, w[i].DType, dst.numel(), Ptr(dst));
            }
        var attnSrc = Big(iAttnW);
        var fcSrc = Big(iFcW);
        var projSrc = Big(iMlpProjW);
        CheckFiniteSmall();
        PhaseClock.Mark("canon: load");

        // Steps 1–2 for c_attn, fused: W ← diag(γ₁)W written into the heads layout, b ← b + β₁W (unscaled W),
        // column sums; then every column centred (rows 0..d−1 of each head block; the bias row stays).
        CanonicalKernels.FoldColumns(attnSrc, d, 3 * d, Ptr(_in.Ln1W), Ptr(_in.Ln1B), Ptr(_heads), dk, (d + 1) * dk, dk, _attnSum, _attnSq, _attnB);
        using (var mean = tensor(_attnSum, ScalarType.Float64).div_(d).view(3 * h, 1, dk))
            _heads.narrow(1, 0, d).sub_(mean);
        using (var bAdd = tensor(_attnB, ScalarType.Float64)) _in.AttnB.add_(bAdd);
        _heads.narrow(0, 0, h).select(1, d).copy_(_in.AttnB.narrow(0, 0, d).view(h, dk));   // b_Q row; b_K ← 0 (step 3)
        // Steps 1–2 for c_fc (centring happens in the gather below; the key uses Σx² − d·mean²).
        CanonicalKernels.FoldColumns(fcSrc, d, f, Ptr(_in.Ln2W), Ptr(_in.Ln2B), IntPtr.Zero, f, 0, f, _fcSum, _fcSq, _fcB);
        using (var bAdd = tensor(_fcB, ScalarType.Float64)) _in.FcB.add_(bAdd);
        // Step 3: b_V moved into b_O (with the uncentred W_O). Step 4: centre the writers.
        var bv = _in.AttnB.narrow(0, 2 * d, d);
        _in.AttnProjB.add_(matmul(bv, _in.AttnProjW));
        _in.AttnProjW.sub_(_in.AttnProjW.mean([1], keepdim: true));
        _in.AttnProjB.sub_(_in.AttnProjB.mean());
        _in.MlpProjB.sub_(_in.MlpProjB.mean());
        CanonicalKernels.RowStats(projSrc, f, d, _rowMean, _rowSq);
        CheckFiniteBig();
        PhaseClock.Mark("canon: fold + centre");

        // Steps 5–6: balanced factors. QK: A = W̃_Q, B = W_K. VO: A = W_V, B = W_Oᵀ.
        var q = _heads.narrow(0, 0, h);                       // [h, d+1, dk]
        var k = _heads.narrow(0, h, h);                       // [h, d+1, dk], last row 0
        var v = _heads.narrow(0, 2 * h, h);                   // [h, d+1, dv], last row 0
        var o = _in.AttnProjW.view(h, dk, d);                 // [h, dv, d]: W_O rows of head i
        var grams = CanonicalMath.Gram(_heads);               // [3h, dk, dk]
        var gramO = matmul(o, o.transpose(1, 2));             // [h, dv, dv]
        PhaseClock.Mark("canon: factors (Gram)");
        var (tq, sq, tk, fq) = CanonicalMath.BalancingTransforms(grams.narrow(0, 0, h), q, grams.narrow(0, h, h), k, CanonicalForm.RankTolerance);
        var (tv, sv, to, fv) = CanonicalMath.BalancingTransforms(grams.narrow(0, 2 * h, h), v, gramO, o.transpose(1, 2), CanonicalForm.RankTolerance);
        report.HouseholderFallbacks += fq + fv;
        var qkv = matmul(_heads, cat([tq, tk, tv], 0));       // [3h, d+1, dk]: new W̃_Q, [W_K; 0], [W_V; 0]
        var newO = matmul(to.transpose(1, 2), o);             // [h, dv, d] = (W_Oᵀ T_O)ᵀ
        PhaseClock.Mark("canon: apply");

        // Step 7: signs from the largest entry of each column of the query and value factors.
        var qkvPtr = Ptr(qkv);
        var signQ = CanonicalKernels.ColumnSigns(qkvPtr, h, d + 1, dk);
        var signV = CanonicalKernels.ColumnSigns(qkvPtr + (nint)(2 * h * (d + 1) * dk * sizeof(double)), h, d + 1, dk);
        PhaseClock.Mark("canon: signs");

        // Step 8: head order (ties broken by the signed factors, computed only when needed).
        Tensor[] HeadData()
        {
            var sQ = tensor(signQ, ScalarType.Float64).view(h, 1, dk);
            var sV = tensor(signV, ScalarType.Float64).view(h, 1, dk);
            return [qkv.narrow(0, 0, h) * sQ, qkv.narrow(0, h, h).narrow(1, 0, d) * sQ, qkv.narrow(0, 2 * h, h).narrow(1, 0, d) * sV, newO.transpose(1, 2) * sV];
        }
        var order = CanonicalForm.SortHeads(sq, sv, HeadData, report);
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
        var gamma2 = Ptr(_in.Ln2W);
        var unitOrder = CanonicalForm.SortUnits(fcNorm, fcB, projNorm,
            () =>
            {
                var rows = new double[f * d];
                var folded = new double[d * f];
                fixed (double* r = rows, c = folded)
                {
                    CanonicalKernels.GatherRowsCentred(projSrc, f, d, Enumerable.Range(0, (int)f).ToArray(), rowMean, new KernelTarget((IntPtr)r, true));
                    CanonicalKernels.GatherColumnsCentred(fcSrc, gamma2, d, f, Enumerable.Range(0, (int)f).ToArray(), fcMean, new KernelTarget((IntPtr)c, true));
                }
                var cols = new double[f * d];                  // column-major: unit j's c_fc column at j·d
                for (long i = 0; i < d; i++)
                    for (long j = 0; j < f; j++) cols[j * d + i] = folded[i * f + j];
                return (cols, rows);
            },
            (int)d, (int)d, report);
        PhaseClock.Mark("canon: unit keys + sort");
        CanonicalKernels.GatherColumnsCentred(fcSrc, gamma2, d, f, unitOrder, fcMean, Target(iFcW));
        CanonicalKernels.GatherRowsCentred(projSrc, f, d, unitOrder, _rowMean, Target(iMlpProjW));
        using (var up = tensor(unitOrder.Select(i => (long)i).ToArray(), ScalarType.Int64)) _out.FcB.copy_(_in.FcB.index_select(0, up));
        _out.MlpProjB.copy_(_in.MlpProjB);
        PhaseClock.Mark("canon: permute units");
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
