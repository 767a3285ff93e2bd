using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>
/// The keys and values of every position a model has seen so far, per layer, so that generating one more token costs
/// one position of work (its q, k, v and one row of attention over the cache) instead of a forward pass over the whole
/// sequence. Buffers are allocated once, [h, capacity, d_k] per layer for K and for V, in the model's compute dtype:
/// gpt2 (12 layers, d = 768) at 1,024 positions in float32 is 12 · 2 · 1024 · 768 · 4 B = 75 MB. One sequence at a
/// time. Written by <see cref="Gpt2Functional.Attention(Tensor, LayerWeights, int, KvCache, int)"/>, which appends a
/// layer's new keys and values; <see cref="Advance"/> then commits the positions once every layer has them.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _k; // per layer [h, capacity, d_k]
    private readonly Tensor[] _v; // per layer [h, capacity, d_k]

    /// <summary>Positions the cache can hold (the model's n_positions).</summary>
    public int Capacity { get; }
    /// <summary>Positions filled so far; the next token goes to this position.</summary>
    public int Length { get; private set; }
    public int Layers => _k.Length;

    public KvCache(int layers, int heads, int headDim, int capacity, ScalarType dtype, Device? device = null)
    {
        Capacity = capacity;
        _k = new Tensor[layers];
        _v = new Tensor[layers];
        for (int l = 0; l < layers; l++)
        {
            _k[l] = empty([heads, capacity, headDim], dtype, device ?? CPU);
            _v[l] = empty([heads, capacity, headDim], dtype, device ?? CPU);
        }
    }

    /// <summary>A cache shaped for <paramref name="c"/> (all n_positions).</summary>
    public static KvCache For(Gpt2Config c, ScalarType dtype, Device? device = null) => new(c.NLayer, c.NHead, c.HeadDim, c.NPositions, dtype, device);

    /// <summary>
    /// Stores layer <paramref name="layer"/>'s keys and values of the new positions, k and v [h, T, d_k], at
    /// [Length, Length + T), and returns views of every cached position of that layer, [h, Length + T, d_k].
    /// </summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[^2];
        if (Length + t > Capacity) throw new ArgumentException($"{Length + t} positions exceed the cache's {Capacity}");
        _k[layer].narrow(1, Length, t).copy_(k);
        _v[layer].narrow(1, Length, t).copy_(v);
        return (_k[layer].narrow(1, 0, Length + t), _v[layer].narrow(1, 0, Length + t));
    }

    /// <summary>Commits <paramref name="t"/> positions appended to every layer.</summary>
    public void Advance(int t)
    {
        if (Length + t > Capacity) throw new ArgumentException($"{Length + t} positions exceed the cache's {Capacity}");
        Length += t;
    }

    /// <summary>Forgets every position (the buffers are kept).</summary>
    public void Clear() => Length = 0;

    /// <summary>Forgets the positions from <paramref name="length"/> on (to go back and continue differently).</summary>
    public void Truncate(int length)
    {
        if (length < 0 || length > Length) throw new ArgumentOutOfRangeException(nameof(length), $"{length} is not in [0, {Length}]");
        Length = length;
    }

    public void Dispose()
    {
        foreach (var t in _k) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }
}
