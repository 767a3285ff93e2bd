using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests.Model;

/// <summary>
/// Zero-copy loading (issue 12, item 2): float32 parameters of a float32 file are views of the file's read-only private
/// mapping, give the same logits bit for bit as the copying load, outlive the checkpoint object, and the mapping goes
/// away deterministically when the last tensor over it is disposed.
/// </summary>
public class ZeroCopyLoadingTests
{
    private static readonly int[] Tokens = [3, 14, 15, 92, 65, 35, 89, 79];

    /// <summary>A private copy of a tiny F32 checkpoint, so that /proc/self/maps lines name only this test's file.</summary>
    private static string PrivateModel(string hint, bool untied)
    {
        string src = TestCheckpoints.Get(untied ? "zc-untied" : "zc-tied", options: new MakeCheckpointOptions { Seed = 1207, Untied = untied });
        string dir = TestCheckpoints.NewTempDir(hint);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static bool Mapped(string dir)
    {
        string file = Path.GetFullPath(Path.Combine(dir, SafeTensorStore.SingleFileName));
        return File.ReadLines("/proc/self/maps").Any(l => l.EndsWith(file, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MappedParametersGiveTheCopiedModelsLogitsBitForBit(bool untied)
    {
        string dir = PrivateModel("zc-logits", untied);
        using var ck = Gpt2Checkpoint.Open(dir);
        Assert.Equal(DType.F32, ck.StorageDType);
        using var copied = Gpt2Model.Load(ck, torch.ScalarType.Float32, zeroCopy: false);
        using var mapped = Gpt2Model.Load(ck, torch.ScalarType.Float32, zeroCopy: true);

        // Every parameter of the mapped model points into the file's bytes; none of the copied model's does.
        var file = ck.Store.Files.Single();
        foreach (var (name, p) in mapped.named_parameters())
        {
            var e = ck.Store.Entry(ck.Key(name));
            Assert.True(file.IsZeroCopy(e, NativeTensorAccess.DataPointer(p)), name);
        }
        foreach (var (name, p) in copied.named_parameters())
            Assert.False(file.IsZeroCopy(ck.Store.Entry(ck.Key(name)), NativeTensorAccess.DataPointer(p)), name);

        using var a = copied.Logits(Tokens);
        using var b = mapped.Logits(Tokens);
        Assert.Equal(a.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits), b.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits));
        Assert.True(a.abs().max().item<float>() > 0);
        // The file's bytes are unchanged by the forward (nothing wrote through the mapping).
        Assert.Equal(File.ReadAllBytes(Path.Combine(TestCheckpoints.Get(untied ? "zc-untied" : "zc-tied", options: new MakeCheckpointOptions { Seed = 1207, Untied = untied }), SafeTensorStore.SingleFileName)),
                     File.ReadAllBytes(Path.Combine(dir, SafeTensorStore.SingleFileName)));
    }

    [Fact]
    public void MappingOutlivesTheCheckpointAndGoesWithTheLastTensor()
    {
        string dir = PrivateModel("zc-life", untied: false);
        float[] expected;
        using (var ck = Gpt2Checkpoint.Open(dir))
        using (var m = Gpt2Model.Load(ck, torch.ScalarType.Float32, zeroCopy: false))
        using (var l = m.Logits(Tokens))
            expected = l.data<float>().ToArray();
        Assert.False(Mapped(dir));

        Gpt2Model model;
        using (var ck = Gpt2Checkpoint.Open(dir))
            model = Gpt2Model.Load(ck, torch.ScalarType.Float32, zeroCopy: true);
        // The checkpoint is disposed; the parameters still hold the private mapping.
        Assert.True(Mapped(dir), "the parameters lost their mapping when the checkpoint was disposed");
        using (var l = model.Logits(Tokens))
            Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), l.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits));
        model.Dispose();
        Assert.False(Mapped(dir), "the mapping outlived the model (it must not wait for the garbage collector)");
    }

    [Fact]
    public void OtherDTypesConvertAsBefore()
    {
        string dir = PrivateModel("zc-f64", untied: false);
        using var ck = Gpt2Checkpoint.Open(dir);
        using var m64 = Gpt2Model.Load(ck, torch.ScalarType.Float64, zeroCopy: true);
        using var m32 = Gpt2Model.Load(ck, torch.ScalarType.Float32, zeroCopy: false);
        var file = ck.Store.Files.Single();
        foreach (var (name, p) in m64.named_parameters())
        {
            Assert.Equal(torch.ScalarType.Float64, p.dtype);
            Assert.False(file.IsZeroCopy(ck.Store.Entry(ck.Key(name)), NativeTensorAccess.DataPointer(p)), name);
        }
        using var a = m64.Logits(Tokens);
        using var b = m32.Logits(Tokens);
        Assert.True(a.to_type(torch.ScalarType.Float32).sub(b).abs().max().item<float>() < 1e-4f);
    }
}
