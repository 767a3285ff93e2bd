using System.Runtime.InteropServices;
using GaugeTorch.Architectures.Llama;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Llama;

/// <summary>
/// The tied (signed-permutation frame) export of <see cref="LlamaCanonicalCheckpoint.Write"/> without the check
/// forward, with the big tensors never widened: the embedding's column statistics and the MLP's unit statistics are
/// read straight from the memory map in the stored dtype, and the signed permutation of the embedding and the three
/// gathers of each MLP (fold, frame, unit scale and order) write straight into the export's staging buffer in the
/// output dtype (<see cref="LlamaStreamKernels"/>, <see cref="ExportWriter.Stage"/>); only the attention half of
/// each layer (a seventh of its parameters on Llama-3.2-1B) is read into float64 and canonicalized as before
/// (<see cref="LlamaCanonicalForm.Attention"/>). The 1 GB embedding is written in the background while the layers are
/// computed. The float64 arithmetic is the same, operation for operation, so the bytes are those of the general
/// path (LlamaCanonicalStreamTests compare them; so does `cmp` against main's export on Llama-3.2-1B). Measured on
/// Llama-3.2-1B before this path (docs/benchmarks.md, Run 2, F32): MLP 7.8 s, globals 6.0 s, staging 1.6 s, read 1.4 s,
/// finite check 0.6 s of ~21 s CPU; Run 3 has the figures after it.
/// </summary>
internal static class LlamaCanonicalStream
{
    private static readonly string[] MlpSuffixes = ["mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"];

    /// <summary>Whether this path applies: a tied Llama-family checkpoint without MLP biases, stored in one float dtype the kernels handle, and no check forward.</summary>
    public static bool Applies(Checkpoint ck, DType outType, bool check)
    {
        if (check || !ck.Traits.Tied || ck.Architecture is not LlamaAdapter a || a.Config.MlpBias) return false;
        if (Environment.GetEnvironmentVariable("GAUGETORCH_LLAMA_CANON_GENERAL") is { Length: > 0 }) return false;
        var stored = ck.StorageDType;
        if (!LlamaStreamDispatch.Supports(stored, outType)) return false;
        bool Same(string name) => ck.Store.Entry(ck.Key(name)).DType == stored;
        if (!Same(a.EmbeddingName)) return false;
        for (int l = 0; l < ck.Traits.Layers; l++)
            foreach (var s in MlpSuffixes)
                if (!Same(LlamaKeys.Layer(l, s))) return false;
        return true;
    }

    public static void Write(Checkpoint ck, ExportWriter export, DType outType, LlamaCanonicalPrecision precision,
        LlamaCanonicalReport report, IProgress<(int Done, int Total)>? progress)
    {
        var t = ck.Traits;
        var arch = ck.Architecture;
        var stored = ck.StorageDType;
        string Key(string name) => name == arch.HeadName ? name : ck.Prefix + name;
        var stream = new LayerStream(ck);
        int total = t.Layers + 1;
        long d = t.Hidden, f = t.Inner;
        LlamaFrame? frame = null;
        MlpScratch? scratch = null;
        Task? prefetch = null;
        try
        {
            PhaseClock.Start();
            using (var scope = NewDisposeScope())
            {
                string embName = arch.EmbeddingName;
                string normName = arch.GlobalNames().Single(n => n != embName);
                var ee = ck.Store.Entry(ck.Key(embName));
                long v = ee.Shape[0];
                IntPtr ep = ck.Store.MappedPointer(ee);
                var stats = LlamaStreamDispatch.ColumnStats(stored, ep, v, d);
                if (!stats.SumSquares.All(double.IsFinite)) RequireFinite(ck, stream, embName);
                var gain = stream.ReadTensor(normName, ScalarType.Float64);
                FiniteWeights.Require(ck, normName, gain);
                frame = LlamaCanonicalForm.TiedFrame(stats, gain.data<double>().ToArray(), precision, report.Frame);
                var index = frame.Permutation ?? Enumerable.Range(0, (int)d).Select(i => (long)i).ToArray();
                var sign = frame.Signs ?? Enumerable.Repeat(1.0, (int)d).ToArray();
                PhaseClock.Mark("globals: statistics + frame");
                var filled = new List<(string, long[])> { (Key(embName), [v, d]) };
                if (ck.HasHeadTensor) filled.Add((arch.HeadName, [v, d]));
                export.Stage([(Key(normName), frame.Gain(gain))], filled, slot =>
                {
                    IntPtr dst = slot(Key(embName));
                    LlamaStreamDispatch.SignedPermuteColumns(stored, outType, ep, v, d, index, sign, dst);
                    if (ck.HasHeadTensor)
                    {
                        long bytes = v * d * outType.Size();
                        unsafe { Buffer.MemoryCopy((void*)dst, (void*)slot(arch.HeadName), bytes, bytes); }
                    }
                }, reuse: false);
                foreach (var n in arch.GlobalNames()) ck.Store.ReleaseMapped(ck.Store.Entry(ck.Key(n)));
            }
            PhaseClock.Mark("globals: permute + stage");
            progress?.Report((1, total));
            bool general = precision.KeepCanonicalInput && frame.IsIdentity;   // the layers' keep test needs them in float64
            prefetch = stream.Prefetch(0);
            for (int l = 0; l < t.Layers; l++)
            {
                using var scope = NewDisposeScope();
                PhaseClock.Start();
                prefetch.GetAwaiter().GetResult();
                PhaseClock.Mark("wait: prefetch");
                if (l + 1 < t.Layers) prefetch = stream.Prefetch(l + 1);
                var lr = new LlamaLayerReport { Layer = l };
                if (general) GeneralLayer(ck, stream, export, l, frame, precision, lr, Key);
                else StreamLayer(ck, stream, export, l, frame, precision, lr, Key, stored, outType, scratch ??= new MlpScratch(f * d * outType.Size(), f * d * 8));
                report.Layers.Add(lr);
                stream.Release(l);
                progress?.Report((l + 2, total));
            }
            PhaseClock.Start();
            export.Commit(arch.ExportConfig(ck.Config, tied: ck.Tied));
            PhaseClock.Mark("commit (wait for writes, fsync)");
        }
        finally
        {
            // A page-touching task must not outlive this call (the checkpoint's mapping may be closed next).
            try { prefetch?.Wait(); } catch (AggregateException) { }
            frame?.Dispose();
            scratch?.Dispose();
        }
    }

    /// <summary>The gate rows (output dtype) and the up rows (float64) of one layer between the statistics pass and the unit order, reused layer after layer.</summary>
    private sealed unsafe class MlpScratch(long gateBytes, long upBytes) : IDisposable
    {
        public IntPtr Gate { get; } = (IntPtr)NativeMemory.AlignedAlloc((nuint)gateBytes, 4096);
        public IntPtr Up { get; } = (IntPtr)NativeMemory.AlignedAlloc((nuint)upBytes, 4096);

        public void Dispose()
        {
            NativeMemory.AlignedFree((void*)Gate);
            NativeMemory.AlignedFree((void*)Up);
        }
    }

    /// <summary>A layer through <see cref="LlamaCanonicalForm.Layer"/> in float64 (the identity frame, where a canonical layer is kept as stored).</summary>
    private static void GeneralLayer(Checkpoint ck, LayerStream stream, ExportWriter export, int l, LlamaFrame frame,
        LlamaCanonicalPrecision precision, LlamaLayerReport lr, Func<string, string> key)
    {
        var w = stream.Read(l, ScalarType.Float64);
        PhaseClock.Mark("read (float64)");
        FiniteWeights.RequireLayer(ck, l, w);
        PhaseClock.Mark("finite check");
        var cw = LlamaCanonicalForm.Layer(w, ck.Traits, frame, precision, lr);
        export.Stage(ck.Architecture.FromView(l, cw).Select(p => (key(p.Name), p.Tensor)).ToList(), [], null);
        PhaseClock.Mark("stage (convert + queue write)");
    }

    private static void StreamLayer(Checkpoint ck, LayerStream stream, ExportWriter export, int l, LlamaFrame frame,
        LlamaCanonicalPrecision precision, LlamaLayerReport lr, Func<string, string> key, DType stored, DType outType, MlpScratch scratch)
    {
        var t = ck.Traits;
        long d = t.Hidden, f = t.Inner;
        var mlp = MlpSuffixes.Select(s => LlamaKeys.Layer(l, s)).ToArray();   // gate, up, down (unprefixed)
        var ptr = mlp.Select(n => ck.Store.MappedPointer(ck.Store.Entry(ck.Key(n)))).ToArray();
        // The attention half and the norms in float64; the MLP matrices stay in the map (empty placeholders in the view).
        var w = ck.Architecture.ToView(l, n => Array.IndexOf(mlp, n) >= 0 ? empty(0, 0, ScalarType.Float64) : stream.ReadTensor(n, ScalarType.Float64));
        PhaseClock.Mark("read (float64)");
        FiniteWeights.RequireLayer(ck, l, w);
        PhaseClock.Mark("finite check");

        // MLP statistics (as LlamaCanonicalForm.FusedMlp computes them), the finite check folded in. The gate and up
        // passes also leave their rows as they will be written before the unit order (gate rounded, up in float64).
        var cols = frame.ReaderColumns(w.Norm2.Gain)!.Value;
        var rows = frame.WriterRowMap(d)!.Value;
        var colIndex = cols.Index.Select(x => (int)x).ToArray();
        var (gSq, _, _) = LlamaStreamDispatch.RowPass(stored, outType, ptr[0], f, d, colIndex, cols.Scale, extremes: false, scratch.Gate, keepFloat64: false);
        var (uSq, uHi, uLo) = LlamaStreamDispatch.RowPass(stored, outType, ptr[1], f, d, colIndex, cols.Scale, extremes: true, scratch.Up, keepFloat64: true);
        var dSq = LlamaStreamDispatch.ColumnStats(stored, ptr[2], d, f).SumSquares;
        if (!gSq.All(double.IsFinite)) RequireFinite(ck, stream, mlp[0]);
        if (!uSq.All(double.IsFinite)) RequireFinite(ck, stream, mlp[1]);
        if (!dSq.All(double.IsFinite)) RequireFinite(ck, stream, mlp[2]);
        var plan = LlamaCanonicalForm.PlanMlp(gSq, uSq, uHi, uLo, dSq, null, null, precision, lr);
        PhaseClock.Mark("layer: mlp statistics");

        var a = LlamaCanonicalForm.Attention(w, t, frame, precision, lr);
        var placeholder = empty(0, 0, ScalarType.Float64);
        var cw = new LayerView
        {
            Norm1 = a.Norm1, Q = a.Q, QBias = a.QBias, K = a.K, KBias = a.KBias, V = a.V, VBias = a.VBias, O = a.O, OBias = a.OBias,
            Norm2 = new NormView { Gain = ones(d, dtype: ScalarType.Float64) },
            Gate = placeholder, Up = placeholder, Down = placeholder,
        };
        var named = ck.Architecture.FromView(l, cw).Where(p => Array.IndexOf(mlp, p.Name) < 0).Select(p => (key(p.Name), p.Tensor)).ToList();
        string gk = key(mlp[0]), uk = key(mlp[1]), dk = key(mlp[2]);
        var unitIndex = plan.Index.Select(x => (int)x).ToArray();
        export.Stage(named, [(gk, [f, d]), (uk, [f, d]), (dk, [d, f])], slot =>
        {
            LlamaStreamKernels.PermuteRows(scratch.Gate, d * outType.Size(), plan.Index, slot(gk));
            LlamaStreamDispatch.ScaleRows(outType, scratch.Up, d, plan.Index, plan.Scale, slot(uk));
            LlamaStreamDispatch.GatherScale(stored, outType, ptr[2], f, rows.Index, rows.Sign, unitIndex, plan.InverseScale, slot(dk));
        });
        PhaseClock.Mark("stage (gathers + convert + queue write)");
    }

    /// <summary>Runs the named finite check on a stored tensor whose statistics came out non-finite (throws where it has a NaN or an infinity).</summary>
    private static void RequireFinite(Checkpoint ck, LayerStream stream, string name)
    {
        using var scope = NewDisposeScope();
        FiniteWeights.Require(ck, name, stream.ReadTensor(name, ScalarType.Float64));
    }
}
