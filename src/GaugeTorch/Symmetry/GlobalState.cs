using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Symmetry;

/// <summary>
/// The globals of one transformed model: the embedding, the learned positions and the head as
/// <see cref="LazyMatrix"/> over the stored tensors, and the final norm in float64 (d numbers, held outright). Global
/// family actions (<see cref="IGlobalAction"/>) act on it; a tied head is the embedding itself, so whatever acts on
/// the embedding acts on the head. The streaming evaluator reads the transformed input rows
/// (<see cref="EmbedInput"/>) and logits (<see cref="Logits"/>) from it in O(T·d + T·V); <c>transform</c> forms
/// the tensors once (<see cref="Materialize"/>).
/// </summary>
public sealed class GlobalState : IDisposable
{
    private NormView _finalNorm;

    /// <param name="stored">The stored globals (any dtype; not owned and never modified).</param>
    public GlobalState(GlobalView stored, ModelTraits traits)
    {
        Stored = stored;
        Traits = traits;
        Embed = new LazyMatrix(stored.Embed);
        Positions = stored.Positions is null ? null : new LazyMatrix(stored.Positions);
        Head = stored.Head is null ? null : new LazyMatrix(stored.Head);
        using var scope = NewDisposeScope();
        _finalNorm = Own(stored.FinalNorm);
    }

    public ModelTraits Traits { get; }
    public GlobalView Stored { get; }
    public LazyMatrix Embed { get; }
    /// <summary>Learned positions; null for rotary models.</summary>
    public LazyMatrix? Positions { get; }
    /// <summary>The untied head; null when the head is the embedding.</summary>
    public LazyMatrix? Head { get; }
    public LazyMatrix HeadOrEmbed => Head ?? Embed;

    /// <summary>The final norm's gain and bias, float64 (owned by the state; replace with <see cref="SetFinalNorm"/>).</summary>
    public NormView FinalNorm => _finalNorm;

    /// <summary>Replaces the final norm (copies of the given tensors' handles are kept; the old ones are freed).</summary>
    public void SetFinalNorm(Tensor gain, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        var next = Own(new NormView { Gain = gain, Bias = bias });
        _finalNorm.Dispose();
        _finalNorm = next;
    }

    private static NormView Own(NormView n) => new()
    {
        Gain = n.Gain.to_type(ScalarType.Float64).alias().DetachFromDisposeScope(),
        Bias = n.Bias?.to_type(ScalarType.Float64).alias().DetachFromDisposeScope(),
    };

    /// <summary>True when no action changed the embedding or the positions (the input is the stored model's).</summary>
    public bool InputUnchanged => Embed.IsIdentity && Positions?.IsIdentity != false;

    /// <summary>
    /// The transformed model's input residual x₀ [T, d] for tokens [T] at positions start … start+T−1, in
    /// <paramref name="compute"/>. Unchanged embeddings give exactly the stored model's <see cref="Forward.Embed"/>;
    /// otherwise the T rows are formed in float64 and cast once.
    /// </summary>
    public Tensor EmbedInput(Tensor tokens, ScalarType compute, long start = 0)
    {
        using var scope = NewDisposeScope();
        if (InputUnchanged && Stored.Embed.dtype == compute) return Forward.Embed(tokens, Stored, start).MoveToOuterDisposeScope();
        var x = Embed.Gather(tokens);
        if (Positions is not null) x = x + Positions.Gather(arange(start, start + tokens.shape[0], dtype: ScalarType.Int64));
        return x.to_type(compute).MoveToOuterDisposeScope();
    }

    /// <summary>Logits [T, V] of the last hidden states x [T, d]: the final norm (cast to x's dtype), then the head as a map.</summary>
    public Tensor Logits(Tensor x)
    {
        using var scope = NewDisposeScope();
        var n = Forward.Norm(x, _finalNorm.Map(t => t.to_type(x.dtype)), Traits);
        return HeadOrEmbed.Project(n).MoveToOuterDisposeScope();
    }

    /// <summary>The transformed globals as float64 tensors (new; the head stays null when tied).</summary>
    public GlobalView Materialize()
    {
        using var scope = NewDisposeScope();
        var g = new GlobalView
        {
            Embed = Embed.Materialize(),
            Positions = Positions?.Materialize(),
            FinalNorm = _finalNorm.Map(t => t.clone()),
            Head = Head?.Materialize(),
        };
        return g.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Embed.Dispose();
        Positions?.Dispose();
        Head?.Dispose();
        _finalNorm.Dispose();
    }
}
