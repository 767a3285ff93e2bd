using System.Text.Json.Nodes;
using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Canonical;

public class CanonicalCliTests(ITestOutputHelper output)
{
    /// <summary>Runs gaugetorch in-process (the shared <see cref="CliRunner"/>).</summary>
    public static (int Exit, string Out, string Err) Cli(params string[] args) => CliRunner.Run(args);

    /// <summary>Writes an in-memory model as a HuggingFace checkpoint (no prefix, single file) in <paramref name="dtype"/>.</summary>
    public static string Save(TestGauge.Model m, Gpt2Config c, DType dtype, string hint)
    {
        string dir = TestCheckpoints.NewTempDir(hint);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        using var scope = NewDisposeScope();
        for (int l = 0; l < m.Layers.Count; l++)
            foreach (var (s, t) in m.Layers[l].Named()) tensors.Add(new(Gpt2Keys.Layer(l, s), t.to_type(dtype.ToScalarType())));
        foreach (var (n, t) in m.Globals.Named()) tensors.Add(new(n, t.to_type(dtype.ToScalarType())));
        SafeTensorWriter.WriteAll(Path.Combine(dir, SafeTensorStore.SingleFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(dir, "config.json"), (c with { TieWordEmbeddings = m.Globals.LmHead is null }).ToJsonText());
        return dir;
    }

    [Fact]
    public void CanonicalizeCheckpointWritesAStandardCanonicalDirectory()
    {
        var opts = new MakeCheckpointOptions { Seed = 21, DType = DType.F32, Shards = 2, Prefix = true, MaskBuffers = true };
        string input = TestCheckpoints.Get("canon-cli-sharded", TestCheckpoints.Tiny, opts);
        File.WriteAllText(Path.Combine(input, "tokenizer_config.json"), "{\"model_max_length\": 32}");
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("canon-cli"), "out");
        string json = outDir + ".json";
        var (rc, _, err) = Cli("canonicalize-checkpoint", input, "--out", outDir, "--json", json);
        Assert.True(rc == 0, err);
        Assert.Equal([outDir], Directory.GetDirectories(Path.GetDirectoryName(outDir)!));   // no temp dir left

        using var a = Gpt2Checkpoint.Open(input);
        using var b = Gpt2Checkpoint.Open(outDir);
        var ea = a.Store.Entries.OrderBy(x => x.Name, StringComparer.Ordinal).ToList();
        var eb = b.Store.Entries.OrderBy(x => x.Name, StringComparer.Ordinal).ToList();
        Assert.Equal(ea.Select(x => (x.Name, x.DType, string.Join(",", x.Shape))), eb.Select(x => (x.Name, x.DType, string.Join(",", x.Shape))));
        Assert.Equal(a.Store.Files.Select(f => Path.GetFileName(f.Path)), b.Store.Files.Select(f => Path.GetFileName(f.Path)));
        Assert.True(b.HasMaskBuffers);
        Assert.Equal(a.Store.ReadBytes("transformer.h.1.attn.bias"), b.Store.ReadBytes("transformer.h.1.attn.bias"));
        Assert.Equal(File.ReadAllText(a.ConfigPath), File.ReadAllText(b.ConfigPath));
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer_config.json")));
        Assert.Equal("pt", b.Store.Metadata["format"]);
        Assert.Equal("full", b.Store.Metadata["gaugetorch.form"]);

        // The stored tensors are the in-memory canonical form rounded to F32.
        var c = a.Config;
        using var m = TestGauge.Load(a);
        using var k = CanonicalFormTests.Canon(m, c, CanonicalFormKind.Full, out _);
        using var stored = TestGauge.Load(b);
        double diff = CanonicalFormTests.MaxRelDiff(k, stored);
        Assert.True(diff < 1e-6, $"stored vs in-memory canonical: {diff:E2}");

        var report = JsonNode.Parse(File.ReadAllText(json))!;
        double storageErr = report["logits_error_storage"]!.GetValue<double>();
        output.WriteLine($"F32 export: storage logits error {storageErr:E2}");
        Assert.True(storageErr > 0 && storageErr < 1e-5);
        Assert.Equal(0, report["near_tied_heads"]!.GetValue<int>());
        // The reported storage error is what the exported file really does.
        double real = CanonicalFormTests.LogitsError(m, stored, c);
        Assert.True(Math.Abs(real - storageErr) <= 0.05 * storageErr + 1e-12, $"measured {real:E3} vs reported {storageErr:E3}");

        // Refusals: into the input directory, into a non-empty directory; --dtype float64 and --form paper.
        Assert.Equal(2, Cli("canonicalize-checkpoint", input, "--out", input).Exit);
        Assert.Equal(2, Cli("canonicalize-checkpoint", input, "--out", outDir).Exit);
        Assert.Equal(2, Cli("canonicalize-checkpoint", input, "--out", outDir + "-x", "--form", "weird").Exit);
        Assert.False(Directory.Exists(outDir + "-x"));
        string out64 = outDir + "-f64";
        Assert.Equal(0, Cli("canonicalize-checkpoint", input, "--out", out64, "--dtype", "float64", "--form", "paper", "--json", out64 + ".json").Exit);
        double paperErr = JsonNode.Parse(File.ReadAllText(out64 + ".json"))!["logits_error_storage"]!.GetValue<double>();
        Assert.True(paperErr < 1e-13, $"float64 paper export: {paperErr:E2}");
        Assert.Equal(0, Cli("canonicalize-checkpoint", input, "--out", outDir + "-nocheck", "--check-tokens", "0", "--json", outDir + "-nocheck.json").Exit);
        Assert.Null(JsonNode.Parse(File.ReadAllText(outDir + "-nocheck.json"))!["logits_error_storage"]);
        using var b64 = Gpt2Checkpoint.Open(out64);
        Assert.Equal(DType.F64, b64.StorageDType);
        Assert.Equal("paper", b64.Store.Metadata["gaugetorch.form"]);
        using var p64 = TestGauge.Load(b64);
        Assert.True(CanonicalFormTests.LogitsError(m, p64, c) < 1e-13);
    }

    [Fact]
    public void CompareFindsTheTransformEquivalentAndTheNoisyHeadNot()
    {
        foreach (var (name, dtype) in new[] { ("canon-tiny-f32", DType.F32), ("canon-small3-f64", DType.F64), ("canon-tiny-f64-untied", DType.F64), ("canon-small3-f32-untied", DType.F32) })
        {
            using var ck = CanonicalFormTests.Open(name);
            var c = ck.Config;
            string a = ck.Directory;
            using var m = TestGauge.Load(ck);
            using var t = TestGauge.Transform(m, c, 3);
            string transformed = Save(t, c, dtype, "transformed");
            var (rc, json, err) = Cli("compare", a, transformed, "--json", "-");
            Assert.True(rc == 0, err + json);
            double largest = JsonNode.Parse(json)!["largest"]!.GetValue<double>();
            output.WriteLine($"{name}: vs random transform stored {dtype}: largest distance {largest:E2}");
            if (dtype == DType.F64) Assert.True(largest < 1e-12);

            // 1e-3 noise on layer 1, head 2 (its query and value columns).
            using var noisy = new TestGauge.Model(m.Layers.Select(l => l.Clone()).ToList(), m.Globals.Clone());
            long d = c.NEmbd, dk = c.HeadDim;
            using (no_grad())
            {
                var gen = new Generator(99);
                foreach (long off in new[] { 0L, 2 * d })
                {
                    var blk = noisy.Layers[1].AttnW.narrow(1, off + 2 * dk, dk);
                    blk.add_(randn(blk.shape, ScalarType.Float64, generator: gen) * 1e-3);
                }
            }
            string noisyDir = Save(noisy, c, dtype, "noisy");
            (rc, json, err) = Cli("compare", a, noisyDir, "--json", "-");
            Assert.True(rc == 1, err + json);
            var o = JsonNode.Parse(json)!;
            string where = o["largest_where"]!.GetValue<string>();
            output.WriteLine($"{name}: vs noisy head: largest {o["largest"]!.GetValue<double>():E2} at {where}");
            Assert.StartsWith("layer 1 head 2 ", where);
            // Every other head of every layer is still equivalent.
            foreach (var l in o["layers"]!.AsArray())
                foreach (var h in l!["heads"]!.AsArray())
                    if (!(l["layer"]!.GetValue<int>() == 1 && h!["head_a"]!.GetValue<int>() == 2))
                        Assert.True(h!["distance"]!.GetValue<double>() < 1e-4);
            // The table form names the head too, states the tolerance and how it was derived, puts the function
            // beside the weights, and exits 1.
            string text;
            (rc, text, _) = Cli("compare", a, noisyDir);
            Assert.Equal(1, rc);
            Assert.Contains("measured rounding", text);
            Assert.Contains("function: row-centred logits differ by", text);
            Assert.Contains("not equivalent", text);
            Assert.Contains("layer 1 head 2", text);
        }
        Assert.Equal(2, Cli("compare", "/nonexistent/a", "/nonexistent/b").Exit);
    }
}
