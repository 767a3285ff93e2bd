using GaugeTorch.Gauge.Invalid;
using GaugeTorch.Architectures.Gpt2;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>
/// A random element of the gauge group (or an invalid control), sampled lazily layer by layer so that a checkpoint
/// of any size can be transformed while streaming. Every part is a deterministic function of
/// (seed, stream, layer, family) and of the weights it is scaled to, so the same seed gives the same element.
/// </summary>
public sealed class GaugeElement
{
    public Gpt2Config Config { get; }
    public IReadOnlyList<GaugeFamily> Families { get; }
    public InvalidControl? Control { get; }
    public long Seed { get; }
    public int Stream { get; }
    private readonly GaugeRandom _rng;
    private GlobalOrthogonal? _globalQ;

    public GaugeElement(Gpt2Config config, IReadOnlyList<GaugeFamily> families, long seed, int stream = 0, InvalidControl? control = null)
    {
        Config = config;
        Families = families;
        Control = control;
        Seed = seed;
        Stream = stream;
        _rng = new GaugeRandom(seed);
    }

    public bool HasEmbeddingOffset => Families.Contains(GaugeFamily.EmbeddingOffset);

    /// <summary>The global orthogonal of the <see cref="InvalidControl.GlobalOrthogonal"/> control (one Q for all layers).</summary>
    public GlobalOrthogonal? GlobalRotation => Control == InvalidControl.GlobalOrthogonal
        ? _globalQ ??= WithNoScope(() => GlobalOrthogonal.Sample(_rng.For(Stream, -1, "global-orthogonal"), Config))
        : null;

    /// <summary>Samples this element's action on layer <paramref name="layer"/>, scaled to that layer's weights (any dtype).</summary>
    public LayerGaugeElement SampleLayer(int layer, LayerWeights weights) =>
        TorchThreads.SingleThreaded(() => SampleLayerCore(layer, weights));

    private LayerGaugeElement SampleLayerCore(int layer, LayerWeights weights)
    {
        var actions = new List<ILayerAction>();
        var c = Config;
        using var w64 = weights.To(ScalarType.Float64);
        foreach (var f in Families)
        {
            if (f == GaugeFamily.EmbeddingOffset) continue;
            var g = _rng.For(Stream, layer, f.CliName());
            ILayerAction a = f switch
            {
                GaugeFamily.QkBasis => QkBasis.Sample(g, c),
                GaugeFamily.VoBasis => VoBasis.Sample(g, c),
                GaugeFamily.HeadPermutation => HeadPermutation.Sample(g, c),
                GaugeFamily.MlpPermutation => MlpPermutation.Sample(g, c),
                GaugeFamily.KeyBiasTranslation => KeyBiasTranslation.Sample(g, w64, c),
                GaugeFamily.ValueBiasShift => ValueBiasShift.Sample(g, w64, c),
                GaugeFamily.LayerNormGain => LayerNormGain.Sample(g, c),
                GaugeFamily.LayerNormBias => LayerNormBias.Sample(g, w64, c),
                GaugeFamily.ReaderMean => ReaderMean.Sample(g, w64, c),
                GaugeFamily.WriterMean => WriterMean.Sample(g, w64, c),
                _ => throw new ArgumentOutOfRangeException(nameof(f)),
            };
            actions.Add(a);
        }
        if (Control is InvalidControl ctl)
        {
            var g = _rng.For(Stream, layer, ctl.CliName());
            actions.Add(ctl switch
            {
                InvalidControl.CrossHeadMixing => CrossHeadMixing.Sample(g, c),
                InvalidControl.MismatchedQk => MismatchedQk.Sample(g, c),
                InvalidControl.GlobalOrthogonal => GlobalRotation!,
                _ => throw new ArgumentOutOfRangeException(nameof(ctl)),
            });
        }
        return new LayerGaugeElement(actions);
    }

    /// <summary>The global part (family 10), or null when not selected. Scaled to wte and wpe.</summary>
    public EmbeddingOffset? SampleGlobal(Tensor wte, Tensor wpe) =>
        HasEmbeddingOffset ? EmbeddingOffset.Sample(_rng.For(Stream, -1, GaugeFamily.EmbeddingOffset.CliName()), wte, wpe, Config) : null;

    private static T WithNoScope<T>(Func<T> f)
    {
        // Sampled tensors that live as long as the element are kept out of every dispose scope.
        var result = f();
        if (result is GlobalOrthogonal go) go.Q.DetachFromDisposeScope();
        return result;
    }
}
