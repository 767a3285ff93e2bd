using System.Text;
using System.Text.Json;
using GaugeTorch.Architectures.Gpt2;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests.SafeTensors;

/// <summary>Writer properties (deterministic, padded, sorted, metadata, atomic, input-safe) and read → write → read round trips.</summary>
public class RoundTripTests
{
    private static readonly Dictionary<string, string> Meta = new() { ["format"] = "pt", ["b-key"] = "2", ["a-key"] = "1 \"quoted\" ünïcode" };

    /// <summary>One tensor of every supported dtype, with awkward shapes (scalar, empty, odd lengths).</summary>
    private static List<KeyValuePair<string, torch.Tensor>> AllDTypes()
    {
        torch.random.manual_seed(5);
        return
        [
            new("z.f64", torch.randn(3, 5, torch.ScalarType.Float64)),
            new("y.f32", torch.randn(7, torch.ScalarType.Float32)),
            new("x.f16", torch.randn(2, 3, torch.ScalarType.Float32).to(torch.ScalarType.Float16)),
            new("w.bf16", torch.randn(3, 1, torch.ScalarType.Float32).to(torch.ScalarType.BFloat16)),
            new("v.i64", torch.tensor(new long[] { long.MinValue, -1, 0, long.MaxValue })),
            new("u.i32", torch.tensor(new[] { int.MinValue, 7, int.MaxValue })),
            new("t.i16", torch.tensor(new short[] { -3, 300 })),
            new("s.i8", torch.tensor(new sbyte[] { -128, 5, 127 })),
            new("r.u8", torch.tensor(new byte[] { 0, 200, 255 })),
            new("q.bool", torch.tensor(new[] { true, false, true, true })),
            new("p.scalar", torch.tensor(3.25)),
            new("o.empty", torch.zeros(0, 4, torch.ScalarType.Float32)),
            new("B.upper", torch.ones(1, torch.ScalarType.Float32)), // ordinal sort: upper case before lower
            new("h.10.w", torch.ones(1, torch.ScalarType.Float32)),
            new("h.2.w", torch.ones(1, torch.ScalarType.Float32)),
        ];
    }

    private static void Dispose(IEnumerable<KeyValuePair<string, torch.Tensor>> ts)
    {
        foreach (var kv in ts) kv.Value.Dispose();
    }

    private static string NewPath(string name = "a.safetensors") => Path.Combine(TestCheckpoints.NewTempDir("rt"), name);

    [Fact]
    public void ReadWriteReadGivesIdenticalBytesAndTensors()
    {
        var src = AllDTypes();
        try
        {
            string p1 = NewPath("one.safetensors"), p2 = NewPath("two.safetensors");
            SafeTensorWriter.WriteAll(p1, src, Meta);

            List<KeyValuePair<string, torch.Tensor>> read1;
            using (var f1 = SafeTensorFile.Open(p1))
            {
                Assert.Equal(src.Count, f1.Entries.Count);
                Assert.Equal(Meta.OrderBy(k => k.Key), f1.Metadata.OrderBy(k => k.Key));
                foreach (var (name, t) in src)
                {
                    var e = f1[name];
                    Assert.Equal(DTypes.FromScalarType(t.dtype), e.DType);
                    Assert.Equal(t.shape, e.Shape);
                }
                read1 = f1.Entries.Select(e => new KeyValuePair<string, torch.Tensor>(e.Name, f1.Load(e))).ToList();
            }
            try
            {
                foreach (var (name, t) in src)
                {
                    var back = read1.Single(kv => kv.Key == name).Value;
                    Assert.Equal(t.dtype, back.dtype);
                    Assert.True(TensorAssert.Same(t, back), $"{name} changed in the round trip");
                }
                SafeTensorWriter.WriteAll(p2, read1, Meta);
            }
            finally
            {
                Dispose(read1);
            }
            Assert.Equal(File.ReadAllBytes(p1), File.ReadAllBytes(p2));

            using var f1b = SafeTensorFile.Open(p1);
            using var f2 = SafeTensorFile.Open(p2);
            foreach (var e in f1b.Entries) Assert.Equal(f1b.ReadBytes(e.Name), f2.ReadBytes(e.Name));
        }
        finally
        {
            Dispose(src);
        }
    }

    [Fact]
    public unsafe void LargeTensorsAndUnalignedRangesReadBack()
    {
        // 40 MiB of F32 (not a multiple of any page or chunk size), preceded by a small tensor so that its file
        // offset is not page-aligned.
        string p = NewPath("big.safetensors");
        long n = (40L << 20) / 4 + 3;
        using (var big = torch.arange(n, torch.ScalarType.Float32))
        using (var small = torch.ones(5, torch.ScalarType.Float32))
            SafeTensorWriter.WriteAll(p, [new("a.small", small), new("b.big", big)], null);
        using var f = SafeTensorFile.Open(p);
        using var loaded = f.Load("b.big");
        using var expected = torch.arange(n, torch.ScalarType.Float32);
        Assert.True(TensorAssert.Same(expected, loaded));
        // Sub-ranges agree with the file's bytes.
        var fileBytes = File.ReadAllBytes(p);
        long begin = f["b.big"].Begin;
        var viaRange = new byte[(33L << 20) + 5];
        fixed (byte* b = viaRange) f.CopyRaw(f["b.big"], 7, viaRange.Length, (IntPtr)b);
        Assert.True(viaRange.AsSpan().SequenceEqual(fileBytes.AsSpan((int)begin + 7, viaRange.Length)));
        Assert.Equal(fileBytes[(int)(begin + 100)..(int)(begin + 164)], f.ReadBytes(f["b.big"], 100, 64));
    }

    [Fact]
    public void RawBytesSurviveTheRoundTripIncludingNaNPayloads()
    {
        // Floating-point bit patterns that a careless conversion would normalize: signalling/quiet NaNs with payloads,
        // negative zero, subnormals. The reader and writer must move bytes, not values.
        var f32 = new uint[] { 0x7FC00001, 0x7F800001, 0xFFC12345, 0x80000000, 0x00000001, 0x7F7FFFFF };
        var f16 = new ushort[] { 0x7E01, 0x7C01, 0x8000, 0x0001, 0xFBFF };
        var bf16 = new ushort[] { 0x7FC1, 0x7F81, 0x8000, 0x0001, 0xFF7F };
        var b32 = f32.SelectMany(BitConverter.GetBytes).ToArray();
        var b16 = f16.SelectMany(BitConverter.GetBytes).ToArray();
        var bb16 = bf16.SelectMany(BitConverter.GetBytes).ToArray();
        string p1 = NewPath("raw1.safetensors"), p2 = NewPath("raw2.safetensors");
        using (var w = SafeTensorWriter.Create(p1, [new("a", DType.F32, [6]), new("b", DType.F16, [5]), new("c", DType.BF16, [5])], null))
        {
            w.WriteBytes("c", bb16);
            w.WriteBytes("a", b32);
            w.WriteBytes("b", b16);
            w.Commit();
        }
        using (var f = SafeTensorFile.Open(p1))
        {
            Assert.Equal(b32, f.ReadBytes("a"));
            Assert.Equal(b16, f.ReadBytes("b"));
            Assert.Equal(bb16, f.ReadBytes("c"));
            // Through torch tensors (Load + Write) too.
            var loaded = f.Entries.Select(e => new KeyValuePair<string, torch.Tensor>(e.Name, f.Load(e))).ToList();
            try
            {
                SafeTensorWriter.WriteAll(p2, loaded, null);
            }
            finally
            {
                Dispose(loaded);
            }
        }
        Assert.Equal(File.ReadAllBytes(p1), File.ReadAllBytes(p2));
    }

    [Fact]
    public void CheckpointMakerOutputRoundTripsByteForByte()
    {
        foreach (var dtype in new[] { DType.F32, DType.BF16 })
        {
            string dir = TestCheckpoints.Get("rt-" + dtype, options: new MakeCheckpointOptions { Seed = 3, DType = dtype, MaskBuffers = true });
            string src = Path.Combine(dir, SafeTensorStore.SingleFileName);
            string dst = NewPath();
            using (var store = SafeTensorStore.Open(dir))
            {
                var all = store.Entries.Select(e => new KeyValuePair<string, torch.Tensor>(e.Name, store.Load(e.Name))).ToList();
                try
                {
                    SafeTensorWriter.WriteAll(dst, all, store.Metadata, store.SourcePaths);
                }
                finally
                {
                    Dispose(all);
                }
            }
            Assert.Equal(File.ReadAllBytes(src), File.ReadAllBytes(dst));
        }
    }

    [Fact]
    public void WriterIsDeterministicWhateverTheOrderOfSpecsAndWrites()
    {
        var src = AllDTypes();
        try
        {
            string p1 = NewPath("d1.safetensors"), p2 = NewPath("d2.safetensors");
            SafeTensorWriter.WriteAll(p1, src, Meta);
            var shuffled = src.OrderBy(kv => kv.Key.GetHashCode() ^ 0x5a5a).ToList();
            var meta2 = Meta.Reverse().ToDictionary(kv => kv.Key, kv => kv.Value);
            using (var w = SafeTensorWriter.Create(p2, shuffled.AsEnumerable().Reverse().Select(kv => new TensorSpec(kv.Key, DTypes.FromScalarType(kv.Value.dtype), kv.Value.shape)), meta2))
            {
                foreach (var (name, t) in shuffled) w.Write(name, t);
                w.Commit();
            }
            Assert.Equal(File.ReadAllBytes(p1), File.ReadAllBytes(p2));
            // And again into the same place, over the previous output: same bytes.
            SafeTensorWriter.WriteAll(p2, shuffled, meta2);
            Assert.Equal(File.ReadAllBytes(p1), File.ReadAllBytes(p2));
        }
        finally
        {
            Dispose(src);
        }
    }

    [Fact]
    public void HeaderIsPaddedSortedAndCarriesMetadata()
    {
        var src = AllDTypes();
        try
        {
            // Try many metadata lengths so that every padding amount 0..7 occurs.
            var pads = new HashSet<int>();
            for (int extra = 0; extra < 16; extra++)
            {
                string p = NewPath($"h{extra}.safetensors");
                var meta = new Dictionary<string, string>(Meta) { ["pad"] = new string('x', extra) };
                SafeTensorWriter.WriteAll(p, src, meta);
                var bytes = File.ReadAllBytes(p);
                long n = (long)BitConverter.ToUInt64(bytes, 0);
                Assert.Equal(0, n % 8);
                var header = bytes.AsSpan(8, (int)n).ToArray();
                int jsonEnd = Array.LastIndexOf(header, (byte)'}') + 1;
                Assert.All(header[jsonEnd..], b => Assert.Equal((byte)' ', b));
                Assert.True(header.Length - jsonEnd < 8);
                pads.Add(header.Length - jsonEnd);

                using var doc = JsonDocument.Parse(header);
                var names = doc.RootElement.EnumerateObject().Select(pr => pr.Name).ToList();
                Assert.Equal("__metadata__", names[0]);
                var tensorNames = names.Skip(1).ToList();
                Assert.Equal(tensorNames.OrderBy(s => s, StringComparer.Ordinal), tensorNames);
                Assert.Equal(src.Select(kv => kv.Key).OrderBy(s => s, StringComparer.Ordinal), tensorNames);
                var metaKeys = doc.RootElement.GetProperty("__metadata__").EnumerateObject().Select(pr => pr.Name).ToList();
                Assert.Equal(metaKeys.OrderBy(s => s, StringComparer.Ordinal), metaKeys);
                Assert.Equal(meta["a-key"], doc.RootElement.GetProperty("__metadata__").GetProperty("a-key").GetString());

                // Data is laid out in name order, contiguously from 0.
                long cursor = 0;
                foreach (var name in tensorNames)
                {
                    var off = doc.RootElement.GetProperty(name).GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()).ToArray();
                    Assert.Equal(cursor, off[0]);
                    cursor = off[1];
                }
                Assert.Equal(bytes.Length - 8 - n, cursor);
                File.Delete(p);
            }
            Assert.Equal(8, pads.Count);
        }
        finally
        {
            Dispose(src);
        }
    }

    [Fact]
    public void NoMetadataMeansNoMetadataEntry()
    {
        string p = NewPath();
        using (var t = torch.ones(2))
            SafeTensorWriter.WriteAll(p, [new("a", t)], null);
        var bytes = File.ReadAllBytes(p);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)BitConverter.ToUInt64(bytes, 0));
        Assert.DoesNotContain("__metadata__", header);
        using var f = SafeTensorFile.Open(p);
        Assert.Empty(f.Metadata);
    }

    private static string[] Leftovers(string dir) => Directory.GetFiles(dir).Select(Path.GetFileName).ToArray()!;

    [Fact]
    public void DisposeWithoutCommitLeavesNothing()
    {
        string p = NewPath();
        string dir = Path.GetDirectoryName(p)!;
        using (var t = torch.ones(3))
        using (var w = SafeTensorWriter.Create(p, [new("a", DType.F32, [3]), new("b", DType.F32, [3])], Meta))
        {
            w.Write("a", t);
            Assert.Single(Leftovers(dir)); // the temp file exists while writing ...
            Assert.False(File.Exists(p)); // ... but never under the target name
        }
        Assert.Empty(Leftovers(dir));
    }

    [Fact]
    public void FailedCommitLeavesNothingAndKeepsAnExistingTarget()
    {
        string p = NewPath();
        string dir = Path.GetDirectoryName(p)!;
        File.WriteAllText(p, "previous content");
        using (var t = torch.ones(3))
        using (var w = SafeTensorWriter.Create(p, [new("a", DType.F32, [3]), new("b", DType.F32, [3])], null))
        {
            w.Write("a", t);
            var ex = Assert.Throws<InvalidOperationException>(() => w.Commit());
            Assert.Contains("never written: b", ex.Message);
            Assert.Throws<ArgumentException>(() => w.Write("a", t)); // twice
            Assert.Throws<ArgumentException>(() => w.Write("nope", t)); // undeclared
            using var wrong = torch.ones(4);
            Assert.Throws<ArgumentException>(() => w.Write("b", wrong)); // wrong shape
            Assert.Throws<ArgumentException>(() => w.WriteBytes("b", new byte[5])); // wrong length
        }
        Assert.Equal(["a.safetensors"], Leftovers(dir));
        Assert.Equal("previous content", File.ReadAllText(p));
    }

    [Fact]
    public void InvalidSpecsCreateNoFile()
    {
        string p = NewPath();
        string dir = Path.GetDirectoryName(p)!;
        Assert.Throws<ArgumentException>(() => SafeTensorWriter.Create(p, [new("a", DType.F32, [1]), new("a", DType.F32, [1])], null));
        Assert.Throws<ArgumentException>(() => SafeTensorWriter.Create(p, [new("__metadata__", DType.F32, [1])], null));
        Assert.Empty(Leftovers(dir));
    }

    [Fact]
    public void RefusesToWriteOverItsInput()
    {
        string dir = TestCheckpoints.NewTempDir("rt-input");
        string input = Path.Combine(dir, "in.safetensors");
        using (var t = torch.arange(4, torch.ScalarType.Float32))
            SafeTensorWriter.WriteAll(input, [new("a", t)], Meta);
        var before = File.ReadAllBytes(input);
        string link = Path.Combine(dir, "link.safetensors");
        File.CreateSymbolicLink(link, input);

        using (var store = SafeTensorStore.Open(input))
        {
            using var a = store.Load("a");
            foreach (var target in new[] { input, Path.Combine(dir, ".", "in.safetensors"), link })
            {
                var ex = Assert.Throws<IOException>(() => SafeTensorWriter.WriteAll(target, [new("a", a)], store.Metadata, store.SourcePaths));
                Assert.Contains("input", ex.Message);
            }
        }
        Assert.Equal(before, File.ReadAllBytes(input));
        Assert.Equal(["in.safetensors", "link.safetensors"], Leftovers(dir).Order());
    }

    [Fact]
    public void WriterConvertsToTheDeclaredDtype()
    {
        string p = NewPath();
        using (var t = torch.tensor(new[] { 1.5, -2.25, 1e-3 }))
        using (var w = SafeTensorWriter.Create(p, [new("h", DType.F16, [3]), new("f", DType.F32, [3])], null))
        {
            w.Write("h", t);
            w.Write("f", t);
            w.Commit();
        }
        using var f = SafeTensorFile.Open(p);
        using var h = f.Load("h");
        using var s = f.Load("f");
        using var expectH = torch.tensor(new[] { 1.5, -2.25, 1e-3 }).to(torch.ScalarType.Float16);
        Assert.Equal(torch.ScalarType.Float16, h.dtype);
        Assert.True(TensorAssert.Same(h, expectH));
        Assert.Equal(new[] { 1.5f, -2.25f, 1e-3f }, s.data<float>().ToArray());
    }
}
