using GaugeTorch.Model;
using GaugeTorch.SafeTensors;
using GaugeTorch.Symmetry;
using static TorchSharp.torch;

namespace GaugeTorch.Pipeline;

/// <summary>Options of <see cref="CheckpointTransformer.Write"/>.</summary>
public sealed record TransformOptions
{
    public long Seed { get; init; }
    /// <summary>The families of the element, in catalog order; null means every family that holds for the checkpoint.</summary>
    public IReadOnlyList<SymmetryFamily>? Families { get; init; }
    /// <summary>Output dtype; null keeps the input's storage dtype.</summary>
    public DType? OutputDType { get; init; }
    /// <summary>Also fold every norm, untie the head and rotate the residual stream (<see cref="FoldedResidualRotation"/>).</summary>
    public bool ResidualRotation { get; init; }
    /// <summary>Tokens on which the float64 check forward measures the export (null or empty: not measured).</summary>
    public int[]? CheckTokens { get; init; }
    /// <summary>Transform NaN or infinite weights instead of refusing them (<see cref="FiniteWeights"/>).</summary>
    public bool AllowNonFinite { get; init; }
}

/// <summary>What <see cref="CheckpointTransformer.Write"/> did.</summary>
public sealed record TransformReport(IReadOnlyList<SymmetryFamily> Families, bool ResidualRotation, bool Untied, DType DType)
{
    /// <summary>Relative error of the row-centred logits of the export as stored against the input (when check tokens were given).</summary>
    public double? StorageLogitsError { get; init; }
}

/// <summary>
/// Writes g·θ for a random group element g as a model directory of the same architecture, through the streaming
/// pipeline: the globals are read and transformed once (the only time they are formed in full), then each layer is
/// read from the memory map in float64, transformed, staged in the output dtype and written in the background while
/// the next layer is computed, and its input pages are released. Output tensors have the input's names and shapes (a
/// head is added when the rotation unties it); mask and other ignored buffers are copied byte for byte. NaN or infinite
/// input weights are refused by name unless <see cref="TransformOptions.AllowNonFinite"/>. The metadata holds the seed
/// and families but no input path, so the same input and seed give the same bytes in any directory.
/// </summary>
public static class CheckpointTransformer
{
    public static TransformReport Write(Checkpoint ck, string outDir, TransformOptions o, IProgress<(int Done, int Total)>? progress = null)
    {
        using var _ = no_grad();
        var t = ck.Traits;
        var arch = ck.Architecture;
        var families = o.Families ?? SymmetryCatalog.For(t);
        var dtype = o.OutputDType ?? ck.StorageDType;
        if (!dtype.IsFloat()) throw new ArgumentException($"output dtype {dtype} is not a float type");
        using var element = new GroupElement(families, o.Seed, 0, t);
        var fold = o.ResidualRotation ? FoldedResidualRotation.Sample(o.Seed, t.Hidden) : null;
        bool untied = !ck.Tied || fold is not null;
        var outTraits = t with { Tied = !untied };
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["gaugetorch_version"] = ToolInfo.Version,
            ["gaugetorch_transform"] = "random gauge element",
            ["gaugetorch_seed"] = o.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["gaugetorch_families"] = string.Join(",", families.Select(f => f.Name)),
            ["gaugetorch_residual_rotation"] = fold is null ? "false" : "true",
            // No source path: it leaked local directory names and made the same seed give different bytes elsewhere.
        };
        var specs = arch.Parameters().Select(p => new TensorSpec(ck.Prefix + p.Name, dtype, p.Shape)).ToList();
        if (untied) specs.Add(new TensorSpec(arch.HeadName, dtype, [t.Vocab, t.Hidden]));
        var buffers = ck.IgnoredBuffers.Select(ck.Store.Entry).ToList();
        specs.AddRange(buffers.Select(b => new TensorSpec(b.Name, b.DType, b.Shape)));
        string Key(string name) => name == arch.HeadName ? name : ck.Prefix + name;

        var stream = new LayerStream(ck);
        using var export = ExportWriter.Create(ck, outDir, specs, metadata);
        foreach (var b in buffers) export.WriteBytes(b.Name, ck.Store.ReadBytes(b.Name));
        int total = t.Layers + 1;
        var storage = dtype.ToScalarType();
        CheckForward? check = null;
        GlobalView? checkIn = null, checkOut = null;
        double? error = null;
        Task? prefetch = null;
        try
        {
            using (var scope = NewDisposeScope())
            {
                var stored = stream.ReadGlobals(ScalarType.Float64);
                if (!o.AllowNonFinite) FiniteWeights.RequireGlobals(ck, stored);
                using var state = new GlobalState(stored, t);
                element.SampleGlobals(stored).Apply(state);
                var g = state.Materialize();
                if (fold is not null) g = fold.TransformGlobals(g);
                foreach (var (name, tensor) in arch.GlobalsFromView(g)) export.Write(Key(name), tensor);
                if (untied && g.Head is null) export.Write(arch.HeadName, g.Embed);
                if (o.CheckTokens is { Length: > 0 } tokens)
                {
                    var asStored = g.Map(x => CheckForward.AsStored(x, storage));
                    if (untied && asStored.Head is null) asStored.Head = asStored.Embed;
                    check = new CheckForward(tokens.Take(t.MaxPositions).ToArray(), t, stored, outTraits, asStored);
                    checkIn = stored.Map(x => x.alias()).DetachFromDisposeScope();
                    checkOut = asStored.Map(x => x.alias()).DetachFromDisposeScope();
                }
            }
            progress?.Report((1, total));
            prefetch = stream.Prefetch(0);
            for (int l = 0; l < t.Layers; l++)
            {
                using var scope = NewDisposeScope();
                prefetch.GetAwaiter().GetResult();
                if (l + 1 < t.Layers) prefetch = stream.Prefetch(l + 1);
                var stored = stream.Read(l, ScalarType.Float64);
                if (!o.AllowNonFinite) FiniteWeights.RequireLayer(ck, l, stored);
                var w = element.SampleLayer(l, stored).Apply(stored, t);
                if (fold is not null) w = fold.TransformLayer(w, t);
                var named = arch.FromView(l, w).Select(p => (Key(p.Name), p.Tensor)).ToList();
                export.StageLayer(named);
                if (check is not null) check.Layer(stored, arch.ToView(l, n => CheckForward.AsStored(named.First(p => p.Item1 == Key(n)).Tensor, storage)));
                stream.Release(l);
                progress?.Report((l + 2, total));
            }
            if (check is not null) error = check.Finish(checkIn!, checkOut!);
            export.Commit(arch.ExportConfig(ck.Config, tied: !untied));
        }
        finally
        {
            // A page-touching task must not outlive this call (the checkpoint's mapping may be closed next).
            try { prefetch?.Wait(); } catch (AggregateException) { }
            check?.Dispose();
            checkIn?.Dispose();
            checkOut?.Dispose();
            fold?.Q.Dispose();
        }
        return new TransformReport(families, fold is not null, untied, dtype) { StorageLogitsError = error };
    }
}
