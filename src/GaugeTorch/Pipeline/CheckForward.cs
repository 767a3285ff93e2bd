using GaugeTorch.Model;
using static TorchSharp.torch;

namespace GaugeTorch.Pipeline;

/// <summary>
/// The float64 check forward of a streamed export: two hidden states advanced layer by layer beside the export, one
/// through the input model as stored and one through the output as it will be stored (each output tensor rounded to
/// its storage dtype and widened again), and at the end the relative error of the row-centred logits (GAUGE.md §4).
/// It holds [T, d] per state plus, until <see cref="Finish"/>, the two heads' globals.
/// </summary>
public sealed class CheckForward : IDisposable
{
    private readonly ModelTraits _in, _out;
    private readonly (Tensor Cos, Tensor Sin)? _ropeIn, _ropeOut;
    private Tensor _xIn, _xOut;

    /// <param name="tokens">Token ids (at most the model's positions).</param>
    /// <param name="input">The input's globals in float64.</param>
    /// <param name="output">The output's globals as stored, in float64.</param>
    public CheckForward(int[] tokens, ModelTraits inputTraits, GlobalView input, ModelTraits outputTraits, GlobalView output)
    {
        using var scope = NewDisposeScope();
        _in = inputTraits;
        _out = outputTraits;
        var tok = tensor(tokens.Select(i => (long)i).ToArray(), ScalarType.Int64);
        _ropeIn = Keep(Forward.RopeTables(_in, 0, tokens.Length));
        _ropeOut = Keep(Forward.RopeTables(_out, 0, tokens.Length));
        _xIn = Forward.Embed(tok, input).DetachFromDisposeScope();
        _xOut = Forward.Embed(tok, output).DetachFromDisposeScope();
    }

    private static (Tensor, Tensor)? Keep((Tensor Cos, Tensor Sin)? r) =>
        r is { } t ? (t.Cos.DetachFromDisposeScope(), t.Sin.DetachFromDisposeScope()) : null;

    /// <summary>Rounds a float64 tensor to a storage dtype and widens it again (the value a reader of the file gets).</summary>
    public static Tensor AsStored(Tensor t64, ScalarType storage)
    {
        if (storage == ScalarType.Float64) return t64.alias();
        using var r = t64.to_type(storage);
        return r.to_type(ScalarType.Float64);
    }

    /// <summary>Advances both states through one block (float64 views: the input layer as stored, the output layer as stored).</summary>
    public void Layer(LayerView input, LayerView output)
    {
        using var scope = NewDisposeScope();
        var a = Forward.Block(_xIn, input, _in, _ropeIn).DetachFromDisposeScope();
        var b = Forward.Block(_xOut, output, _out, _ropeOut).DetachFromDisposeScope();
        _xIn.Dispose();
        _xOut.Dispose();
        (_xIn, _xOut) = (a, b);
    }

    /// <summary>‖Y_out − Y_in‖_F / (‖Y_in‖_F + ε) of the row-centred logits.</summary>
    public double Finish(GlobalView input, GlobalView output)
    {
        using var scope = NewDisposeScope();
        var y = Forward.RowCentre(Forward.Head(_xIn, input, _in));
        var y2 = Forward.RowCentre(Forward.Head(_xOut, output, _out));
        return (y2 - y).norm().item<double>() / (y.norm().item<double>() + Math.Pow(2, -52));
    }

    /// <summary>
    /// The same error with the logits of the final states computed by the caller (<paramref name="logitsIn"/>,
    /// <paramref name="logitsOut"/>: [T, d] → [T, V]), e.g. a head read in chunks from a compact copy.
    /// </summary>
    public double Finish(Func<Tensor, Tensor> logitsIn, Func<Tensor, Tensor> logitsOut)
    {
        using var scope = NewDisposeScope();
        var y = Forward.RowCentre(logitsIn(_xIn));
        var y2 = Forward.RowCentre(logitsOut(_xOut));
        return (y2 - y).norm().item<double>() / (y.norm().item<double>() + Math.Pow(2, -52));
    }

    public void Dispose()
    {
        _xIn.Dispose();
        _xOut.Dispose();
        if (_ropeIn is { } r) { r.Cos.Dispose(); r.Sin.Dispose(); }
        if (_ropeOut is { } s) { s.Cos.Dispose(); s.Sin.Dispose(); }
    }
}
