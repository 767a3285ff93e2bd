using System.Text;
using GaugeTorch.SafeTensors;
using GaugeTorch.Tests.Fixtures;
using TorchSharp;

namespace GaugeTorch.Tests.SafeTensors;

public class SafeTensorsFormatTests
{
    private static string Write(byte[] bytes)
    {
        string path = Path.Combine(TestCheckpoints.NewTempDir("st"), "x.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] Build(string header, int dataBytes, ulong? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var b = new byte[8 + h.Length + dataBytes];
        BitConverter.GetBytes(declaredLength ?? (ulong)h.Length).CopyTo(b, 0);
        h.CopyTo(b, 8);
        return b;
    }

    private static SafeTensorsException Rejects(byte[] bytes, string? tensor, string fragment)
    {
        string path = Write(bytes);
        var e = Assert.Throws<SafeTensorsException>(() => SafeTensorFile.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        if (tensor is not null) Assert.Contains($"'{tensor}'", e.Message);
        Assert.Contains(fragment, e.Message);
        return e;
    }

    [Fact] public void HeaderLengthBeyondFile() => Rejects(Build("{}", 0, 1000), null, "past the end");
    [Fact] public void HeaderAbove100MiB() => Rejects(Build("{}", 0, 200UL * 1024 * 1024), null, "100 MiB");
    [Fact] public void TooShortForLength() => Rejects([1, 2, 3], null, "too short");
    [Fact] public void InvalidJson() => Rejects(Build("{\"a\": [", 0), null, "not valid JSON");
    [Fact] public void HeaderNotObject() => Rejects(Build("[1,2]", 0), null, "not an object");
    [Fact] public void DuplicateNames() => Rejects(Build("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2), "a", "duplicate");
    [Fact] public void UnknownDType() => Rejects(Build("{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), "w", "unknown dtype");
    [Fact] public void OffsetsOutsideData() => Rejects(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8), "w", "outside");
    [Fact] public void OverlappingOffsets() => Rejects(Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "b", "overlap");
    [Fact] public void NonContiguousOffsets() => Rejects(Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12), "b", "gap");
    [Fact] public void ByteLengthDisagreesWithShape() => Rejects(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "w", "disagrees");
    [Fact] public void TrailingBytes() => Rejects(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8), null, "trailing");
    [Fact] public void NegativeShape() => Rejects(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "w", "non-negative");

    [Fact]
    public void RandomMutationsOnlyEverRaiseSafeTensorsException()
    {
        string good = Path.Combine(TestCheckpoints.Get("st-fuzz"), "model.safetensors");
        byte[] original = File.ReadAllBytes(good);
        int headerEnd = 8 + (int)BitConverter.ToUInt64(original, 0);
        var rng = new Random(123);
        int rejected = 0;
        for (int i = 0; i < 300; i++)
        {
            var b = (byte[])original.Clone();
            int flips = rng.Next(1, 6);
            for (int k = 0; k < flips; k++) b[rng.Next(0, Math.Min(b.Length, headerEnd + 16))] = (byte)rng.Next(256);
            if (rng.Next(4) == 0) Array.Resize(ref b, rng.Next(0, b.Length));
            string path = Write(b);
            try
            {
                using var f = SafeTensorFile.Open(path);
                foreach (var e in f.Entries) f.Load(e).Dispose();
            }
            catch (SafeTensorsException)
            {
                rejected++;
            }
            File.Delete(path);
        }
        Assert.True(rejected > 100, $"only {rejected} of 300 mutations were rejected");
    }

    [Fact]
    public void RoundTripIsByteIdenticalDeterministicAndPadded()
    {
        string dir = TestCheckpoints.Get("st-roundtrip", null, new GaugeTorch.Architectures.Gpt2.MakeCheckpointOptions { Seed = 4, MaskBuffers = true });
        string src = Path.Combine(dir, "model.safetensors");
        string root = TestCheckpoints.NewTempDir("rt");
        using var f = SafeTensorFile.Open(src);
        var tensors = f.Entries.Select(e => new KeyValuePair<string, torch.Tensor>(e.Name, f.Load(e))).ToList();
        var meta = f.Metadata.ToDictionary(k => k.Key, k => k.Value);
        SafeTensorWriter.WriteAll(Path.Combine(root, "a.safetensors"), tensors, meta);
        SafeTensorWriter.WriteAll(Path.Combine(root, "b.safetensors"), tensors.AsEnumerable().Reverse().ToList(), meta);
        byte[] a = File.ReadAllBytes(Path.Combine(root, "a.safetensors"));
        Assert.Equal(a, File.ReadAllBytes(Path.Combine(root, "b.safetensors")));
        Assert.Equal(File.ReadAllBytes(src), a); // the maker uses the same writer: reading and writing back changes nothing
        Assert.Equal(0UL, BitConverter.ToUInt64(a, 0) % 8);
        using var g = SafeTensorFile.Open(Path.Combine(root, "a.safetensors"));
        Assert.Equal(f.Entries.Select(e => e.Name).Order(StringComparer.Ordinal), g.Entries.Select(e => e.Name));
        foreach (var e in f.Entries) Assert.Equal(f.ReadBytes(e.Name), g.ReadBytes(e.Name));
        Assert.Equal("pt", g.Metadata["format"]);
        foreach (var t in tensors) t.Value.Dispose();
    }

    [Fact]
    public void WriterIsAtomicAndNeverOverwritesItsInput()
    {
        string root = TestCheckpoints.NewTempDir("atomic");
        string path = Path.Combine(root, "x.safetensors");
        using (var w = SafeTensorWriter.Create(path, [new TensorSpec("a", DType.F32, [2])], null))
        {
            w.Write("a", torch.ones(2));
            // no Commit: disposing must leave nothing behind
        }
        Assert.Empty(Directory.GetFileSystemEntries(root));
        using (var w = SafeTensorWriter.Create(path, [new TensorSpec("a", DType.F32, [2]), new TensorSpec("b", DType.F32, [1])], null))
        {
            w.Write("a", torch.ones(2));
            Assert.Throws<InvalidOperationException>(() => w.Commit()); // b never written
        }
        Assert.Empty(Directory.GetFileSystemEntries(root));
        SafeTensorWriter.WriteAll(path, [new("a", torch.ones(2))], null);
        byte[] before = File.ReadAllBytes(path);
        Assert.Throws<IOException>(() => SafeTensorWriter.WriteAll(path, [new("a", torch.zeros(2))], null, [path]));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public void ShardedIndexIsReadAndCheckedAgainstShards()
    {
        string dir = TestCheckpoints.Get("st-sharded", null, new GaugeTorch.Architectures.Gpt2.MakeCheckpointOptions { Seed = 2, Shards = 3 });
        using (var s = SafeTensorStore.Open(dir))
        {
            Assert.Equal(3, s.Files.Count);
            Assert.True(s.Contains("wte.weight"));
        }
        string copy = TestCheckpoints.NewTempDir("shard-bad");
        foreach (var f in Directory.GetFiles(dir)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        string index = Path.Combine(copy, SafeTensorStore.IndexFileName);
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"wte.weight\"", "\"wte.missing\""));
        var e = Assert.Throws<SafeTensorsException>(() => SafeTensorStore.Open(copy).Dispose());
        Assert.Contains("wte.missing", e.Message);
    }

    [Fact]
    public unsafe void TensorsLargerThan2GiBAreReadThroughTheMap()
    {
        // A sparse file: 2.5 GiB of U8 data that costs no disk, with a marker near the end.
        long n = 5L * 512 * 1024 * 1024;
        string header = $"{{\"big\":{{\"dtype\":\"U8\",\"shape\":[{n}],\"data_offsets\":[0,{n}]}},\"tail\":{{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[{n},{n + 4}]}}}}";
        var h = Encoding.UTF8.GetBytes(header.PadRight((header.Length + 7) / 8 * 8));
        string path = Path.Combine(TestCheckpoints.NewTempDir("big"), "big.safetensors");
        using (var fs = new FileStream(path, FileMode.CreateNew))
        {
            fs.Write(BitConverter.GetBytes((ulong)h.Length));
            fs.Write(h);
            fs.SetLength(8 + h.Length + n + 4);
            fs.Position = 8 + h.Length + n - 3;
            fs.Write([7, 8, 9, 1, 2, 3, 4]);
        }
        try
        {
            using var f = SafeTensorFile.Open(path);
            Assert.Equal(n, f["big"].ByteLength);
            Assert.Equal([1, 2, 3, 4], f.ReadBytes("tail"));
            var last = new byte[3];
            fixed (byte* p = last) f.CopyRange(f["big"], n - 3, 3, (IntPtr)p);
            Assert.Equal([7, 8, 9], last);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
