using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace GaugeTorch.Gauge;

/// <summary>Options of <see cref="CheckpointTransformer.Write"/>.</summary>
public sealed record TransformOptions
{
    public long Seed { get; init; }
    public IReadOnlyList<GaugeFamily> Families { get; init; } = GaugeCatalog.All;
    /// <summary>Output dtype; null keeps the input's storage dtype.</summary>
    public DType? OutputDType { get; init; }
    /// <summary>Also apply the opt-in residual rotation (output untied, LayerNorms folded).</summary>
    public bool ResidualRotation { get; init; }
}

/// <summary>
/// Writes g·θ for a random group element g as a HuggingFace GPT-2 directory, streaming layer by layer: each block is
/// read from the memory-mapped input, transformed in float64, cast to the output dtype and written at its place.
/// Output tensors have the input's names and shapes (an lm_head.weight is added by residual rotation). The directory
/// is assembled in a temporary folder beside the target and renamed into place, so a failure leaves nothing.
/// </summary>
public static class CheckpointTransformer
{
    public static void Write(Gpt2Checkpoint ck, string outDir, TransformOptions o, IProgress<(int Done, int Total)>? progress = null)
    {
        var c = ck.Config;
        var dtype = o.OutputDType ?? ck.StorageDType;
        var element = new GaugeElement(c, o.Families, o.Seed);
        ResidualRotation? rotation = o.ResidualRotation ? ResidualRotation.Sample(new GaugeRandom(o.Seed).For(0, -1, "residual-rotation"), c.NEmbd) : null;
        bool untied = !ck.Tied || rotation is not null;
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["gaugetorch_version"] = ToolInfo.Version,
            ["gaugetorch_transform"] = "random gauge element",
            ["gaugetorch_seed"] = o.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["gaugetorch_families"] = string.Join(",", o.Families.Select(f => f.CliName())),
            ["gaugetorch_residual_rotation"] = rotation is null ? "false" : "true",
            ["gaugetorch_source"] = ck.Directory,
        };
        ExportDirectory.Write(ck, outDir, untied, dtype, metadata, (writer, key) =>
        {
            using var _ = no_grad();
            int total = c.NLayer + 1;
            using (var scope = NewDisposeScope())
            {
                var g = ck.LoadGlobals(ScalarType.Float64);
                var offset = element.SampleGlobal(g.Wte, g.Wpe);
                if (offset is not null)
                {
                    var (wte, wpe) = offset.Apply(g.Wte, g.Wpe);
                    g = new GlobalWeights { Wte = wte, Wpe = wpe, LnFW = g.LnFW, LnFB = g.LnFB, LmHead = g.LmHead };
                }
                if (rotation is not null) g = rotation.TransformGlobals(g, c);
                foreach (var (name, t) in g.Named()) writer.Write(key(name), t);
                if (untied && g.LmHead is null) writer.Write(key(Gpt2Keys.LmHead), g.Wte);
            }
            progress?.Report((1, total));
            for (int l = 0; l < c.NLayer; l++)
            {
                using var scope = NewDisposeScope();
                var stored = ck.LoadLayer(l, ScalarType.Float64);
                var w = element.SampleLayer(l, stored).Apply(stored, c);
                if (rotation is not null) w = rotation.TransformLayer(w, c);
                foreach (var (suffix, t) in w.Named()) writer.Write(key(Gpt2Keys.Layer(l, suffix)), t);
                progress?.Report((l + 2, total));
            }
        });
    }
}
