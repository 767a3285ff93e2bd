using System.Text.Json.Nodes;
using GaugeTorch.SafeTensors;

namespace GaugeTorch.Architectures.Gpt2;

/// <summary>
/// Writes a standard HuggingFace GPT-2 directory derived from an input checkpoint: config.json (tie_word_embeddings
/// adjusted), tokenizer/side files copied, mask buffers copied byte for byte, and one model.safetensors holding every
/// parameter under the input's key names, filled by a producer that may write tensors in any order. Everything is
/// assembled in a hidden temporary folder beside the target and renamed into place at the end, so a failure leaves no
/// partial output; the input directory is never written to.
/// </summary>
public static class ExportDirectory
{
    /// <param name="fill">Receives the writer and a function mapping an unprefixed parameter name to its stored key.</param>
    public static void Write(Gpt2Checkpoint ck, string outDir, bool untied, DType dtype, IReadOnlyDictionary<string, string> metadata,
                             Action<SafeTensorWriter, Func<string, string>> fill)
    {
        string target = Path.GetFullPath(outDir);
        OutputGuard.RefuseInputDirectory(target, ck.Directory);
        if (File.Exists(target)) throw new IOException($"{target}: exists and is a file");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"{target}: directory exists and is not empty (remove it or choose another --out)");
        if (!dtype.IsFloat()) throw new ArgumentException($"output dtype {dtype} is not a float type");
        string parent = Path.GetDirectoryName(target.TrimEnd('/'))!;
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, "." + Path.GetFileName(target.TrimEnd('/')) + "." + Guid.NewGuid().ToString("N")[..8] + ".partial");
        Directory.CreateDirectory(temp);
        try
        {
            var c = ck.Config;
            string Key(string name) => name == Gpt2Keys.LmHead ? Gpt2Keys.LmHead : ck.Prefix + name;
            var specs = Gpt2Keys.Parameters(c).Select(p => new TensorSpec(Key(p.Name), dtype, p.Shape)).ToList();
            if (untied) specs.Add(new TensorSpec(Gpt2Keys.LmHead, dtype, [c.VocabSize, c.NEmbd]));
            var buffers = ck.Store.Entries.Where(e => Gpt2Keys.BufferSuffixes.Any(b => e.Name.EndsWith("." + b, StringComparison.Ordinal))).ToList();
            specs.AddRange(buffers.Select(b => new TensorSpec(b.Name, b.DType, b.Shape)));
            using (var writer = SafeTensorWriter.Create(Path.Combine(temp, SafeTensorStore.SingleFileName), specs, metadata, ck.InputFiles))
            {
                foreach (var b in buffers) writer.WriteBytes(b.Name, ck.Store.ReadBytes(b.Name));
                fill(writer, Key);
                writer.Commit();
            }
            var config = JsonNode.Parse(File.ReadAllText(ck.ConfigPath))!.AsObject();
            config["tie_word_embeddings"] = !untied;
            File.WriteAllText(Path.Combine(temp, "config.json"), config.ToJsonString(new() { WriteIndented = true }));
            foreach (var side in ck.SideFiles()) File.Copy(side, Path.Combine(temp, Path.GetFileName(side)));
            if (Directory.Exists(target)) Directory.Delete(target);
            Directory.Move(temp, target);
        }
        catch
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
    }
}
