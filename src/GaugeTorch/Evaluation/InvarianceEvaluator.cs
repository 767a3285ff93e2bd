using System.Diagnostics;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.Symmetry;
using static TorchSharp.torch;

namespace GaugeTorch.Evaluation;

/// <summary>
/// One transformed copy of the model to check: a valid group element or an invalid control. <see cref="Group"/> is
/// the family's name, "all-together", or the control's name; <see cref="Paper"/> marks the papers' families.
/// </summary>
public sealed record InvarianceCase(string Group, bool Valid, bool Paper, GroupElement Element);

/// <summary>The measured error of one case.</summary>
public sealed record InvarianceCaseResult(string Group, bool Valid, bool Paper, double RelativeError, double Top1Agreement, double MaxKl);

public sealed record InvarianceRunResult(
    IReadOnlyList<InvarianceCaseResult> Cases, int Tokens, ScalarType ComputeType,
    double GaugeSeconds, double ForwardSeconds, double LoadSeconds);

/// <summary>
/// Runs the original model and every transformed copy together through the streaming pipeline: each layer is read
/// from the memory-mapped file once, every case's transformed layer is made from it in float64 (then cast to the
/// compute dtype), used for that case's hidden state [T, d] and freed, and the layer's pages are released. The globals
/// are read once; a case's global part acts on them lazily (<see cref="GlobalState"/>): on the T input rows and as a
/// map of the T final states, so a case costs O(T·d + T·V) memory, never a copy of the embedding or the head. Memory
/// is the globals once plus about one layer per case at a time, whatever the model size; every tensor is disposed
/// deterministically.
/// </summary>
public static class InvarianceEvaluator
{
    /// <summary>
    /// For each family, <paramref name="perGroup"/> elements of that family alone; then as many of all families
    /// together (when more than one); then, with <paramref name="controls"/>, as many of each invalid control that
    /// applies. Element k uses stream k of <paramref name="seed"/>.
    /// </summary>
    public static IReadOnlyList<InvarianceCase> StandardCases(ModelTraits traits, IReadOnlyList<SymmetryFamily> families, int perGroup, long seed, bool controls)
    {
        var cases = new List<InvarianceCase>();
        int stream = 0;
        foreach (var f in families)
            for (int i = 0; i < perGroup; i++)
                cases.Add(new InvarianceCase(f.Name, true, f.IsPaper, new GroupElement([f], seed, stream++, traits)));
        if (families.Count > 1)
            for (int i = 0; i < perGroup; i++)
                cases.Add(new InvarianceCase("all-together", true, false, new GroupElement(families, seed, stream++, traits)));
        if (controls)
            foreach (var ctl in SymmetryCatalog.ControlsFor(traits))
                for (int i = 0; i < perGroup; i++)
                    cases.Add(new InvarianceCase(ctl.Name, false, false, new GroupElement([ctl], seed, stream++, traits)));
        return cases;
    }

    /// <summary>
    /// A layer tensor cast to the compute dtype. Q, K and V are laid out [d, n, hd] (one strided copy that also casts)
    /// so that the forward reads each as one [d, n·hd] matrix without copying it again.
    /// </summary>
    private static Tensor ForCompute(string role, Tensor x, ScalarType dtype)
    {
        // LLaMA-family [out, in] views (transposed nn.Linear storage) are read by the forward in place; a cast keeps
        // their strides. Copying them into [in, out] cost a transpose per moved matrix and case (issue 12 item 5).
        if (OutInLayout.IsStored(role, x)) return x.to_type(dtype);
        if (role is not ("q" or "k" or "v")) return x.to_type(dtype).contiguous();
        // Already [d, n, hd] row-major with unit inner stride (a view of one Q | K | V matrix, as SetReader1 makes and
        // the GPT-2 checkpoint stores them): the forward reads Flat(x) in place (a row stride ≥ n·hd).
        if (x.dtype == dtype && x.stride() is [var sn, var sd, 1] && sn == x.shape[2] && sd >= x.shape[0] * x.shape[2]) return x.alias();
        var flat = empty([x.shape[1], x.shape[0], x.shape[2]], dtype);
        flat.copy_(x.permute(1, 0, 2));
        using (flat) return flat.permute(1, 0, 2);
    }

    /// <summary>A <see cref="PhaseClock"/> mark per phase and group (GAUGETORCH_PROFILE=1), without building the name otherwise.</summary>
    private static void Mark(string phase, string group)
    {
        if (PhaseClock.Enabled) PhaseClock.Mark(phase + group);
    }

    /// <summary>
    /// When the stored Q, K and V are already laid out as views of one [d, (H + 2G)·hd] matrix (GPT-2's c_attn): the
    /// same view with them set from one copy of that matrix (<see cref="ViewOps.SetReader1"/>, same values and
    /// strides), so that every family that reads Q | K | V of this layer gets it without concatenating it again. Null
    /// (and the view as stored) otherwise.
    /// </summary>
    private static (LayerView? View, Tensor? Matrix) FusedReaders(LayerView stored, ModelTraits t)
    {
        long n = (long)(t.QueryHeads + 2 * t.KvHeads) * t.HeadDim;
        bool Fusable(Tensor x) => x.stride() is [var sn, var sd, 1] && sn == x.shape[2] && sd == n;
        if (!(Fusable(stored.Q) && Fusable(stored.K) && Fusable(stored.V))) return (null, null);
        using var scope = NewDisposeScope();
        var m = ViewOps.Reader1(stored);
        var v = stored.Map(x => x.alias());
        ViewOps.SetReader1(v, t, m);
        v.MoveToOuterDisposeScope();
        return (v, m.MoveToOuterDisposeScope());
    }

    private static Tensor Role(LayerView w, string role) => w.Named().First(p => p.Role == role).Tensor;

    /// <param name="progress">(steps done, steps): one step per layer, and a last one for the heads and the comparison.</param>
    /// <param name="allowNonFinite">Run on NaN or infinite weights instead of refusing them by name (<see cref="FiniteWeights"/>).</param>
    public static InvarianceRunResult Run(Checkpoint ck, int[] tokens, ScalarType compute, IReadOnlyList<InvarianceCase> cases,
                                          IProgress<(int Layer, int Layers)>? progress = null, bool allowNonFinite = false)
    {
        using var _ = no_grad();
        var t = ck.Traits;
        if (tokens.Length == 0) throw new ArgumentException("no tokens to evaluate on");
        if (tokens.Length > t.MaxPositions) throw new ArgumentException($"{tokens.Length} tokens exceed the model's {t.MaxPositions} positions");
        foreach (int id in tokens)
            if (id < 0 || id >= t.Vocab) throw new ArgumentException($"token {id} is outside the model's vocabulary [0, {t.Vocab})");
        double eps = InvarianceMetrics.EpsMach(compute);
        var gauge = new Stopwatch();
        var fwd = new Stopwatch();
        var load = Stopwatch.StartNew();
        // Activation maps run inside the forward; their time counts as gauge work.
        BlockMaps Timed(BlockMaps maps) => maps.Wrapped(f => h =>
        {
            fwd.Stop();
            gauge.Start();
            try { return f(h); }
            finally { gauge.Stop(); fwd.Start(); }
        });
        var stream = new LayerStream(ck);
        using var tok = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        using var globals = stream.ReadGlobals(compute);
        if (!allowNonFinite) FiniteWeights.RequireGlobals(ck, globals);
        load.Stop();
        var states = new GlobalState?[cases.Count];
        var xs = new Tensor?[cases.Count];
        Tensor? x = null;
        (Tensor Cos, Tensor Sin)? rope = null;
        Task? prefetch = null;
        try
        {
            fwd.Start();
            rope = Forward.RopeTables(t, 0, tokens.Length);
            x = Forward.Embed(tok, globals);
            fwd.Stop();
            for (int k = 0; k < cases.Count; k++)
            {
                gauge.Start();
                using var scope = NewDisposeScope();
                var state = new GlobalState(globals, t);
                states[k] = state;
                cases[k].Element.SampleGlobals(globals).Apply(state);
                xs[k] = state.EmbedInput(tok, compute).DetachFromDisposeScope();
                gauge.Stop();
            }

            prefetch = stream.Prefetch(0);
            for (int l = 0; l < t.Layers; l++)
            {
                load.Start();
                prefetch.GetAwaiter().GetResult();
                if (l + 1 < t.Layers) prefetch = stream.Prefetch(l + 1);
                // One float64 copy of the layer per pass; every case samples from and transforms that copy.
                using var read = stream.Read(l, ScalarType.Float64);
                if (!allowNonFinite) FiniteWeights.RequireLayer(ck, l, read);
                var (fusedView, fused) = FusedReaders(read, t);
                using var fusedOwner = fusedView;
                using var fusedMatrix = fused;
                var stored = fusedView ?? read;
                // The layer in the compute layout, once: Q, K, V as [d, n, hd] so that no forward re-copies them (in
                // float64 too: a copy whose unmoved roles every transformed copy shares).
                using var w = stored.MapNamed((role, x) => ForCompute(role, x, compute));
                load.Stop();
                fwd.Start();
                var nx = Forward.Block(x, w, t, rope);
                x.Dispose();
                x = nx;
                fwd.Stop();
                for (int k = 0; k < cases.Count; k++)
                {
                    using var scope = NewDisposeScope();
                    gauge.Start();
                    PhaseClock.Start();
                    var transform = cases[k].Element.SampleLayer(l, stored);
                    Mark("gauge: sample ", cases[k].Group);
                    if (transform.ActivationMaps(t) is { } maps)
                    {
                        // A dense control: the stored layer (in the compute dtype) with maps on its activations, the
                        // maps timed as gauge work; no transformed copy of the layer at all.
                        gauge.Stop();
                        var timed = Timed(maps);
                        fwd.Start();
                        var mk = Forward.Block(xs[k]!, w, t, rope, timed).DetachFromDisposeScope();
                        xs[k]!.Dispose();
                        xs[k] = mk;
                        fwd.Stop();
                        continue;
                    }
                    // A last residual change of basis (residual-perm, residual-rotation): its norm parameters are
                    // moved, its reader and writer changes run as maps on the activations (IResidualMapAction), so the
                    // big matrices it would rewrite are the earlier actions' (or the reference's own).
                    var (rest, map) = transform.SplitResidualMap();
                    LayerView wk = w;
                    LayerView w64 = stored;
                    if (rest.Actions.Count > 0)
                    {
                        (w64, var moved) = rest.ApplyTracked(stored, t);
                        Mark("gauge: apply ", cases[k].Group);
                        // Only the tensors the element moved are laid out (and cast) anew; the others are the reference's own.
                        wk = w64.MapNamed((role, x) => moved.Contains(role) ? ForCompute(role, x, compute) : Role(w, role).alias());
                        Mark("gauge: layout ", cases[k].Group);
                    }
                    BlockMaps? residualMaps = null;
                    if (map is not null)
                    {
                        var normed = map.OnNorms(w64);
                        residualMaps = Timed(map.Maps(w64));
                        wk = wk.Map(x => x.alias());
                        wk.Norm1 = normed.Norm1.Map(x => x.to_type(compute));
                        wk.Norm2 = normed.Norm2.Map(x => x.to_type(compute));
                        Mark("gauge: residual norms ", cases[k].Group);
                    }
                    gauge.Stop();
                    fwd.Start();
                    var nk = Forward.Block(xs[k]!, wk, t, rope, residualMaps);
                    fwd.Stop();
                    Mark("forward ", cases[k].Group);
                    xs[k]!.Dispose();
                    xs[k] = nk.DetachFromDisposeScope();
                    // Some tensors the families' ops make on LLaMA-family views reach the garbage collector instead of
                    // this scope (measured, docs/benchmarks.md: a case's layer then stayed in memory until a collection,
                    // and llama-3.2-1b passed 16 GB); collect after each case (about 1 ms on this small managed heap).
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    PhaseClock.Mark("gc");
                }
                stream.Release(l);
                progress?.Report((l + 1, t.Layers + 1));
            }
            prefetch.GetAwaiter().GetResult();

            fwd.Start();
            using var reference = Forward.Head(x, globals, t);
            fwd.Stop();
            var results = new List<InvarianceCaseResult>();
            for (int k = 0; k < cases.Count; k++)
            {
                using var scope = NewDisposeScope();
                fwd.Start();
                var logits = states[k]!.Logits(xs[k]!);
                fwd.Stop();
                var cmp = InvarianceMetrics.Compare(reference, logits, eps);
                results.Add(new InvarianceCaseResult(cases[k].Group, cases[k].Valid, cases[k].Paper, cmp.RelativeError, cmp.Top1Agreement, cmp.MaxKl));
                xs[k]!.Dispose();
                xs[k] = null;
                states[k]!.Dispose();
                states[k] = null;
            }
            progress?.Report((t.Layers + 1, t.Layers + 1));
            if (PhaseClock.Enabled) Console.Error.WriteLine(PhaseClock.Report());
            return new InvarianceRunResult(results, tokens.Length, compute, gauge.Elapsed.TotalSeconds, fwd.Elapsed.TotalSeconds, load.Elapsed.TotalSeconds);
        }
        finally
        {
            // A page-touching task must not outlive this call (the checkpoint's mapping may be closed next).
            try { prefetch?.Wait(); } catch (AggregateException) { }
            x?.Dispose();
            foreach (var xk in xs) xk?.Dispose();
            foreach (var s in states) s?.Dispose();
            foreach (var c in cases) c.Element.Dispose();
            if (rope is { } r) { r.Cos.Dispose(); r.Sin.Dispose(); }
        }
    }
}
