using System.Diagnostics;
using GaugeTorch.Model;
using GaugeTorch.Symmetry;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Audit;

/// <summary>Where the gradient check reads a model from, one layer at a time, in float64 (the caller disposes).</summary>
public interface IModelSource
{
    ModelTraits Traits { get; }
    LayerView LoadLayer(int layer);
    GlobalView LoadGlobals();
}

/// <summary>A checkpoint on disk: every layer is read (memory-mapped) and converted to float64 when it is needed.</summary>
public sealed class CheckpointSource(Checkpoint checkpoint) : IModelSource
{
    public ModelTraits Traits => checkpoint.Traits;
    public LayerView LoadLayer(int layer) => checkpoint.LoadLayer(layer, ScalarType.Float64);
    public GlobalView LoadGlobals() => checkpoint.LoadGlobals(ScalarType.Float64);
}

/// <summary>A model held in memory (tests, random models): float64 copies of its views.</summary>
public sealed class MemorySource(ModelWeights model) : IModelSource
{
    public ModelTraits Traits => model.Traits;
    public LayerView LoadLayer(int layer) => model.Layers[layer].Map(t => t.to_type(ScalarType.Float64).clone());
    public GlobalView LoadGlobals() => model.Globals.Map(t => t.to_type(ScalarType.Float64).clone());
}

/// <summary>One continuous family's sampled tangents.</summary>
public sealed record TangentFamily(string Name, IReadOnlyList<ITangent> Tangents);

/// <summary>A family's result: |⟨∇L, v⟩| / (‖∇L‖‖v‖) for each of its tangents, and the largest.</summary>
public sealed record FamilyCosine(string Name, IReadOnlyList<double> Cosines, IReadOnlyList<double> TangentNorms)
{
    public double Max => Cosines.Max();
}

public sealed record GradientResult
{
    public required ModelTraits Traits { get; init; }
    public required int Tokens { get; init; }
    /// <summary>Mean next-token cross-entropy over the Tokens − 1 predictions.</summary>
    public required double Loss { get; init; }
    public required double GradientNorm { get; init; }
    public required IReadOnlyList<FamilyCosine> Families { get; init; }
    public required double ForwardSeconds { get; init; }
    public required double BackwardSeconds { get; init; }
    public required double TangentSeconds { get; init; }
}

/// <summary>
/// The gradient-orthogonality check (the paper's §F.5.2): the loss is invariant along every gauge orbit, so its
/// gradient is orthogonal to every tangent of the group at θ: ⟨∇L, v⟩ = 0. Measured in float64 as the cosine
/// |⟨∇L, v⟩| / (‖∇L‖‖v‖), a rounding-level number for a true symmetry and O(1/√p) or more for a generic direction.
/// <para>
/// It streams: a 1.5B model's float64 gradient alone is 12.5 GB. A no-grad forward keeps only each layer's input
/// hidden state [T, d]. The backward sweep then reads the layers again from the top, recomputes each block's
/// forward with autograd from its saved input, back-propagates the incoming gradient through it, contracts that
/// layer's gradient with every tangent's layer part (<see cref="ITangent.Layer"/>, evaluated at the layer's
/// weights), and discards both. Only the globals' gradient (embedding, head, final norm) is kept whole, because a
/// tied embedding collects its gradient at both ends of the sweep. Peak memory is one float64 layer with its
/// gradient and one tangent part, the hidden states, and the globals twice.
/// </para>
/// </summary>
public static class GradientOrthogonality
{
    /// <summary>The pass bound on every family's largest cosine: the paper's 1e-12, absolute.</summary>
    public const double Bound = 1e-12;

    /// <param name="onLayerGradient">Sees each layer's gradient (float64, disposed after the call) — for tests.</param>
    /// <param name="onGlobalGradient">Sees the globals' gradient (float64, disposed after the call) — for tests.</param>
    public static GradientResult Run(IModelSource source, IReadOnlyList<int> tokens, IReadOnlyList<TangentFamily> families,
        Action<int, LayerView>? onLayerGradient = null, Action<GlobalView>? onGlobalGradient = null, IProgress<(int Done, int Total)>? progress = null)
    {
        var t = source.Traits;
        if (tokens.Count < 2) throw new ArgumentException($"the gradient check needs at least 2 tokens (got {tokens.Count})");
        foreach (int id in tokens)
            if (id < 0 || id >= t.Vocab) throw new ArgumentException($"token {id} is outside the model's vocabulary of {t.Vocab}");
        if (t.Positions == PositionKind.Learned && tokens.Count > t.MaxPositions)
            throw new ArgumentException($"{tokens.Count} tokens exceed the model's {t.MaxPositions} positions");
        var tangents = families.SelectMany(f => f.Tangents).ToList();
        var dots = new double[tangents.Count];
        var norms2 = new double[tangents.Count];
        double grad2 = 0;
        int steps = 2 * t.Layers + 2, done = 0;
        var clock = Stopwatch.StartNew();
        double forwardS, backwardS = 0, tangentS = 0, lossValue;

        using var outer = NewDisposeScope();
        var tok = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        using var g = source.LoadGlobals();
        var rope = Forward.RopeTables(t, 0, tokens.Count);

        // 1. Forward without autograd, keeping each layer's input: hidden[l] [T, d].
        var hidden = new Tensor?[t.Layers + 1];
        using (no_grad())
        {
            hidden[0] = Forward.Embed(tok, g).DetachFromDisposeScope();
            for (int l = 0; l < t.Layers; l++)
            {
                using var scope = NewDisposeScope();
                using var w = source.LoadLayer(l);
                hidden[l + 1] = Forward.Block(hidden[l]!, w, t, rope).DetachFromDisposeScope();
                progress?.Report((++done, steps));
            }
        }
        forwardS = clock.Elapsed.TotalSeconds;

        try
        {
            // 2. The head: loss, its gradient at the last hidden state and at the globals it reads. The globals'
            //    gradient is filled from both ends of the sweep; it takes the head's gradient tensors as they come
            //    (no zero-filled copy: on gpt2-xl each [V, d] float64 tensor is 643 MB).
            GlobalView gGrad;
            Tensor gx;
            {
                using var scope = NewDisposeScope();
                var xl = hidden[t.Layers]!.detach().requires_grad_(true);
                var readers = new List<Tensor> { xl, g.FinalNorm.Gain };
                if (g.FinalNorm.Bias is not null) readers.Add(g.FinalNorm.Bias);
                readers.Add(g.HeadOrEmbed);
                foreach (var p in readers.Skip(1)) p.requires_grad_(true);
                var logits = Forward.Head(xl, g, t);                                          // [T, V]
                var loss = nn.functional.cross_entropy(logits.narrow(0, 0, tokens.Count - 1), tok.narrow(0, 1, tokens.Count - 1));
                lossValue = loss.item<double>();
                var grads = torch.autograd.grad([loss], readers);
                foreach (var p in readers.Skip(1)) p.requires_grad_(false);
                gx = grads[0].detach().MoveToOuterDisposeScope();
                int k = 1;
                var gain = grads[k++];
                var bias = g.FinalNorm.Bias is not null ? grads[k++] : null;
                var headGrad = grads[k];
                gGrad = new GlobalView
                {
                    Embed = g.Head is null ? headGrad : zeros_like(g.Embed),
                    Positions = g.Positions is null ? null : zeros_like(g.Positions),
                    FinalNorm = new NormView { Gain = gain, Bias = bias },
                    Head = g.Head is null ? null : headGrad,
                }.MoveToOuterDisposeScope();
            }
            progress?.Report((++done, steps));
            backwardS += clock.Elapsed.TotalSeconds - forwardS;

            // 3. The backward sweep, top layer first: recompute, back-propagate, contract, discard.
            for (int l = t.Layers - 1; l >= 0; l--)
            {
                double t0 = clock.Elapsed.TotalSeconds;
                using var scope = NewDisposeScope();
                using var w = source.LoadLayer(l);
                var named = w.Named().ToList();
                foreach (var (_, p) in named) p.requires_grad_(true);
                var xin = hidden[l]!.detach().requires_grad_(true);
                var y = Forward.Block(xin, w, t, rope);
                var grads = torch.autograd.grad([y], [xin, .. named.Select(n => n.Tensor)], [gx]);
                gx.Dispose();
                gx = grads[0].detach().MoveToOuterDisposeScope();
                hidden[l + 1]!.Dispose();
                hidden[l + 1] = null;
                foreach (var (_, p) in named) p.requires_grad_(false);
                var layerGrad = new Dictionary<string, Tensor>();
                for (int i = 0; i < named.Count; i++) layerGrad[named[i].Role] = grads[i + 1];
                foreach (var gr in layerGrad.Values) grad2 += Dot(gr, gr);
                if (onLayerGradient is not null)
                {
                    using var view = ViewRoles.Layer(layerGrad);
                    onLayerGradient(l, view);
                }
                double t1 = clock.Elapsed.TotalSeconds;
                backwardS += t1 - t0;
                using (no_grad())
                    for (int j = 0; j < tangents.Count; j++)
                    {
                        using var ts = NewDisposeScope();
                        using var v = tangents[j].Layer(l, w);
                        if (v is null) continue;
                        foreach (var (role, vt) in v.Named())
                        {
                            if (!layerGrad.TryGetValue(role, out var gr)) throw new InvalidOperationException($"a tangent of '{Family(families, j)}' moves '{role}', which layer {l} does not have");
                            dots[j] += Dot(gr, vt);
                            norms2[j] += Dot(vt, vt);
                        }
                    }
                tangentS += clock.Elapsed.TotalSeconds - t1;
                progress?.Report((++done, steps));
            }

            // 4. The embedding (and learned positions), the input side of the sweep. Forward.Embed is a row gather,
            //    x = E[tokens] + P[0 … T−1], so its gradient is a scatter-add of ∂L/∂x: done in place into the
            //    globals' gradient rather than through autograd, which would allocate another dense [V, d].
            {
                double t0 = clock.Elapsed.TotalSeconds;
                using var scope = NewDisposeScope();
                gGrad.Embed.index_add_(0, tok, gx, 1.0);
                if (gGrad.Positions is not null) gGrad.Positions.narrow(0, 0, tokens.Count).add_(gx);
                gx.Dispose();
                foreach (var (_, gr) in gGrad.Named()) grad2 += Dot(gr, gr);
                onGlobalGradient?.Invoke(gGrad);
                double t1 = clock.Elapsed.TotalSeconds;
                backwardS += t1 - t0;
                var globalGrad = gGrad.Named().ToDictionary(n => n.Role, n => n.Tensor);
                using (no_grad())
                    for (int j = 0; j < tangents.Count; j++)
                    {
                        using var ts = NewDisposeScope();
                        using var v = tangents[j].Globals(g);
                        if (v is null) continue;
                        foreach (var (role, vt) in v.Named())
                        {
                            if (!globalGrad.TryGetValue(role, out var gr)) throw new InvalidOperationException($"a tangent of '{Family(families, j)}' moves '{role}', which the model does not have");
                            dots[j] += Dot(gr, vt);
                            norms2[j] += Dot(vt, vt);
                        }
                    }
                tangentS += clock.Elapsed.TotalSeconds - t1;
                gGrad.Dispose();
                progress?.Report((++done, steps));
            }
        }
        finally
        {
            foreach (var h in hidden) h?.Dispose();
        }

        double gnorm = Math.Sqrt(grad2);
        var results = new List<FamilyCosine>();
        int idx = 0;
        foreach (var f in families)
        {
            var cos = new List<double>();
            var vn = new List<double>();
            foreach (var _ in f.Tangents)
            {
                double n = Math.Sqrt(norms2[idx]);
                if (!(n > 0)) throw new InvalidOperationException($"a tangent of '{f.Name}' is zero on this model");
                cos.Add(Math.Abs(dots[idx]) / (gnorm * n));
                vn.Add(n);
                idx++;
            }
            results.Add(new FamilyCosine(f.Name, cos, vn));
        }
        return new GradientResult
        {
            Traits = t, Tokens = tokens.Count, Loss = lossValue, GradientNorm = gnorm, Families = results,
            ForwardSeconds = forwardS, BackwardSeconds = backwardS, TangentSeconds = tangentS,
        };
    }

    private static string Family(IReadOnlyList<TangentFamily> families, int j)
    {
        foreach (var f in families)
        {
            if (j < f.Tangents.Count) return f.Name;
            j -= f.Tangents.Count;
        }
        return "?";
    }

    /// <summary>
    /// ⟨a, b⟩ in float64 without temporaries where possible: BLAS dot on contiguous tensors; a tensor that is one
    /// value broadcast (every stride 0, as a tangent's expanded zeros) contributes value·Σa.
    /// </summary>
    public static double Dot(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape)) throw new ArgumentException($"shape mismatch [{string.Join(", ", a.shape)}] vs [{string.Join(", ", b.shape)}]");
        if (a.numel() == 0) return 0;
        if (a.numel() == 1) return a.to_type(ScalarType.Float64).reshape(-1).item<double>() * b.to_type(ScalarType.Float64).reshape(-1).item<double>();
        using var scope = NewDisposeScope();
        if (IsBroadcastScalar(b)) { double c = b.as_strided([1], [1]).item<double>(); return c == 0 ? 0 : c * a.sum().item<double>(); }
        if (IsBroadcastScalar(a)) { double c = a.as_strided([1], [1]).item<double>(); return c == 0 ? 0 : c * b.sum().item<double>(); }
        if (a.is_contiguous() && b.is_contiguous()) return a.view(-1).dot(b.view(-1)).item<double>();
        return (a * b).sum().item<double>();
    }

    private static bool IsBroadcastScalar(Tensor t) => t.stride().All(s => s == 0);
}

/// <summary>Views built from (role, tensor) maps, the inverse of <see cref="LayerView.Named"/> / <see cref="GlobalView.Named"/>.</summary>
public static class ViewRoles
{
    public static LayerView Layer(IReadOnlyDictionary<string, Tensor> r)
    {
        Tensor? O(string k) => r.TryGetValue(k, out var v) ? v : null;
        Tensor R(string k) => r.TryGetValue(k, out var v) ? v : throw new ArgumentException($"a layer view needs '{k}'");
        return new LayerView
        {
            Norm1 = new NormView { Gain = R("norm1.gain"), Bias = O("norm1.bias") },
            Q = R("q"), QBias = O("q_bias"), K = R("k"), KBias = O("k_bias"), V = R("v"), VBias = O("v_bias"), O = R("o"), OBias = O("o_bias"),
            Norm2 = new NormView { Gain = R("norm2.gain"), Bias = O("norm2.bias") },
            Gate = O("gate"), GateBias = O("gate_bias"), Up = R("up"), UpBias = O("up_bias"), Down = R("down"), DownBias = O("down_bias"),
        };
    }

    public static GlobalView Globals(IReadOnlyDictionary<string, Tensor> r)
    {
        Tensor? O(string k) => r.TryGetValue(k, out var v) ? v : null;
        Tensor R(string k) => r.TryGetValue(k, out var v) ? v : throw new ArgumentException($"a global view needs '{k}'");
        return new GlobalView
        {
            Embed = R("embed"), Positions = O("positions"),
            FinalNorm = new NormView { Gain = R("final_norm.gain"), Bias = O("final_norm.bias") }, Head = O("head"),
        };
    }
}
