using GaugeTorch.Canonical.Gpt2;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace GaugeTorch.Tests.Canonical;

/// <summary>
/// The streaming export of canonicalize-checkpoint (fused kernels, direct-I/O range writes, Gram/Cholesky factors)
/// against the in-memory canonical form and against plain buffered writes.
/// </summary>
public class CanonicalStreamingTests(ITestOutputHelper output)
{
    /// <summary>Layers of ~200 KB (many pages, none aligned), so that direct I/O writes whole pages in the middle.</summary>
    private static readonly Gpt2Config Mid = new() { NLayer = 2, NEmbd = 72, NHead = 3, NInner = 200, VocabSize = 131, NPositions = 24 };

    private static string Export(string input, string hint, bool direct, params string[] extra)
    {
        string outDir = Path.Combine(TestCheckpoints.NewTempDir(hint), "out");
        string? saved = Environment.GetEnvironmentVariable("GAUGETORCH_NO_DIRECT_IO");
        Environment.SetEnvironmentVariable("GAUGETORCH_NO_DIRECT_IO", direct ? null : "1");
        try
        {
            var (rc, _, err) = CliRunner.Run(["canonicalize-checkpoint", input, "--out", outDir, .. extra]);
            Assert.True(rc == 0, err);
        }
        finally
        {
            Environment.SetEnvironmentVariable("GAUGETORCH_NO_DIRECT_IO", saved);
        }
        return outDir;
    }

    [Theory]
    [InlineData(DType.F32, 1)]
    [InlineData(DType.F16, 1)]
    [InlineData(DType.BF16, 1)]
    [InlineData(DType.F64, 1)]
    [InlineData(DType.F32, 3)]   // shards split layers between files: a layer is staged as several runs
    public void ExportIsTheInMemoryFormRoundedOnceAndDirectEqualsBufferedWrites(DType dtype, int shards)
    {
        var opts = new MakeCheckpointOptions { Seed = 31, DType = dtype, Prefix = dtype == DType.F16, MaskBuffers = true, Shards = shards };
        string input = TestCheckpoints.Get($"canon-stream-{dtype}-{shards}", Mid, opts);
        string direct = Export(input, "canon-direct", direct: true, "--check-tokens", "0");
        string buffered = Export(input, "canon-buffered", direct: false, "--check-tokens", "0");
        var files = Directory.GetFiles(direct, "*.safetensors").Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(shards, files.Length);
        foreach (var file in files)
        {
            byte[] a = File.ReadAllBytes(Path.Combine(direct, file!));
            byte[] b = File.ReadAllBytes(Path.Combine(buffered, file!));
            Assert.Equal(b.Length, a.Length);
            Assert.True(a.AsSpan().SequenceEqual(b), $"{file}: direct-I/O and buffered exports differ");
        }

        // Every stored tensor is exactly the float64 in-memory canonical form rounded to the storage dtype.
        using var ck = Gpt2Checkpoint.Open(input);
        using var outCk = Gpt2Checkpoint.Open(direct);
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        // The in-memory form at the same storage precision (its tie thresholds scale with the dtype's rounding).
        using var k = CanonicalFormTests.Canon(m, c, CanonicalFormKind.Full, out _, CanonicalPrecision.For(dtype, dtype));
        var st = dtype.ToScalarType();
        for (int l = 0; l < c.NLayer; l++)
            foreach (var (suffix, t) in k.Layers[l].Named())
            {
                using var want = t.to_type(st).to_type(ScalarType.Float64);
                using var got = outCk.Load(Gpt2Keys.Layer(l, suffix), ScalarType.Float64);
                double diff = (want - got).abs().max().item<double>();
                Assert.True(diff == 0, $"{dtype} layer {l} {suffix}: differs from the rounded in-memory form by {diff:E2}");
            }
        foreach (var (name, t) in k.Globals.Named())
        {
            using var want = t.to_type(st).to_type(ScalarType.Float64);
            using var got = outCk.Load(name, ScalarType.Float64);
            Assert.True((want - got).abs().max().item<double>() == 0, $"{dtype} {name}");
        }
        Assert.Equal(ck.Store.ReadBytes(ck.Key(Gpt2Keys.Layer(1, "attn.bias"))), outCk.Store.ReadBytes(outCk.Key(Gpt2Keys.Layer(1, "attn.bias"))));
    }

    [Fact]
    public void CholeskyFactorsMatchHouseholderAndIllConditionedHeadsFallBack()
    {
        var gen = new Generator(7);
        long b = 6, m = 90, r = 12;
        var a = randn(b, m, r, ScalarType.Float64, generator: gen);
        var bb = randn(b, m + 5, r, ScalarType.Float64, generator: gen);
        // Entry 4: singular values spread over 10⁶ (κ(AᵀA) = 10¹²): the Gram route would lose ~1e-4, so it must fall back.
        var (q, _) = linalg.qr(randn(m, r, ScalarType.Float64, generator: gen));
        var spread = pow(10.0, -linspace(0, 6, r, ScalarType.Float64));
        a[4] = matmul(q * spread.unsqueeze(0), linalg.qr(randn(r, r, ScalarType.Float64, generator: gen)).Q);
        a[5].zero_();                                             // a zero head: Cholesky fails outright

        var (ta, s, tb, fallbacks) = CanonicalMath.BalancingTransforms(a, bb, CanonicalForm.RankTolerance);
        output.WriteLine($"fallbacks {fallbacks}");
        Assert.Equal(2, fallbacks);

        // Reference: the same formula with Householder R factors for every entry.
        var r1 = linalg.qr(a, linalg.QRMode.R).R;
        var r2 = linalg.qr(bb, linalg.QRMode.R).R;
        var (uc, sRef, vch) = linalg.svd(matmul(r1, r2.transpose(1, 2)), fullMatrices: false);
        var x = matmul(a, ta);
        var y = matmul(bb, tb);
        for (long i = 0; i < b; i++)
        {
            // The balanced factors reproduce the composite and are balanced: XᵀX = YᵀY = diag(S).
            var composite = matmul(a[i], bb[i].t());
            double scale = composite.norm().item<double>() + 1e-300;
            double rec = (matmul(x[i], y[i].t()) - composite).norm().item<double>() / scale;
            var keep = s[i] > 0;
            double sMax = s[i].max().item<double>() + 1e-300;
            double sdiff = ((s[i] - where(keep, sRef[i], zeros_like(sRef[i]))).abs().max().item<double>()) / sMax;
            output.WriteLine($"entry {i}: reconstruction {rec:E2}, singular values {sdiff:E2}");
            Assert.True(i == 5 ? x[i].abs().max().item<double>() == 0 : rec < 1e-12, $"entry {i}: composite error {rec:E2}");
            Assert.True(sdiff < 1e-12, $"entry {i}: singular values differ by {sdiff:E2}");
            var gx = matmul(x[i].t(), x[i]);
            var gy = matmul(y[i].t(), y[i]);
            Assert.True((gx - gy).abs().max().item<double>() <= 1e-11 * sMax, $"entry {i}: not balanced");
            Assert.True((gx - diag(s[i])).abs().max().item<double>() <= 1e-11 * sMax, $"entry {i}: Gram is not diag(S)");
        }
    }

    [Fact]
    public unsafe void StorageRoundingMatchesLibtorchBitForBit()
    {
        var values = cat([randn(4000, ScalarType.Float64) * 3, tensor(new[] { 0.0, -0.0, 1e-40, -1e-30, 65504.0, 65520.0, 1e39, double.NaN, double.PositiveInfinity, 3.0000001, 1.00390625, 1.01171875 })]);
        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16, DType.F64 })
        {
            using var want = values.to_type(dtype.ToScalarType());
            using var got = empty(values.shape, dtype.ToScalarType());
            CanonicalKernels.FromFloat64(NativeTensorAccess.DataPointer(values), values.numel(), dtype, NativeTensorAccess.DataPointer(got));
            var wb = new ReadOnlySpan<byte>((void*)NativeTensorAccess.DataPointer(want), (int)NativeTensorAccess.ByteLength(want));
            var gb = new ReadOnlySpan<byte>((void*)NativeTensorAccess.DataPointer(got), (int)NativeTensorAccess.ByteLength(got));
            Assert.True(wb.SequenceEqual(gb), $"{dtype}: rounding differs from libtorch");
            // And back: widening is exact.
            using var back = empty(values.shape, ScalarType.Float64);
            CanonicalKernels.ToFloat64(NativeTensorAccess.DataPointer(got), dtype, values.numel(), NativeTensorAccess.DataPointer(back));
            using var wantBack = want.to_type(ScalarType.Float64);
            Assert.True(back.nan_to_num().eq(wantBack.nan_to_num()).all().item<bool>(), $"{dtype}: widening differs");
        }
    }

    [Fact]
    public void RangeWritesLandExactlyWhereTheLayoutSays()
    {
        // Odd sizes so that no tensor starts on a page boundary; some runs are shorter than a page.
        var rng = new Random(3);
        var specs = new List<TensorSpec>();
        foreach (var (name, n) in new[] { ("a", 5L), ("b", 3001L), ("c", 1L), ("d", 9000L), ("e", 777L), ("f", 20000L) })
            specs.Add(new TensorSpec(name, DType.F32, [n]));
        var data = specs.ToDictionary(s => s.Name, s => { var x = new byte[s.ByteLength]; rng.NextBytes(x); return x; });
        string dir = TestCheckpoints.NewTempDir("range-write");
        string reference = Path.Combine(dir, "ref.safetensors");
        using (var w = SafeTensorWriter.Create(reference, specs, null))
        {
            foreach (var s in specs) w.WriteBytes(s.Name, data[s.Name]);
            w.Commit();
        }
        string staged = Path.Combine(dir, "staged.safetensors");
        using (var w = SafeTensorWriter.Create(staged, specs, null))
        using (var staging = new RangeStaging())
        {
            // Two groups, as two layers would be: {b, c, d} (one run) and {a, f} (two runs, a gap between them).
            foreach (var group in new[] { new[] { "b", "c", "d" }, new[] { "a", "f" } })
            {
                staging.Plan(group.Select(n => (n, w)));
                foreach (var n in group)
                {
                    System.Runtime.InteropServices.Marshal.Copy(data[n], 0, staging.Slot(n), data[n].Length);
                    w.Claim(n, DType.F32, [data[n].Length / 4]);
                }
                Assert.Equal(group.Length == 3 ? 1 : 2, staging.Runs.Count);
                staging.WriteAll();
            }
            w.WriteBytes("e", data["e"]);
            w.Commit();
        }
        Assert.Equal(File.ReadAllBytes(reference), File.ReadAllBytes(staged));
    }

    [Fact]
    public unsafe void MappedPointersReadTheStoredBytesAndSurviveRelease()
    {
        string dir = TestCheckpoints.Get("canon-stream-F32-1", Mid, new MakeCheckpointOptions { Seed = 31, DType = DType.F32, MaskBuffers = true, Shards = 1 });
        using var ck = Gpt2Checkpoint.Open(dir);
        var e = ck.Store.Entry(ck.Key(Gpt2Keys.Layer(1, "mlp.c_fc.weight")));
        byte[] want = ck.Store.ReadBytes(e.Name);
        var p = ck.Store.MappedPointer(e);
        Assert.True(new ReadOnlySpan<byte>((void*)p, want.Length).SequenceEqual(want));
        ck.Store.ReleaseMapped(e);
        Assert.True(new ReadOnlySpan<byte>((void*)p, want.Length).SequenceEqual(want), "pages are mapped again after release");
    }

    [Fact]
    public void CompareMatchesMlpUnitsWhoseOrderRoundingFlipped()
    {
        // Two units of layer 0 whose c_fc column norms differ by 1e-7 (far above the 1e-8 tie tolerance): a relative
        // change of 2e-7, like F32 rounding, flips their canonical order. compare must still find the checkpoints equal.
        using var ck = Gpt2Checkpoint.Open(TestCheckpoints.Get("canon-tiny-f64", TestCheckpoints.Tiny, new MakeCheckpointOptions { Seed = 11, DType = DType.F64 }));
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        using (no_grad())
        {
            var fc = m.Layers[0].FcW;
            fc[TensorIndex.Colon, 5] = fc[TensorIndex.Colon, 3] * (1 + 1e-7);
        }
        string a = CanonicalCliTests.Save(m, c, DType.F64, "cmp-near-a");
        using (no_grad()) m.Layers[0].FcW[TensorIndex.Colon, 5].mul_(1 - 2e-7);
        string b = CanonicalCliTests.Save(m, c, DType.F64, "cmp-near-b");
        using var ca = Gpt2Checkpoint.Open(a);
        using var cb = Gpt2Checkpoint.Open(b);
        var r = CanonicalCompare.Compare(ca, cb);
        int posA = Array.IndexOf(r.ReportA.Layers[0].UnitOrder, 3), posB = Array.IndexOf(r.ReportB.Layers[0].UnitOrder, 3);
        output.WriteLine($"unit 3 at canonical position {posA} in A, {posB} in B; MLP distance {r.Layers[0].MlpDistance:E2}");
        Assert.NotEqual(posA, posB);                               // the order really flipped
        Assert.True(r.Layers[0].MlpDistance < 1e-6, $"MLP distance {r.Layers[0].MlpDistance:E2}");
    }

    [Theory]
    [InlineData("attn.c_attn.weight")]
    [InlineData("mlp.c_proj.weight")]
    [InlineData("ln_2.weight")]
    [InlineData("attn.c_proj.weight")]
    public void NonFiniteWeightsAreRefusedByNameAndLeaveNoOutput(string suffix)
    {
        using var ck = Gpt2Checkpoint.Open(TestCheckpoints.Get("canon-tiny-f64", TestCheckpoints.Tiny, new MakeCheckpointOptions { Seed = 11, DType = DType.F64 }));
        var c = ck.Config;
        using var m = TestGauge.Load(ck);
        using (no_grad())
        {
            var t = m.Layers[1].Named().First(p => p.Suffix == suffix).Tensor;
            t.view(-1)[3] = double.NaN;
        }
        string input = CanonicalCliTests.Save(m, c, DType.F32, "canon-nan");
        string parent = TestCheckpoints.NewTempDir("canon-nan-out");
        string outDir = Path.Combine(parent, "out");
        foreach (var form in new[] { "full", "paper" })
        {
            var (rc, _, err) = CliRunner.Run(["canonicalize-checkpoint", input, "--out", outDir, "--form", form]);
            output.WriteLine(err);
            Assert.Equal(2, rc);
            Assert.Contains($"h.1.{suffix}", err);
            Assert.Contains("NaN", err);
            Assert.Empty(Directory.EnumerateFileSystemEntries(parent));   // no output and no temporary directory left
        }
        var (rcCompare, _, errCompare) = CliRunner.Run(["compare", ck.Directory, input]);
        Assert.Equal(2, rcCompare);
        Assert.Contains($"h.1.{suffix}", errCompare);
    }
}
