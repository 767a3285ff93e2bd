using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.Model;
using GaugeTorch.Pipeline;
using GaugeTorch.SafeTensors;
using GaugeTorch.Symmetry;
using GaugeTorch.Tests.Fixtures;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Pipeline;

/// <summary>
/// The streaming pipeline: mapped layer reads give exactly what the checkpoint stores (every storage dtype, both
/// compute dtypes); staged layer writes give the same bytes as direct writes; the float64 check forward measures an
/// export; a failed export leaves nothing behind.
/// </summary>
public class PipelineTests
{
    public static TheoryData<string> StorageTypes => new() { "F32", "F64", "F16", "BF16" };

    private static string Fixture(string dtype) =>
        TestCheckpoints.Get("pipe-" + dtype, null, new MakeCheckpointOptions { Seed = 31, DType = DTypes.ParseUser(dtype), Prefix = dtype == "F16", MaskBuffers = dtype == "BF16" });

    [Theory]
    [MemberData(nameof(StorageTypes))]
    public void MappedLayerReadsGiveWhatTheCheckpointStores(string dtype)
    {
        using var ck = Checkpoint.Open(Fixture(dtype));
        var stream = new LayerStream(ck);
        foreach (var compute in new[] { ScalarType.Float64, ScalarType.Float32 })
        {
            using var scope = NewDisposeScope();
            for (int l = 0; l < ck.Traits.Layers; l++)
            {
                var a = stream.Read(l, compute);
                var b = ck.LoadLayer(l, compute);
                foreach (var ((role, x), (_, y)) in a.Named().Zip(b.Named()))
                {
                    Assert.Equal(compute, x.dtype);
                    Assert.True(x.shape.SequenceEqual(y.shape) && (x == y).all().item<bool>(), $"{dtype} layer {l} {role} ({compute}) differs");
                }
                stream.Release(l);
            }
            var ga = stream.ReadGlobals(compute);
            var gb = ck.LoadGlobals(compute);
            foreach (var ((role, x), (_, y)) in ga.Named().Zip(gb.Named())) Assert.True(x.shape.SequenceEqual(y.shape) && (x == y).all().item<bool>(), $"{dtype} {role} differs");
        }
    }

    [Theory]
    [MemberData(nameof(StorageTypes))]
    public void StagedLayerWritesGiveTheSameBytesAsDirectWrites(string dtype)
    {
        using var ck = Checkpoint.Open(Fixture("F32"));
        var dt = DTypes.ParseUser(dtype);
        using var scope = NewDisposeScope();
        var gen = new Generator(5);
        var tensors = Enumerable.Range(0, 6).Select(i => ($"t{i}", randn([37 + i, 129], ScalarType.Float64, generator: gen) * Math.Pow(10, i - 3))).ToList();
        string root = TestCheckpoints.NewTempDir("staged");
        var specs = tensors.Select(p => new TensorSpec(p.Item1, dt, p.Item2.shape)).ToList();
        using (var w = ExportWriter.Create(ck, Path.Combine(root, "staged"), specs, new Dictionary<string, string> { ["format"] = "pt" }))
        {
            w.StageLayer(tensors.Take(2).ToList());
            w.StageLayer(tensors.Skip(2).Take(3).ToList());   // two buffers in flight
            w.StageLayer(tensors.Skip(5).ToList());
            w.Commit(new System.Text.Json.Nodes.JsonObject { ["model_type"] = "gpt2" });
        }
        string direct = Path.Combine(root, "direct.safetensors");
        SafeTensorWriter.WriteAll(direct, tensors.Select(p => KeyValuePair.Create(p.Item1, p.Item2.to(dt.ToScalarType()))).ToList(), new Dictionary<string, string> { ["format"] = "pt" });
        Assert.Equal(File.ReadAllBytes(direct), File.ReadAllBytes(Path.Combine(root, "staged", SafeTensorStore.SingleFileName)));
        Assert.True(File.Exists(Path.Combine(root, "staged", "config.json")));
        Assert.Equal([Path.Combine(root, "staged")], Directory.GetDirectories(root));   // no temporary folder left beside the output
    }

    [Fact]
    public void AnExportThatIsNotCommittedLeavesNothing()
    {
        using var ck = Checkpoint.Open(Fixture("F32"));
        string root = TestCheckpoints.NewTempDir("uncommitted");
        using (var scope = NewDisposeScope())
        using (var w = ExportWriter.Create(ck, Path.Combine(root, "out"), [new TensorSpec("a", DType.F32, [4, 4])], new Dictionary<string, string>()))
            w.StageLayer([("a", ones(4, 4, ScalarType.Float64))]);
        Assert.Empty(Directory.GetFileSystemEntries(root));
        var e = Assert.Throws<IOException>(() => ExportWriter.Create(ck, ck.Directory, [], new Dictionary<string, string>()));
        Assert.Contains("input", e.Message);
    }

    [Theory]
    [InlineData(null, 1e-13, 0.0)]
    [InlineData("F32", 1e-5, 1e-10)]
    public void TheCheckForwardMeasuresTheExportAsStored(string? outType, double max, double min)
    {
        using var ck = Checkpoint.Open(TestCheckpoints.Get("pipe-check", null, new MakeCheckpointOptions { Seed = 33, DType = DType.F64, Untied = true }));
        string outDir = Path.Combine(TestCheckpoints.NewTempDir("check"), "t");
        var report = CheckpointTransformer.Write(ck, outDir, new TransformOptions
        {
            Seed = 2, OutputDType = outType is null ? null : DTypes.ParseUser(outType), CheckTokens = [4, 8, 15, 16, 23, 42, 7, 1],
        });
        Assert.Equal(SymmetryCatalog.For(ck.Traits), report.Families);
        Assert.True(report.Untied);
        Assert.NotNull(report.StorageLogitsError);
        Assert.InRange(report.StorageLogitsError!.Value, min, max);
    }
}
