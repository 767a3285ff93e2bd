using System.Reflection;
using System.Text.Json.Nodes;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Canonical.Gpt2;

/// <summary>Options of <see cref="CanonicalCheckpoint.Write"/>.</summary>
public sealed record CanonicalizeOptions
{
    public CanonicalFormKind Form { get; init; } = CanonicalFormKind.Full;
    /// <summary>Write float64 tensors instead of the input's storage dtype.</summary>
    public bool Float64Output { get; init; }
    /// <summary>Tokens on which to measure the logits error of the export (null or empty: not measured).</summary>
    public int[]? Tokens { get; init; }
    /// <summary>
    /// Keep the values of an input that is already canonical within its storage precision (see
    /// <see cref="CanonicalPrecision.KeepCanonicalInput"/>), so that canonicalizing a canonical export reproduces its bytes.
    /// </summary>
    public bool KeepCanonicalInput { get; init; } = true;
    /// <summary>Layers done / total (the globals count as one more step).</summary>
    public IProgress<(int Done, int Total)>? Progress { get; init; }
}

/// <summary>
/// Streams a canonical checkpoint to disk: one layer at a time is read in float64, canonicalized, measured and
/// written in the storage dtype; the globals once. The output directory mirrors the input (same file names, tensor
/// names, shapes and, by default, dtype; mask buffers copied byte for byte; config.json and tokenizer files copied)
/// and is built in a hidden temporary directory beside it, then renamed into place; on failure nothing is left.
/// </summary>
public static class CanonicalCheckpoint
{
    public static string ToolVersion =>
        typeof(CanonicalCheckpoint).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0";

    public static CanonicalReport Write(Gpt2Checkpoint ck, string outDir, CanonicalizeOptions o)
    {
        string outFull = Path.GetFullPath(outDir).TrimEnd('/');
        OutputGuard.RefuseInputDirectory(outFull, ck.Directory);
        if (File.Exists(outFull)) throw new IOException($"{outDir}: exists and is a file (--out must be a directory)");
        if (Directory.Exists(outFull) && Directory.EnumerateFileSystemEntries(outFull).Any())
            throw new IOException($"{outDir}: directory exists and is not empty (refusing to mix outputs)");
        foreach (var input in ck.InputFiles)
            if (Path.GetFullPath(input).StartsWith(outFull + "/", StringComparison.Ordinal))
                throw new IOException($"{outDir}: contains the input file {input}");
        string parent = Path.GetDirectoryName(outFull)!;
        Directory.CreateDirectory(parent);
        string temp = TempFiles.CreateDirectory(outFull); // registered: removed on SIGINT/SIGTERM and by a later run
        try
        {
            var report = WriteInto(ck, temp, o);
            if (Directory.Exists(outFull)) Directory.Delete(outFull); // empty (checked above)
            TempFiles.Commit(temp, outFull);
            return report;
        }
        catch
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    private static CanonicalReport WriteInto(Gpt2Checkpoint ck, string dir, CanonicalizeOptions o)
    {
        var c = ck.Config;
        var outType = o.Float64Output ? DType.F64 : ck.StorageDType;
        var storeType = outType.ToScalarType();
        var parameters = new HashSet<string>(Gpt2Keys.Parameters(c).Select(p => ck.Key(p.Name)), StringComparer.Ordinal);
        if (ck.HasLmHeadTensor) parameters.Add(ck.Key(Gpt2Keys.LmHead));
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["generator"] = "gaugetorch canonicalize-checkpoint",
            ["gaugetorch.form"] = o.Form.Name(),
            ["gaugetorch.version"] = ToolVersion,
        };

        bool sharded = ck.Store.Files.Count > 1;
        var writers = new List<SafeTensorWriter>();
        // Background work (page touching, staged writes) on buffers owned by this method: always waited for
        // before the buffers and writers are freed, on success and on failure alike.
        var writing = new Task?[2];
        Task? touching = null;
        using var stagingGlobals = new RangeStaging();
        using var stagingA = new RangeStaging();
        using var stagingB = new RangeStaging();
        LayerWeights? checkOrig = null, checkStored = null;
        void WaitForBackgroundWork()
        {
            var pending = writing.Append(touching).OfType<Task>().ToArray();
            try { Task.WaitAll(pending); } catch (AggregateException) when (pending.Any(t => t.IsFaulted)) { }
        }
        var writerOf = new Dictionary<string, SafeTensorWriter>(StringComparer.Ordinal);
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        try
        {
            foreach (var f in ck.Store.Files)
            {
                string name = sharded ? Path.GetFileName(f.Path) : SafeTensorStore.SingleFileName;
                var specs = f.Entries.Select(e => new TensorSpec(e.Name, parameters.Contains(e.Name) ? outType : e.DType, e.Shape)).ToList();
                var w = SafeTensorWriter.Create(Path.Combine(dir, name), specs, metadata, ck.InputFiles);
                writers.Add(w);
                foreach (var e in f.Entries)
                {
                    writerOf[e.Name] = w;
                    weightMap[e.Name] = name;
                }
            }

            var precision = CanonicalPrecision.For(ck.StorageDType, outType) with { KeepCanonicalInput = o.KeepCanonicalInput };
            var report = new CanonicalReport { Form = o.Form, Precision = precision };
            var copiedBuffers = new HashSet<string>(StringComparer.Ordinal);
            int total = c.NLayer + 1;
            using var tokens = o.Tokens is not { Length: > 0 } ? null : tensor(o.Tokens.Take(c.NPositions).Select(i => (long)i).ToArray(), ScalarType.Int64);

            // Globals first: the embeddings start the two float64 forward passes (original model, canonical model as
            // stored) that measure the export. The float64 canonical form itself is checked by the tests (≤ 100 ε).
            GlobalWeights? orig = null, canon;
            Tensor? xOrig = null, xStored = null;
            ResidualFrame frame;
            PhaseClock.Start();
            // The globals are staged like a layer and written by the writer task (first in its chain). They come
            // first because step 4b fixes the residual frame there, which every layer then takes.
            using (var g = ck.LoadGlobals(ScalarType.Float64))
            {
                PhaseClock.Mark("globals: load");
                CanonicalGlobals.RequireFinite(ck, g, wteChecked: o.Form == CanonicalFormKind.Full);
                PhaseClock.Mark("globals: finite");
                try
                {
                    if (o.Form == CanonicalFormKind.Full) (canon, frame) = CanonicalGlobals.Canonicalize(g, untied: false, precision, report);
                    else (canon, frame) = (PaperForm.CanonicalizeGlobals(g), ResidualFrame.Identity());
                }
                catch (NonFiniteTensorException e)
                {
                    throw CanonicalGlobals.Located(ck, e.Suffix);
                }
                var named = new List<(string Key, Tensor T)>
                {
                    (Gpt2Keys.Wte, canon.Wte), (Gpt2Keys.Wpe, canon.Wpe), (Gpt2Keys.LnFWeight, canon.LnFW), (Gpt2Keys.LnFBias, canon.LnFB),
                };
                if (ck.HasLmHeadTensor) named.Add((Gpt2Keys.LmHead, canon.Head));
                stagingGlobals.Plan(named.Select(p => (ck.Key(p.Key), writerOf[ck.Key(p.Key)])));
                foreach (var (key, t) in named)
                {
                    string name = ck.Key(key);
                    using var t64 = t.contiguous();
                    CanonicalKernels.FromFloat64(NativeTensorAccess.DataPointer(t64), t64.numel(), outType, stagingGlobals.Slot(name));
                    writerOf[name].Claim(name, outType, t.shape);
                }
                PhaseClock.Mark("globals: stage");
                writing[1] = Task.Run(stagingGlobals.WriteAll);
                if (tokens is not null)
                {
                    xOrig = Gpt2Functional.Embed(tokens, g.Wte, g.Wpe);
                    using var sw = Rounded(canon.Wte, storeType);
                    using var sp = Rounded(canon.Wpe, storeType);
                    xStored = Gpt2Functional.Embed(tokens, sw, sp);
                    // Keep only what the heads need at the end.
                    orig = new GlobalWeights { Wte = g.Head.clone(), Wpe = empty(0), LnFW = g.LnFW.clone(), LnFB = g.LnFB.clone() };
                }
                else
                {
                    canon.Dispose();
                }
            }
            PhaseClock.Mark("globals");
            o.Progress?.Report((1, total));

            // Layers, as a pipeline: the full form reads each layer in place from the checkpoint's memory map (a
            // background task touches the next layer's pages meanwhile) and writes the big canonical weights
            // straight into a staging buffer laid out like the layer's bytes in the output file; a writer task
            // sends it to disk (whole pages with direct I/O) while the next layer is computed. Staging buffers come
            // in pairs (l mod 2) and are reused, so nothing large is allocated per layer. The paper form allocates
            // per layer.
            using var frameOwner = frame;
            using var k = o.Form == CanonicalFormKind.Full ? new LayerCanonicalizer(c) { Frame = frame, Precision = precision } : null;
            bool direct = outType is DType.F32 or DType.F64;
            var bigWeights = new[] { 2, 4, 8, 10 };   // c_attn, attn.c_proj, c_fc, mlp.c_proj weights (LayerSuffixes order)
            var shapes = Gpt2Keys.LayerSuffixes.Select(sfx => Gpt2Keys.LayerShape(c, sfx)).ToArray();
            try
            {
                touching = Task.Run(() => TouchPages(LayerCanonicalizer.Mapped(ck, 0)));
                for (int l = 0; l < c.NLayer; l++)
                {
                    using var scope = NewDisposeScope();
                    var lr = new LayerReport { Layer = l };
                    int set = l % 2;
                    var staging = set == 0 ? stagingA : stagingB;
                    PhaseClock.Start();
                    touching.GetAwaiter().GetResult();
                    if (l + 1 < c.NLayer)
                    {
                        int next = l + 1;
                        touching = Task.Run(() => TouchPages(LayerCanonicalizer.Mapped(ck, next)));
                    }
                    writing[set]?.GetAwaiter().GetResult();                 // this set's previous layer is on disk
                    PhaseClock.Mark("wait: write");

                    var keys = Gpt2Keys.LayerSuffixes.Select(sfx => ck.Key(Gpt2Keys.Layer(l, sfx))).ToArray();
                    var buffers = Gpt2Keys.BufferSuffixes.Select(sfx => ck.Key(Gpt2Keys.Layer(l, sfx))).Where(ck.Store.Contains).ToArray();
                    staging.Plan(keys.Concat(buffers).Select(n => (n, writerOf[n])));
                    var targets = new RawTensor?[keys.Length];
                    LayerWeights cw;
                    if (k is not null)
                    {
                        if (direct)
                            foreach (int i in bigWeights) targets[i] = new RawTensor(staging.Slot(keys[i]), outType, shapes[i]);
                        k.Run(ck, l, lr, targets);
                        cw = k.Output;
                    }
                    else
                    {
                        using var w = ck.LoadLayer(l, ScalarType.Float64);
                        foreach (var (suffix, t) in w.Named())
                            if (!t.isfinite().all().item<bool>()) throw new NonFiniteTensorException(suffix).In(ck, l);
                        cw = PaperForm.CanonicalizeLayer(w, c, lr, precision);
                    }
                    int ti = 0;
                    foreach (var (suffix, t) in cw.Named())
                    {
                        if (targets[ti] is null)
                        {
                            using var t64 = t.to_type(ScalarType.Float64).contiguous();
                            CanonicalKernels.FromFloat64(NativeTensorAccess.DataPointer(t64), t64.numel(), outType, staging.Slot(keys[ti]));
                        }
                        writerOf[keys[ti]].Claim(keys[ti], outType, shapes[ti]);
                        ti++;
                    }
                    foreach (var name in buffers)
                    {
                        var e = ck.Store.Entry(name);
                        ck.Store.CopyRaw(e, staging.Slot(name));            // mask buffers: byte for byte
                        writerOf[name].Claim(name, e.DType, e.Shape);
                        copiedBuffers.Add(name);
                    }
                    // One write at a time: concurrent buffered writes to one file contend on the inode lock.
                    var previous = writing[1 - set] ?? Task.CompletedTask;
                    writing[set] = previous.ContinueWith(_ => staging.WriteAll(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
                    PhaseClock.Mark("convert");
                    report.Layers.Add(lr);
                    if (tokens is not null)
                    {
                        // The check's two float64 layers (input as stored, export as stored) in reused buffers.
                        checkOrig ??= LayerCanonicalizer.Float64Buffers(c);
                        checkStored ??= LayerCanonicalizer.Float64Buffers(c);
                        var origMapped = LayerCanonicalizer.Mapped(ck, l);
                        int i = 0;
                        foreach (var ((_, o64), (_, s64)) in checkOrig.Named().Zip(checkStored.Named()))
                        {
                            CanonicalKernels.ToFloat64(origMapped[i].Data, origMapped[i].DType, o64.numel(), NativeTensorAccess.DataPointer(o64));
                            CanonicalKernels.ToFloat64(staging.Slot(keys[i]), outType, s64.numel(), NativeTensorAccess.DataPointer(s64));
                            i++;
                        }
                        var nextOrig = Gpt2Functional.Block(xOrig!, checkOrig, c).MoveToOuterDisposeScope();
                        var nextStored = Gpt2Functional.Block(xStored!, checkStored, c).MoveToOuterDisposeScope();
                        xOrig!.Dispose();
                        xStored!.Dispose();
                        (xOrig, xStored) = (nextOrig, nextStored);
                        PhaseClock.Mark("check forward");
                    }
                    // Layer l's input pages are not needed any more: keep the resident set at about one layer.
                    LayerCanonicalizer.ReleaseMapped(ck, l);
                    if (k is null) cw.Dispose();
                    o.Progress?.Report((l + 2, total));
                }
            }
            finally
            {
                WaitForBackgroundWork();
            }
            foreach (var t in writing) t?.GetAwaiter().GetResult();   // surface a write error

            if (tokens is not null)
            {
                using var scope = NewDisposeScope();
                var yOrig = Gpt2Functional.RowCentre(Gpt2Functional.Head(xOrig!, orig!, c));
                var stored = new GlobalWeights { Wte = Rounded(canon.Head, storeType), Wpe = empty(0), LnFW = Rounded(canon.LnFW, storeType), LnFB = Rounded(canon.LnFB, storeType) };
                var yStored = Gpt2Functional.RowCentre(Gpt2Functional.Head(xStored!, stored, c));
                double norm = yOrig.norm().item<double>();
                report.StorageLogitsError = (yStored - yOrig).norm().item<double>() / (norm + Math.Pow(2, -52));
            }
            orig?.Dispose();
            if (tokens is not null) canon.Dispose();
            xOrig?.Dispose();
            xStored?.Dispose();

            // Everything that is not a parameter (mask buffers) is copied byte for byte.
            foreach (var e in ck.Store.Entries)
                if (!parameters.Contains(e.Name) && !copiedBuffers.Contains(e.Name)) writerOf[e.Name].WriteBytes(e.Name, ck.Store.ReadBytes(e.Name));

            PhaseClock.Start();
            foreach (var w in writers) w.Commit();
            PhaseClock.Mark("commit (fsync)");
            if (sharded)
            {
                long totalSize = writers.Sum(w => new FileInfo(w.Path).Length);
                var index = new JsonObject
                {
                    ["metadata"] = new JsonObject { ["total_size"] = totalSize },
                    ["weight_map"] = new JsonObject(weightMap.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
                };
                AtomicFile.WriteAllText(Path.Combine(dir, SafeTensorStore.IndexFileName), index.ToJsonString(new() { WriteIndented = true }), ck.InputFiles);
            }
            AtomicFile.Copy(ck.ConfigPath, Path.Combine(dir, "config.json"), ck.InputFiles);
            foreach (var side in ck.SideFiles()) AtomicFile.Copy(side, Path.Combine(dir, Path.GetFileName(side)), ck.InputFiles);
            return report;
        }
        finally
        {
            WaitForBackgroundWork();
            checkOrig?.Dispose();
            checkStored?.Dispose();
            foreach (var w in writers) w.Dispose();
        }
    }

    /// <summary>Reads one byte per 4 KiB page of each tensor, so that the mapping's page faults happen here, ahead of use.</summary>
    private static unsafe long TouchPages(RawTensor[] tensors)
    {
        long sum = 0;
        foreach (var t in tensors)
        {
            byte* p = (byte*)t.Data;
            long n = t.Shape.Aggregate(1L, (a, b) => a * b) * t.DType.Size();
            for (long i = 0; i < n; i += 4096) sum += p[i];
        }
        return sum;
    }

    private static Tensor Rounded(Tensor t, ScalarType storage)
    {
        using var r = t.to_type(storage);
        return r.to_type(ScalarType.Float64);
    }
}
