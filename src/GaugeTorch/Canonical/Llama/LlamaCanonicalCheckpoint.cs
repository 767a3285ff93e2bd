using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Llama;

/// <summary>Options of <see cref="LlamaCanonicalCheckpoint.Write"/>.</summary>
public sealed record LlamaCanonicalizeOptions
{
    /// <summary>Write float64 tensors instead of the input's storage dtype.</summary>
    public bool Float64Output { get; init; }
    /// <summary>Tokens on which the float64 check forward measures the export (null or empty: not measured).</summary>
    public int[]? Tokens { get; init; }
    /// <summary>Keep layers (and globals) already canonical within the storage precision as stored (<see cref="LlamaCanonicalPrecision.KeepCanonicalInput"/>).</summary>
    public bool KeepCanonicalInput { get; init; } = true;
    /// <summary>Layers done / total (the globals count as one more step).</summary>
    public IProgress<(int Done, int Total)>? Progress { get; init; }
}

/// <summary>
/// Streams the LLaMA-family canonical form (<see cref="LlamaCanonicalForm"/>) of a Llama, Qwen2 or Mistral checkpoint to
/// a standard checkpoint of the same architecture, through the shared pipeline: the globals once (a tied embedding
/// only permuted and signed in its storage precision, never widened in full), then each layer read from the memory map
/// in float64 (<see cref="LayerStream"/>), canonicalized, staged in the output dtype and written in the background
/// (<see cref="ExportWriter"/>) while the next layer is computed, its input pages released, and measured by the float64
/// check forward (<see cref="CheckForward"/>: the input as stored against the export as stored). Tensor names, shapes
/// and the head's tying are the input's (a stored tied head copy is written again, equal to the embedding); rotary
/// inv_freq buffers are copied byte for byte; config.json and tokenizer files are copied; the metadata names the tool
/// and the operation.
/// </summary>
public static class LlamaCanonicalCheckpoint
{
    public static LlamaCanonicalReport Write(Checkpoint ck, string outDir, LlamaCanonicalizeOptions o)
    {
        using var _ = no_grad();
        var t = ck.Traits;
        var arch = ck.Architecture;
        LlamaCanonicalForm.RequireFamily(t, ck.Directory);
        var outType = o.Float64Output ? DType.F64 : ck.StorageDType;
        var storage = outType.ToScalarType();
        var precision = LlamaCanonicalPrecision.For(ck.StorageDType, outType) with { KeepCanonicalInput = o.KeepCanonicalInput };
        var report = new LlamaCanonicalReport { Precision = precision };
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["generator"] = "gaugetorch canonicalize-checkpoint",
            ["gaugetorch.form"] = "full",
            ["gaugetorch.architecture"] = t.Architecture,
            ["gaugetorch.version"] = ToolInfo.Version,
        };
        string Key(string name) => name == arch.HeadName ? name : ck.Prefix + name;
        var specs = arch.Parameters().Select(p => new TensorSpec(Key(p.Name), outType, p.Shape)).ToList();
        if (ck.HasHeadTensor) specs.Add(new TensorSpec(arch.HeadName, outType, [t.Vocab, t.Hidden]));
        var buffers = ck.IgnoredBuffers.Select(ck.Store.Entry).ToList();
        specs.AddRange(buffers.Select(b => new TensorSpec(b.Name, b.DType, b.Shape)));

        var tokens = o.Tokens is { Length: > 0 } given ? given.Take(t.MaxPositions).ToArray() : null;
        report.Tokens = tokens?.Length ?? 0;
        if (LlamaCanonicalStream.Applies(ck, outType, check: tokens is not null))
        {
            // Tied, no check forward: the big tensors go from the map to the staging buffer without float64 copies.
            using var filling = ExportWriter.Create(ck, outDir, specs, metadata);
            foreach (var b in buffers) filling.WriteBytes(b.Name, ck.Store.ReadBytes(b.Name));
            LlamaCanonicalStream.Write(ck, filling, outType, precision, report, o.Progress);
            return report;
        }
        var stream = new LayerStream(ck);
        using var export = ExportWriter.Create(ck, outDir, specs, metadata);
        foreach (var b in buffers) export.WriteBytes(b.Name, ck.Store.ReadBytes(b.Name));
        int total = t.Layers + 1;
        // A tied embedding is only permuted and signed: F32, F16 and BF16 values are exact in float32, so it stays there.
        var embType = ck.StorageDType == DType.F64 || !t.Tied ? ScalarType.Float64 : ScalarType.Float32;
        CheckForward? check = null;
        Tensor? inHead = null, outHead = null;
        NormView? inNorm = null, outNorm = null;
        LlamaFrame? frame = null;
        Task? prefetch = null;
        try
        {
            PhaseClock.Start();
            using (var scope = NewDisposeScope())
            {
                var stored = arch.GlobalsToView(n => stream.ReadTensor(n, n == arch.EmbeddingName ? embType : ScalarType.Float64), ck.Tied);
                foreach (var n in ck.Tied ? arch.GlobalNames() : arch.GlobalNames().Append(arch.HeadName))
                    ck.Store.ReleaseMapped(ck.Store.Entry(ck.Key(n)));
                FiniteWeights.RequireGlobals(ck, stored);
                var (canon, fr) = LlamaCanonicalForm.Globals(stored, t, precision, report.Frame);
                frame = fr;
                foreach (var (name, tensor) in arch.GlobalsFromView(canon)) export.Write(Key(name), tensor);
                if (ck.Tied && ck.HasHeadTensor) export.Write(arch.HeadName, canon.Embed);
                if (tokens is not null)
                {
                    // The check's embeddings: only the rows the tokens use, in float64 (input as stored, export as stored).
                    var ids = tokens.Distinct().OrderBy(i => i).ToArray();
                    var remap = ids.Select((id, i) => (id, i)).ToDictionary(p => p.id, p => p.i);
                    var rows = tensor(ids.Select(i => (long)i).ToArray(), ScalarType.Int64);
                    var gin = new GlobalView { Embed = stored.Embed.index_select(0, rows).to_type(ScalarType.Float64), FinalNorm = stored.FinalNorm };
                    var gout = new GlobalView { Embed = CheckForward.AsStored(canon.Embed.index_select(0, rows).to_type(ScalarType.Float64), storage), FinalNorm = canon.FinalNorm };
                    check = new CheckForward(tokens.Select(i => remap[i]).ToArray(), t, gin, t, gout);
                    inHead = stored.HeadOrEmbed.DetachFromDisposeScope();
                    outHead = Compact(canon.HeadOrEmbed, storage).DetachFromDisposeScope();
                    inNorm = new NormView { Gain = stored.FinalNorm.Gain.clone().DetachFromDisposeScope() };
                    outNorm = new NormView { Gain = CheckForward.AsStored(canon.FinalNorm.Gain, storage).DetachFromDisposeScope() };
                }
            }
            PhaseClock.Mark("globals");
            o.Progress?.Report((1, total));
            prefetch = stream.Prefetch(0);
            for (int l = 0; l < t.Layers; l++)
            {
                using var scope = NewDisposeScope();
                PhaseClock.Start();
                prefetch.GetAwaiter().GetResult();
                PhaseClock.Mark("wait: prefetch");
                if (l + 1 < t.Layers) prefetch = stream.Prefetch(l + 1);
                var stored = stream.Read(l, ScalarType.Float64);
                PhaseClock.Mark("read (float64)");
                FiniteWeights.RequireLayer(ck, l, stored);
                PhaseClock.Mark("finite check");
                var lr = new LlamaLayerReport { Layer = l };
                var cw = LlamaCanonicalForm.Layer(stored, t, frame, precision, lr);
                report.Layers.Add(lr);
                var named = arch.FromView(l, cw).Select(p => (Key(p.Name), p.Tensor)).ToList();
                export.StageLayer(named);
                PhaseClock.Mark("stage (convert + queue write)");
                if (check is not null)
                {
                    var byName = named.ToDictionary(p => p.Item1, p => p.Item2, StringComparer.Ordinal);
                    check.Layer(stored, arch.ToView(l, n => CheckForward.AsStored(byName[Key(n)], storage)));
                    PhaseClock.Mark("check forward");
                }
                stream.Release(l);
                o.Progress?.Report((l + 2, total));
            }
            if (check is not null) report.StorageLogitsError = check.Finish(x => Logits(x, inNorm!, inHead!, t), x => Logits(x, outNorm!, outHead!, t));
            PhaseClock.Start();
            export.Commit(arch.ExportConfig(ck.Config, tied: ck.Tied));
            PhaseClock.Mark("commit (wait for writes, fsync)");
        }
        finally
        {
            // A page-touching task must not outlive this call (the checkpoint's mapping may be closed next).
            try { prefetch?.Wait(); } catch (AggregateException) { }
            check?.Dispose();
            inHead?.Dispose();
            outHead?.Dispose();
            inNorm?.Dispose();
            outNorm?.Dispose();
            frame?.Dispose();
        }
        return report;
    }

    /// <summary>A tensor as stored in <paramref name="storage"/>, held compactly: float32 (exact) unless the storage is F64.</summary>
    internal static Tensor Compact(Tensor t, ScalarType storage) =>
        storage == ScalarType.Float64 ? t.to_type(ScalarType.Float64).clone() : t.to_type(storage).to_type(ScalarType.Float32);

    /// <summary>logits [T, V] = rmsnorm(x)·headᵀ in float64, the head widened 8,192 rows at a time.</summary>
    internal static Tensor Logits(Tensor x, NormView norm, Tensor head, ModelTraits t)
    {
        using var scope = NewDisposeScope();
        var n = Forward.Norm(x, norm, t);
        long v = head.shape[0];
        const long chunk = 8192;
        var parts = new List<Tensor>();
        for (long s = 0; s < v; s += chunk)
        {
            using var h = head.narrow(0, s, Math.Min(chunk, v - s)).to_type(ScalarType.Float64);
            parts.Add(matmul(n, h.t()));
        }
        return cat(parts, 1).MoveToOuterDisposeScope();
    }
}
