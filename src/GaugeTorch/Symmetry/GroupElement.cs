using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// A random element of the gauge group (the composition of one random element of each listed family, in catalog
/// order) or an invalid control. It carries layer parts and global parts: <see cref="SampleLayer"/> draws the
/// transformation of one block, <see cref="SampleGlobals"/> that of the embedding, positions, final norm and head.
/// Every part is a deterministic function of (seed, stream, layer, family) and of the stored weights it is scaled to,
/// so the same seed gives the same element whatever else is sampled. The consumers (evaluator, transformer,
/// canonicalizer) only apply parts; none of them knows a single family.
/// </summary>
public sealed class GroupElement : IDisposable
{
    private readonly FamilyElement[] _parts;

    public GroupElement(IReadOnlyList<SymmetryFamily> families, long seed, int stream, ModelTraits traits)
    {
        foreach (var f in families)
            if (!f.HoldsFor(traits))
                throw new ArgumentException($"family '{f.Name}' does not hold for this model ({traits.Describe()}): it needs {f.Requirement}");
        Families = families;
        Traits = traits;
        Seed = seed;
        Stream = stream;
        var key = new SampleKey(seed, stream);
        _parts = families.Select(f => f.Sample(key, traits)).ToArray();
    }

    public IReadOnlyList<SymmetryFamily> Families { get; }
    public ModelTraits Traits { get; }
    public long Seed { get; }
    public int Stream { get; }

    /// <summary>False when a control is among the parts.</summary>
    public bool Valid => Families.All(f => f.Valid);

    /// <summary>This element's transformation of layer <paramref name="layer"/>, drawn for its stored weights (a float64 view).</summary>
    public LayerTransform SampleLayer(int layer, LayerView stored) =>
        TorchThreads.SingleThreaded(() => new LayerTransform(_parts.Select(p => p.Layer(layer, stored)).OfType<ILayerAction>().ToList()));

    /// <summary>
    /// This element's transformation of the globals, drawn for the stored globals (any dtype). Unlike the layer parts
    /// it runs with the default intra-op threads: its draws are scaled by reductions over the whole embedding, whose
    /// rounding depends on the thread count, and every release has drawn them that way (same seed, same bytes).
    /// </summary>
    public GlobalTransform SampleGlobals(GlobalView stored) =>
        new(_parts.Select(p => p.Globals(stored)).OfType<IGlobalAction>().ToList());

    /// <summary>Frees the parts shared by every layer (they are drawn again, identically, if the element is used again).</summary>
    public void Dispose()
    {
        foreach (var p in _parts) p.Dispose();
    }
}

/// <summary>The part of a group element that acts on one block: family actions applied in order.</summary>
public sealed class LayerTransform(IReadOnlyList<ILayerAction> actions)
{
    public IReadOnlyList<ILayerAction> Actions { get; } = actions;

    /// <summary>
    /// The transformed block as a new float64 view that owns all its tensors; <paramref name="stored"/> is not modified.
    /// Tensors no action moves share the stored storage (no copy); every intermediate is freed on return.
    /// </summary>
    public LayerView Apply(LayerView stored, ModelTraits t) => ApplyTracked(stored, t).View;

    /// <summary>
    /// <see cref="Apply"/>, also returning the roles (as in <see cref="LayerView.Named"/>) whose tensors an action
    /// replaced; the others hold the stored values, so a consumer may reuse what it made of the stored tensors.
    /// </summary>
    public (LayerView View, IReadOnlySet<string> Moved) ApplyTracked(LayerView stored, ModelTraits t) => TorchThreads.SingleThreaded(() =>
    {
        using var scope = NewDisposeScope();
        var w = stored.Map(x => x.dtype == ScalarType.Float64 ? x.alias() : x.to_type(ScalarType.Float64));
        var start = w.Named().ToDictionary(p => p.Role, p => p.Tensor);
        PhaseClock.Start();
        foreach (var a in Actions)
        {
            a.Apply(w, t);
            if (Actions.Count > 1) PhaseClock.Mark("apply in sequence: " + a.Name);
        }
        var moved = w.Named().Where(p => !start.TryGetValue(p.Role, out var s) || !ReferenceEquals(s, p.Tensor)).Select(p => p.Role).ToHashSet();
        return (w.Map(x => x.alias()).MoveToOuterDisposeScope(), (IReadOnlySet<string>)moved);
    });

    /// <summary>
    /// The activation maps equivalent to this transform (<see cref="IActivationMapAction"/>), when it is exactly one
    /// such action; otherwise null (apply it to the weights).
    /// </summary>
    public BlockMaps? ActivationMaps(ModelTraits t) => Actions is [IActivationMapAction a] ? a.Maps(t) : null;

    /// <summary>
    /// This transform as (the actions before its last run of <see cref="IResidualMapAction"/>s, those maps composed),
    /// or (this, null) when the last action is not one: the first part's weights with the map's
    /// <see cref="IResidualMapAction.OnNorms"/> and its <see cref="IResidualMapAction.Maps"/> on the readers' inputs and
    /// the writers' outputs compute the transformed block (e.g. residual-perm then residual-rotation on an untied GPT-2).
    /// </summary>
    public (LayerTransform Before, IResidualMapAction? Map) SplitResidualMap()
    {
        int n = Actions.Count;
        while (n > 0 && Actions[n - 1] is IResidualMapAction) n--;
        if (n == Actions.Count) return (this, null);
        var maps = Actions.Skip(n).Cast<IResidualMapAction>().ToList();
        return (new LayerTransform(Actions.Take(n).ToList()), maps.Count == 1 ? maps[0] : new ComposedResidualMap(maps));
    }

    /// <summary>Residual changes of basis applied in order M₁, M₂, …: x ↦ x·M₁·M₂·…</summary>
    private sealed class ComposedResidualMap(IReadOnlyList<IResidualMapAction> maps) : IResidualMapAction
    {
        public string Name => string.Join("+", maps.Select(m => m.Name));

        public LayerView OnNorms(LayerView w)
        {
            foreach (var m in maps) w = m.OnNorms(w);
            return w;
        }

        /// <summary>
        /// Readers: W → R_n⋯R_1·W, so h ↦ h·R_n⋯R_1 (the last action's map first), each R_i built on the norms the
        /// actions before it left; writers: W → W·S_1⋯S_n, so y ↦ y·S_1⋯S_n.
        /// </summary>
        public BlockMaps Maps(LayerView w)
        {
            var r1 = new List<Func<Tensor, Tensor>?>();
            var r2 = new List<Func<Tensor, Tensor>?>();
            var wr = new List<Func<Tensor, Tensor>?>();
            foreach (var m in maps)
            {
                var bm = m.Maps(w);
                r1.Add(bm.Reader);
                r2.Add(bm.Reader2 ?? bm.Reader);
                wr.Add(bm.Writer);
                w = m.OnNorms(w);
            }
            Tensor Readers(List<Func<Tensor, Tensor>?> fs, Tensor h)
            {
                for (int i = fs.Count - 1; i >= 0; i--) if (fs[i] is { } f) h = f(h);
                return h;
            }
            return new BlockMaps
            {
                Reader = h => Readers(r1, h),
                Reader2 = h => Readers(r2, h),
                Writer = y =>
                {
                    foreach (var f in wr) if (f is not null) y = f(y);
                    return y;
                },
            };
        }

        public void Apply(LayerView w, ModelTraits t)
        {
            foreach (var m in maps) m.Apply(w, t);
        }

        public ILayerAction Inverse() => new LayerTransformAction(maps.Reverse().Select(m => m.Inverse()).ToList());
    }

    /// <summary>A list of actions as one action.</summary>
    private sealed class LayerTransformAction(IReadOnlyList<ILayerAction> actions) : ILayerAction
    {
        public string Name => string.Join("+", actions.Select(a => a.Name));

        public void Apply(LayerView w, ModelTraits t)
        {
            foreach (var a in actions) a.Apply(w, t);
        }

        public ILayerAction Inverse() => new LayerTransformAction(actions.Reverse().Select(a => a.Inverse()).ToList());
    }

    /// <summary>The inverse: inverse actions in reverse order.</summary>
    public LayerTransform Inverse() => new(Actions.Reverse().Select(a => a.Inverse()).ToList());
}

/// <summary>The part of a group element that acts on the globals: family actions applied in order to a <see cref="GlobalState"/>.</summary>
public sealed class GlobalTransform(IReadOnlyList<IGlobalAction> actions)
{
    public IReadOnlyList<IGlobalAction> Actions { get; } = actions;

    public bool IsIdentity => Actions.Count == 0;

    public void Apply(GlobalState g)
    {
        using var scope = NewDisposeScope();
        foreach (var a in Actions) a.Apply(g);
    }

    public GlobalTransform Inverse() => new(Actions.Reverse().Select(a => a.Inverse()).ToList());
}
