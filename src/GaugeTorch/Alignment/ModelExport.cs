using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.SafeTensors;
using static TorchSharp.torch;

namespace GaugeTorch.Alignment;

/// <summary>Writes an in-memory model as a standard checkpoint directory (atomic: a temporary renamed into place).</summary>
public static class ModelExport
{
    /// <summary>
    /// Writes <paramref name="m"/> in the layout of <paramref name="template"/> (names, prefix, buffers, side files,
    /// config with the head tied or not as <paramref name="m"/> is), every parameter cast once to <paramref name="dtype"/>.
    /// </summary>
    public static void Write(Checkpoint template, ModelWeights m, string outDir, DType dtype, IReadOnlyDictionary<string, string> metadata)
    {
        using var _ = no_grad();
        var arch = template.Architecture;
        var t = m.Traits;
        bool untied = !t.Tied;
        var specs = arch.Parameters().Select(p => new TensorSpec(template.Prefix + p.Name, dtype, p.Shape)).ToList();
        if (untied) specs.Add(new TensorSpec(arch.HeadName, dtype, [t.Vocab, t.Hidden]));
        var buffers = template.IgnoredBuffers.Select(template.Store.Entry).ToList();
        specs.AddRange(buffers.Select(b => new TensorSpec(b.Name, b.DType, b.Shape)));
        string Key(string name) => name == arch.HeadName ? name : template.Prefix + name;
        var meta = new Dictionary<string, string>(metadata) { ["format"] = "pt", ["gaugetorch_version"] = ToolInfo.Version };
        using var export = ExportWriter.Create(template, outDir, specs, meta);
        foreach (var b in buffers) export.WriteBytes(b.Name, template.Store.ReadBytes(b.Name));
        using (var scope = NewDisposeScope())
        {
            var g = m.Globals;
            if (untied && g.Head is null) g = new GlobalView { Embed = g.Embed, Positions = g.Positions, FinalNorm = g.FinalNorm, Head = g.Embed };
            foreach (var (name, tensor) in arch.GlobalsFromView(g)) export.Write(Key(name), tensor.contiguous());
        }
        for (int l = 0; l < t.Layers; l++)
        {
            using var scope = NewDisposeScope();
            export.StageLayer(arch.FromView(l, m.Layers[l]).Select(p => (Key(p.Name), p.Tensor.contiguous())).ToList());
        }
        export.Commit(arch.ExportConfig(template.Config, tied: !untied));
    }

    /// <summary>Loads every tensor of <paramref name="ck"/> in float64, refusing non-finite weights (naming file and tensor) unless allowed.</summary>
    public static ModelWeights Load(Checkpoint ck, bool allowNonFinite = false)
    {
        var m = ModelWeights.Load(ck, ScalarType.Float64);
        if (allowNonFinite) return m;
        try
        {
            FiniteWeights.RequireGlobals(ck, m.Globals);
            for (int l = 0; l < m.Layers.Count; l++) FiniteWeights.RequireLayer(ck, l, m.Layers[l]);
        }
        catch
        {
            m.Dispose();
            throw;
        }
        return m;
    }
}
