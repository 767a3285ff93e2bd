using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>
/// The twelve parameters of one transformer block, as stored (Conv1D weights [in, out]). Gauge transformations
/// and canonicalization work on these, one layer at a time. Setting a property does not dispose the old tensor.
/// </summary>
public sealed class LayerWeights : IDisposable
{
    public required Tensor Ln1W { get; set; }      // [d]
    public required Tensor Ln1B { get; set; }      // [d]
    public required Tensor AttnW { get; set; }     // [d, 3d]  columns: Q | K | V, head i owns i·dk..(i+1)·dk of each
    public required Tensor AttnB { get; set; }     // [3d]
    public required Tensor AttnProjW { get; set; } // [d, d]   W_O: rows i·dk.. belong to head i
    public required Tensor AttnProjB { get; set; } // [d]
    public required Tensor Ln2W { get; set; }      // [d]
    public required Tensor Ln2B { get; set; }      // [d]
    public required Tensor FcW { get; set; }       // [d, F]
    public required Tensor FcB { get; set; }       // [F]
    public required Tensor MlpProjW { get; set; }  // [F, d]
    public required Tensor MlpProjB { get; set; }  // [d]

    /// <summary>(key suffix, tensor) pairs in <see cref="Gpt2Keys.LayerSuffixes"/> order.</summary>
    public IEnumerable<(string Suffix, Tensor Tensor)> Named()
    {
        yield return ("ln_1.weight", Ln1W);
        yield return ("ln_1.bias", Ln1B);
        yield return ("attn.c_attn.weight", AttnW);
        yield return ("attn.c_attn.bias", AttnB);
        yield return ("attn.c_proj.weight", AttnProjW);
        yield return ("attn.c_proj.bias", AttnProjB);
        yield return ("ln_2.weight", Ln2W);
        yield return ("ln_2.bias", Ln2B);
        yield return ("mlp.c_fc.weight", FcW);
        yield return ("mlp.c_fc.bias", FcB);
        yield return ("mlp.c_proj.weight", MlpProjW);
        yield return ("mlp.c_proj.bias", MlpProjB);
    }

    public static LayerWeights FromFunc(Func<string, Tensor> get) => new()
    {
        Ln1W = get("ln_1.weight"), Ln1B = get("ln_1.bias"),
        AttnW = get("attn.c_attn.weight"), AttnB = get("attn.c_attn.bias"),
        AttnProjW = get("attn.c_proj.weight"), AttnProjB = get("attn.c_proj.bias"),
        Ln2W = get("ln_2.weight"), Ln2B = get("ln_2.bias"),
        FcW = get("mlp.c_fc.weight"), FcB = get("mlp.c_fc.bias"),
        MlpProjW = get("mlp.c_proj.weight"), MlpProjB = get("mlp.c_proj.bias"),
    };

    public LayerWeights Clone()
    {
        var d = Named().ToDictionary(p => p.Suffix, p => p.Tensor);
        return FromFunc(s => d[s].clone());
    }

    public LayerWeights To(ScalarType dtype)
    {
        var d = Named().ToDictionary(p => p.Suffix, p => p.Tensor);
        return FromFunc(s => d[s].to_type(dtype));
    }

    /// <summary>Moves every tensor out of the current dispose scope.</summary>
    public LayerWeights MoveToOuterDisposeScope()
    {
        foreach (var (_, t) in Named()) t.MoveToOuterDisposeScope();
        return this;
    }

    public void Dispose()
    {
        foreach (var (_, t) in Named()) t.Dispose();
    }
}

/// <summary>The parameters outside the blocks. <see cref="LmHead"/> is null for a tied head.</summary>
public sealed class GlobalWeights : IDisposable
{
    public required Tensor Wte { get; set; }  // [V, d]
    public required Tensor Wpe { get; set; }  // [P, d]
    public required Tensor LnFW { get; set; } // [d]
    public required Tensor LnFB { get; set; } // [d]
    public Tensor? LmHead { get; set; }       // [V, d] when untied

    public Tensor Head => LmHead ?? Wte;

    public IEnumerable<(string Name, Tensor Tensor)> Named()
    {
        yield return (Gpt2Keys.Wte, Wte);
        yield return (Gpt2Keys.Wpe, Wpe);
        yield return (Gpt2Keys.LnFWeight, LnFW);
        yield return (Gpt2Keys.LnFBias, LnFB);
        if (LmHead is not null) yield return (Gpt2Keys.LmHead, LmHead);
    }

    public GlobalWeights Clone() => new()
    {
        Wte = Wte.clone(), Wpe = Wpe.clone(), LnFW = LnFW.clone(), LnFB = LnFB.clone(), LmHead = LmHead?.clone(),
    };

    public GlobalWeights MoveToOuterDisposeScope()
    {
        foreach (var (_, t) in Named()) t.MoveToOuterDisposeScope();
        return this;
    }

    public void Dispose()
    {
        foreach (var (_, t) in Named()) t.Dispose();
    }
}
